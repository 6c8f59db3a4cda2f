"""Progress of a bake, across worker processes: events in a folder, a reporter that reads them.

Workers append one JSON line per event (an input read, a write task done) to a
file of their own in a progress folder; the process that started the bake
reads those files and shows a bar on a terminal, or a log line every few
seconds otherwise, and a summary at the end. Appends of short lines to a
process's own file need no locking, and nothing here touches the store.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)


def record_event(progress_dir: str | None, kind: str, **fields: Any) -> None:
    """Append an event to this process's file in ``progress_dir`` (no-op without one)."""
    if not progress_dir:
        return
    line = json.dumps({"kind": kind, "time": time.time(), **fields}) + "\n"
    try:
        with open(os.path.join(progress_dir, f"events-{os.getpid()}.jsonl"), "a") as out:
            out.write(line)
    except OSError:  # progress must never fail a bake
        logger.debug("could not record progress in %s", progress_dir, exc_info=True)


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
        self.progress_dir = Path(progress_dir)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.log_every = log_every
        self.progress = BakeProgress()
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_log = 0.0

    def poll(self) -> BakeProgress:
        """Read events written since the last poll."""
        for path in sorted(self.progress_dir.glob("events-*.jsonl")):
            offset = self._offsets.get(path, 0)
            with open(path) as events:
                events.seek(offset)
                chunk = events.read()
            complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits
            self._offsets[path] = offset + len(complete)
            for line in complete.splitlines():
                if line.strip():
                    self.progress.apply(json.loads(line))
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
        self._thread = threading.Thread(target=self._run, name="arcoforge-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        if self.progress.tasks_total:
            self._render(final=True)
