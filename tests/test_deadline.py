"""A server that stops answering fails an input in bounded time: the read's total deadline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from arcoforge.io.deadline import Deadline, DeadlineExceeded, call_within
from arcoforge.errors import InputError
from arcoforge.io import InputCache, RemoteInput, RetryPolicy


def test_call_within_abandons_a_call_at_its_deadline():
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline of 0.2 s for the nap"):
        call_within(lambda: time.sleep(5), Deadline(0.2), "the nap")
    assert time.monotonic() - started < 1.0
    assert call_within(lambda: 7, Deadline(0.2)) == 7
    with pytest.raises(ZeroDivisionError):
        call_within(lambda: 1 / 0, Deadline(1.0))


def test_a_stalled_server_fails_an_input_within_its_deadline(file_server, daily_archive, tmp_path):
    file_server.files["d0.nc"] = Path(daily_archive[0]).read_bytes()
    file_server.stall_seconds = 20  # each request; the client's socket timeout (60 s) never fires first
    for method in ("HEAD", "GET"):
        file_server.fail("d0.nc", *["stall"] * 10, method=method)
    url = file_server.url("d0.nc") + "?pwd=ab1"
    source = RemoteInput(url=url, name=file_server.url("d0.nc"), options={"timeout": 60},
                         cache=InputCache(str(tmp_path / "cache")),
                         retry=RetryPolicy(attempts=5, base_delay=0.01, deadline=3.0), index=0)
    started = time.monotonic()
    with pytest.raises(InputError, match=r"d0.nc \(pattern index 0\) could not be read: DeadlineExceeded: no answer "
                                         r"within the deadline of 3 s .*\(gave up after 1 tries\)") as failure:
        source.fetch()
    elapsed = time.monotonic() - started
    assert 3.0 <= elapsed < 4.5, elapsed
    assert "ab1" not in str(failure.value)
