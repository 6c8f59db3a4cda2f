"""A guard for a race in Beam's local runner that silently drops elements between stages.

What was lost: at 50,000 one-step inputs on 2 local workers a write task
received 46,819 of its 50,000 pieces (issue 16). Every schema arrived (read in
the stage that opens the inputs), but a whole block of opened datasets never
reached the stage that cuts them into pieces.

Why: the FnApiRunner sends each stage's input to a worker through an output
stream of Beam's data plane (``apache_beam.runners.worker.data_plane``). Its
gRPC server makes those streams *time-based* (flushed every
``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS``, 1 s, by a background thread).
That flush takes the buffered bytes, hands them to the send queue (which blocks
while the queue is full) and then clears the buffer; the runner thread keeps
writing blocks into the same buffer meanwhile without any lock. Every block
written while the flush was handing over its bytes is cleared unsent. Blocks
are whole runs of encoded elements, so the worker decodes what it gets without
error and the elements are simply gone. It takes a send that lasts longer than
the flush period, so it showed up with large inputs (tens of MB of pickled
datasets per bundle) on a loaded machine; with a 1 ms period it happens within
seconds (``tests/test_scale.py``).

The guard makes writes and the periodic flush mutually exclusive (the flush
already holds the stream's ``_flush_lock``), so a block is either in what the
flush sent or in what the stream sends later. It is applied by
:func:`~arcoforge.runtime.runners.local_runner`, once per process, and checked
against the Beam version's classes so that a Beam without that class or lock
fails loudly rather than running unguarded.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

_GUARD = "_arcoforge_write_guarded"
_APPLYING = threading.Lock()


def _stream_class() -> Any:
    from apache_beam.runners.worker import data_plane

    return data_plane.TimeBasedBufferingClosableOutputStream


def guard_runner_data_plane() -> None:
    """Make Beam's time-based data-plane streams take their flush lock on every write (idempotent)."""
    cls = _stream_class()
    with _APPLYING:
        if getattr(cls, _GUARD, False):
            return
        unguarded = cls.write

        @functools.wraps(unguarded)
        def write(self: Any, data: bytes, nested: bool = False) -> None:
            lock = getattr(self, "_flush_lock", None)
            if lock is None:
                raise RuntimeError("Beam's data-plane stream has no _flush_lock: arcoforge's guard against its "
                                   "flush race (see arcoforge.runtime.data_plane) needs updating")
            with lock:
                unguarded(self, data, nested)

        cls.write = write
        setattr(cls, _GUARD, True)
        logger.debug("guarded %s.write against its periodic flush", cls.__name__)


def runner_data_plane_guarded() -> bool:
    """Whether :func:`guard_runner_data_plane` is in effect in this process."""
    return bool(getattr(_stream_class(), _GUARD, False))
