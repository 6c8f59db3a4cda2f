"""Progress of a bake, across worker processes: events in a folder, a reporter that reads them.

Workers append one JSON line per event (an input read, a write task done) to a
file of their own in a progress folder; the process that started the bake
reads those files and shows a bar on a terminal, or a log line every few
seconds otherwise, and a summary at the end. Appends of short lines to a
process's own file need no locking, and nothing here touches the store.

Workers of a dask cluster may be on other machines: there the "folder" is a
``dask+tcp://scheduler:port/topic`` address (:func:`dask_progress_address`),
workers log events to that topic of the scheduler, and the reporter subscribes
to it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)


DASK_SCHEME = "dask+"


def dask_progress_address(scheduler: str) -> str:
    """A progress "folder" on a dask cluster: a new event topic of the scheduler at ``scheduler``.

    >>> dask_progress_address("tcp://127.0.0.1:8786").startswith("dask+tcp://127.0.0.1:8786/arcoforge-progress-")
    True
    """
    return f"{DASK_SCHEME}{scheduler.rstrip('/')}/arcoforge-progress-{uuid.uuid4().hex}"


def _dask_topic(progress_dir: str) -> tuple[str, str]:
    """``(scheduler address, topic)`` of a :func:`dask_progress_address`."""
    address, _, topic = progress_dir[len(DASK_SCHEME):].rpartition("/")
    return address, topic


def record_event(progress_dir: str | None, kind: str, **fields: Any) -> None:
    """Append an event to this process's file in ``progress_dir`` (no-op without one).

    With a :func:`dask_progress_address`, the event goes to the scheduler's topic
    instead (dropped outside a dask worker).
    """
    if not progress_dir:
        return
    event = {"kind": kind, "time": time.time(), **fields}
    if progress_dir.startswith(DASK_SCHEME):
        _log_on_dask(progress_dir, event)
        return
    line = json.dumps(event) + "\n"
    try:
        with open(os.path.join(progress_dir, f"events-{os.getpid()}.jsonl"), "a") as out:
            out.write(line)
    except OSError:  # progress must never fail a bake
        logger.debug("could not record progress in %s", progress_dir, exc_info=True)


# Events waiting to go to a dask scheduler, per topic, in this worker process. Handing each
# event to the worker's event loop on its own took a fifth of a worker's time in a bake of
# tiny inputs (a thread-safe callback per event), so they go in batches.
_DASK_BATCH = 256
_DASK_BATCH_SECONDS = 1.0
_dask_pending: dict[str, list[dict[str, Any]]] = {}
_dask_sent = [0.0]
_dask_lock = threading.Lock()


def _log_on_dask(progress_dir: str, event: dict[str, Any]) -> None:
    topic = _dask_topic(progress_dir)[1]
    with _dask_lock:
        _dask_pending.setdefault(topic, []).append(event)
        due = len(_dask_pending[topic]) >= _DASK_BATCH or time.monotonic() - _dask_sent[0] >= _DASK_BATCH_SECONDS
    if due:
        flush_dask_events()


def flush_dask_events() -> None:
    """Send this worker's waiting progress events to the scheduler (the Dask runner calls it after each task)."""
    with _dask_lock:
        batches = [(topic, events) for topic, events in _dask_pending.items() if events]
        _dask_pending.clear()
        _dask_sent[0] = time.monotonic()
    if not batches:
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not in a dask worker: nobody follows these topics from here
        logger.debug("no dask worker to record progress on")
        return
    for topic, events in batches:
        worker.log_event(topic, {"events": events})


