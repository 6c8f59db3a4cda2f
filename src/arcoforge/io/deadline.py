"""A total deadline on one input read, so that a server that stops answering fails the input in bounded time.

A socket timeout alone does not bound a read: fsspec asks for a file's size
(``HEAD``) and then its body, each waiting up to the read timeout, and every
retry waits again (5 tries of two 60 s waits: about 10 minutes for one input).
:func:`call_within` runs one try in a helper thread and stops waiting for it
when the deadline passes; the retry loop (:func:`arcoforge.io.retries.call_with_retries`)
neither starts a try nor sleeps past it. A try abandoned this way finishes, or
times out, in the background; its result is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_DEADLINE = 120.0


class DeadlineExceeded(TimeoutError):
    """An input read (all its tries) took longer than its deadline."""


@dataclass
class Deadline:
    """A point in time ``seconds`` from creation (``None``: never)."""

    seconds: float | None
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.monotonic() - self.started)

    def exceeded(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"no answer within the deadline of {self.seconds:g} s for {what}")


def call_within(function: Callable[[], T], deadline: Deadline, what: str = "the read") -> T:
    """``function()``, or :class:`DeadlineExceeded` once ``deadline`` has passed (the call is abandoned)."""
    remaining = deadline.remaining()
    if remaining == float("inf"):
        return function()
    if remaining <= 0:
        raise deadline.exceeded(what)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=run, name="arcoforge-read", daemon=True)
    thread.start()
    thread.join(remaining)
    if thread.is_alive():
        raise deadline.exceeded(what)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
