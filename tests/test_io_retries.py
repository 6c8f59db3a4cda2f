"""The retry loop on tenacity keeps our rules: how many tries, the total deadline, permanent errors tried once.

Also the one data-signature check that the download and the opener share.
"""

from __future__ import annotations

import errno
import io
import logging
import time

import pytest

from arcoforge.io import DeadlineExceeded, NotDataError, RetryPolicy, call_with_retries, check_data_signature
from arcoforge.io.signatures import check_file_signature


def _always(error: BaseException, calls: list[float]):
    def function():
        calls.append(time.monotonic())
        raise error
    return function


def test_a_transient_failure_is_tried_exactly_attempts_times_and_says_so(caplog):
    calls: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
    with caplog.at_level(logging.INFO, logger="arcoforge.io.retries"):
        with pytest.raises(ConnectionResetError) as failure:
            call_with_retries(_always(ConnectionResetError(errno.ECONNRESET, "reset"), calls), policy, "reading x")
    assert len(calls) == 3 and failure.value.attempts == 3
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split("; ")[0] for m in messages] == [f"reading x failed (ConnectionResetError: [Errno {errno.ECONNRESET}] "
                                                    f"reset), try {n} of 3" for n in (1, 2)]


def test_a_permanent_failure_is_tried_once():
    calls: list[float] = []
    with pytest.raises(PermissionError) as failure:
        call_with_retries(_always(PermissionError("denied"), calls), RetryPolicy(attempts=5, base_delay=0.001), "x")
    assert len(calls) == 1 and failure.value.attempts == 1


def test_retries_stop_at_the_total_deadline():
    calls: list[float] = []

    def slow_and_failing():
        calls.append(time.monotonic())
        time.sleep(0.1)
        raise TimeoutError("slow")

    started = time.monotonic()
    with pytest.raises(TimeoutError) as failure:
        call_with_retries(slow_and_failing, RetryPolicy(attempts=50, base_delay=0.05, max_delay=0.05, deadline=0.5),
                          "x")
    assert time.monotonic() - started < 0.9
    # The last try may be abandoned at the deadline before its function has even started.
    assert 2 <= len(calls) <= failure.value.attempts <= len(calls) + 1 < 50


def test_a_hanging_try_is_abandoned_at_the_deadline_and_not_retried():
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline of 0.3 s for x") as failure:
        call_with_retries(lambda: time.sleep(3), RetryPolicy(attempts=5, base_delay=0.001, deadline=0.3), "x")
    assert time.monotonic() - started < 1.5 and failure.value.attempts == 1


def test_a_success_after_failures_returns_its_value():
    calls: list[int] = []

    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        return "ok"

    assert call_with_retries(flaky, RetryPolicy(attempts=2, base_delay=0.001), "x") == "ok" and len(calls) == 2


GRIB = b"GRIB\x00\x00\x10\x02" + bytes(56)
HTML = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"


def test_one_signature_rule_for_the_download_and_the_opener():
    # The download knows no file type: a GRIB body passes; an opener that may pick any engine agrees.
    check_data_signature(GRIB, "https://h/a.grib", 0)
    check_file_signature(io.BytesIO(GRIB), "https://h/a.grib", 0, "unknown")
    # An engine that reads only NetCDF/HDF5 refuses it before opening.
    with pytest.raises(NotDataError, match=r"a.grib \(pattern index 0\) is not a NetCDF or HDF5 file"):
        check_file_signature(io.BytesIO(GRIB), "https://h/a.grib", 0, "netcdf4")
    # An HTML page is refused by all.
    for file_type in (None, "unknown", "netcdf4"):
        with pytest.raises(NotDataError, match="an HTML page"):
            check_data_signature(HTML, "https://h/a.nc", 1, file_type)
    body = io.BytesIO(b"CDF\x01" + bytes(60))
    check_file_signature(body, "https://h/a.nc", 2, "netcdf3")
    assert body.tell() == 0
