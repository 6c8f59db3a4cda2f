"""What a bake tells its caller while it runs: events, one JSON object per line for bots, or lines for people.

``arcoforge bake --json`` prints every event (``bake_start``, ``recipe_start``,
``progress``, ``store_written``, ``stac_written``, ``recipe_done``, ``dry_run``,
then the command's ``result``); without ``--json`` only the lines a person reads
are printed. The bake service (:mod:`arcoforge.bake`) emits them; the command
chooses the stream.
"""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any, TextIO


class Events:
    """How a bake reports what happens: one JSON object per line (``--json``), or lines for people.

    Every event goes to the JSON stream when there is one; for people, only the
    lines a user reads (stores and STAC collections written) are printed.
    """

    def __init__(self, json_stream: TextIO | None = None):
        self.json_stream = json_stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        if self.json_stream is not None:
            line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
            with self._lock:
                self.json_stream.write(line + "\n")
                self.json_stream.flush()
        elif event == "stac_written":
            print(f"wrote STAC collection {fields['path']}")
        elif event == "dry_run":
            print(f"dry run: {fields['detail']}")


class JsonProgress:
    """Follows a progress folder like :class:`~arcoforge.runtime.progress.ProgressReporter`, emitting JSON events."""

    def __init__(self, progress_dir: str, events: Events, recipe_id: str, interval: float = 0.5):
        from .progress import ProgressReporter

        events_ref, last = events, [None]

        class Reporter(ProgressReporter):
            def _render(self, final: bool = False) -> None:
                p = self.progress
                state = (p.inputs_read, p.tasks_done, p.tasks_total, p.bytes_written)
                if state == last[0] and not final:
                    return
                last[0] = state
                events_ref.emit("progress", recipe_id=recipe_id, inputs_read=p.inputs_read,
                                inputs_total=p.inputs_total, tasks_done=p.tasks_done, tasks_total=p.tasks_total,
                                bytes_written=p.bytes_written, bytes_total=p.bytes_total,
                                seconds=round(p.elapsed(), 3), final=final)

        self.reporter = Reporter(progress_dir, stream=io.StringIO(), interval=interval)

    def __enter__(self):
        return self.reporter.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        self.reporter.__exit__(*exc_info)