class _FolderEvents:
    """Events appended to a progress folder's files, read from where the last read stopped."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._offsets: dict[Path, int] = {}

    def start(self) -> None:
        pass

    def read(self) -> list[dict[str, Any]]:
        events = []
        for path in sorted(self.folder.glob("events-*.jsonl")):
            offset = self._offsets.get(path, 0)
            with open(path) as lines:
                lines.seek(offset)
                chunk = lines.read()
            complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits
            self._offsets[path] = offset + len(complete)
            events.extend(json.loads(line) for line in complete.splitlines() if line.strip())
        return events

    def stop(self) -> None:
        pass


class _DaskTopicEvents:
    """Events that dask workers log to a scheduler topic, received by subscribing to it.

    ``start`` and ``stop`` each send a marker through the topic and wait for it to
    come back: the subscription is in place before the bake runs, and every event the
    scheduler had before the bake ended has arrived when ``stop`` returns.
    """

    def __init__(self, progress_dir: str, timeout: float = 30.0):
        self.address, self.topic = _dask_topic(progress_dir)
        self.timeout = timeout
        self._received: list[dict[str, Any]] = []
        self._markers: set[str] = set()
        self._lock = threading.Lock()
        self._client: Any = None

    def _receive(self, event: tuple[float, Any]) -> None:
        message = event[1]
        with self._lock:
            if isinstance(message, dict) and "marker" in message:
                self._markers.add(message["marker"])
            elif isinstance(message, dict) and "events" in message:
                self._received.extend(message["events"])

    def _round_trip(self) -> None:
        # The marker goes by RPC and the subscription by the client's batched stream, so the
        # first marker can reach the scheduler before the subscription does: send it again.
        marker = uuid.uuid4().hex
        deadline = time.monotonic() + self.timeout
        while marker not in self._markers and time.monotonic() < deadline:
            self._client.log_event(self.topic, {"marker": marker})
            resend = time.monotonic() + 0.2
            while marker not in self._markers and time.monotonic() < resend:
                time.sleep(0.005)
        if marker not in self._markers:
            logger.warning("progress from the dask workers may be incomplete: no answer from %s", self.address)

    def start(self) -> None:
        from distributed import Client

        self._client = Client(self.address, timeout=self.timeout, set_as_default=False)
        self._client.subscribe_topic(self.topic, self._receive)
        self._round_trip()

    def read(self) -> list[dict[str, Any]]:
        with self._lock:
            events, self._received = self._received, []
        return events

    def stop(self) -> None:
        if self._client is not None:
            self._round_trip()
            self._client.close()
            self._client = None


@dataclass
class BakeProgress:
    """Totals read from a progress folder so far."""

    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs_read: int = 0
    tasks_done: int = 0
    bytes_written: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def inputs_total(self) -> int:
        return sum(s.get("n_inputs", 0) for s in self.stores.values())

    @property
    def tasks_total(self) -> int:
        return sum(s.get("n_tasks", 0) for s in self.stores.values())

    @property
    def bytes_total(self) -> int:
        return sum(s.get("nbytes", 0) for s in self.stores.values())

    def elapsed(self) -> float:
        return max(time.time() - self.started, 1e-9)

    def rate(self) -> float:
        """Bytes written per second so far."""
        return self.bytes_written / self.elapsed()

    def eta(self) -> float | None:
        rate = self.rate()
        if not self.bytes_total or rate <= 0:
            return None
        return max(self.bytes_total - self.bytes_written, 0) / rate

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "plan":
            self.stores[event["store"]] = event
        elif kind == "input":
            self.inputs_read += 1
        elif kind == "skipped":
            self.skipped.append({k: event.get(k) for k in ("index", "url", "error", "stage")})
        elif kind == "task":
            self.tasks_done += 1
            self.bytes_written += int(event.get("nbytes", 0))

    def line(self) -> str:
        mib = 2**20
        eta = self.eta()
        parts = [
            f"inputs {self.inputs_read}/{self.inputs_total or '?'}",
            f"tasks {self.tasks_done}/{self.tasks_total or '?'}",
            f"{self.bytes_written / mib:,.0f}/{self.bytes_total / mib:,.0f} MiB",
            f"{self.rate() / mib:,.1f} MiB/s",
        ]
        if eta is not None and self.tasks_done < self.tasks_total:
            parts.append(f"ETA {eta:,.0f} s")
        return "  ".join(parts)

    def summary(self) -> dict[str, Any]:
        return {
            "stores": sorted(self.stores),
            "inputs": self.inputs_read,
            "write_tasks": self.tasks_done,
            "bytes_written": self.bytes_written,
            "seconds": round(self.elapsed(), 3),
            "mib_per_second": round(self.rate() / 2**20, 2),
            "skipped": list(self.skipped),
        }


class ProgressReporter:
    """Follows a progress folder from a background thread and reports what it sees."""

    def __init__(self, progress_dir: str | os.PathLike, stream: TextIO | None = None,
                 interval: float = 0.5, log_every: float = 10.0):
        self.progress_dir = progress_dir
        self._events = (_DaskTopicEvents(progress_dir) if str(progress_dir).startswith(DASK_SCHEME)
                        else _FolderEvents(progress_dir))
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.log_every = log_every
        self.progress = BakeProgress()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_log = 0.0

    def poll(self) -> BakeProgress:
        """Apply the events recorded since the last poll."""
        for event in self._events.read():
            self.progress.apply(event)
        return self.progress

    def _render(self, final: bool = False) -> None:
        line = self.progress.line()
        if self._is_tty:
            width = 28
            done = self.progress.tasks_done / self.progress.tasks_total if self.progress.tasks_total else 0.0
            bar = "#" * int(width * done) + "." * (width - int(width * done))
            self.stream.write(f"\r[{bar}] {line}\033[K" + ("\n" if final else ""))
            self.stream.flush()
        elif final or time.time() - self._last_log >= self.log_every:
            self._last_log = time.time()
            logger.info("progress: %s", line)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
            self._render()

    def __enter__(self) -> "ProgressReporter":
        self._last_log = time.time()
        self._events.start()
        self._thread = threading.Thread(target=self._run, name="arcoforge-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._events.stop()
        self.poll()
        if self.progress.tasks_total:
            self._render(final=True)
