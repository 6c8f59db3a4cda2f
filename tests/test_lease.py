"""Leases that expire by themselves, and that two racing bakes can never both win (locally and on S3)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from arcoforge.io.lease import LeaseError, LeaseKeeper, staleness
from arcoforge.io.state import StoreState

UTC = dt.timezone.utc


def race(state: StoreState, contenders: int, rounds: int) -> list[list[str]]:
    """Each round, ``contenders`` threads released together try to take a free lease; the winners of each."""
    outcomes = []
    for round_ in range(rounds):
        barrier = threading.Barrier(contenders)
        winners: list[str] = []

        def take(owner: str) -> None:
            barrier.wait()
            try:
                state.acquire_lease(owner, 60)
                winners.append(owner)
            except LeaseError:
                pass

        threads = [threading.Thread(target=take, args=(f"bake-{round_}-{i}",)) for i in range(contenders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes.append(winners)
        assert state.read_json("lease.json")["owner"] == winners[0]
        state.release_lease(winners[0])
    return outcomes


def test_racing_bakes_on_s3_never_both_win(s3):
    options, bucket = s3
    state = StoreState(f"s3://{bucket}/out/x.zarr", options)
    assert type(state.lease().backend).__name__ == "S3LeaseObject"
    outcomes = race(state, contenders=6, rounds=15)
    assert [len(winners) for winners in outcomes] == [1] * 15


def test_racing_bakes_on_a_local_disk_never_both_win(tmp_path):
    outcomes = race(StoreState(str(tmp_path / "x.zarr")), contenders=6, rounds=15)
    assert [len(winners) for winners in outcomes] == [1] * 15


def test_s3_lease_writes_are_conditional(s3):
    """The S3 backend's create and replace refuse to overwrite a lease that changed since it was read."""
    from arcoforge.io.lease import _Conflict

    options, bucket = s3
    backend = StoreState(f"s3://{bucket}/x.zarr", options).lease().backend
    backend.create({"owner": "a"})
    with pytest.raises(_Conflict):
        backend.create({"owner": "b"})  # If-None-Match: * on an object that exists
    _, etag = backend.read()
    backend.replace({"owner": "a", "n": 1}, etag)
    with pytest.raises(_Conflict):
        backend.replace({"owner": "c"}, etag)  # If-Match with the ETag of a version replaced since
    assert backend.read()[0] == {"owner": "a", "n": 1}


def test_a_lease_whose_heartbeat_is_too_old_is_taken_over_naming_its_owner(tmp_path, caplog):
    state = StoreState(str(tmp_path / "x.zarr"))
    state.acquire_lease("bake-a", 60)
    with pytest.raises(LeaseError, match=r"lease held: owner bake-a, host .*taken over once its heartbeat is 60 s "
                                         r"old.*--break-lease"):
        state.acquire_lease("bake-b", 60)  # alive (this process) and fresh
    old = state.read_json("lease.json")
    old["heartbeat"] = (dt.datetime.now(UTC) - dt.timedelta(seconds=61)).isoformat()
    old["host"] = "another-host"  # its process cannot be looked at from here: only the heartbeat counts
    state.write_json("lease.json", old)
    with caplog.at_level(logging.WARNING, logger="arcoforge.io.lease"):
        state.acquire_lease("bake-b", 60)
    assert state.read_json("lease.json")["owner"] == "bake-b"
    assert "took over the lease" in caplog.text and "from owner bake-a (host another-host" in caplog.text
    assert "its last heartbeat was 61 s ago (time to live 60 s)" in caplog.text
    state.acquire_lease("bake-c", 60, break_lease=True)  # --break-lease takes a live, fresh lease
    assert state.read_json("lease.json")["owner"] == "bake-c"


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    state = StoreState(str(tmp_path / "x.zarr"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease = state.acquire_lease("bake-a", 3600)
    state.write_json("lease.json", {**lease, "pid": dead.pid, "pid_start": None})
    with caplog.at_level(logging.WARNING, logger="arcoforge.io.lease"):
        state.acquire_lease("bake-b", 3600)
    assert f"its process {dead.pid} on this host is gone" in caplog.text
    # A reused pid is told apart by its start time; a process of another host is judged by its heartbeat only.
    now = dt.datetime.now(UTC)
    mine = {"owner": "x", "host": "h", "pid": os.getpid(), "heartbeat": now.isoformat(), "ttl": 60}
    assert staleness(mine, now, host="h") is None
    assert staleness({**mine, "pid_start": "1"}, now, host="h") == f"its process {os.getpid()} on this host is gone"
    assert staleness({**mine, "pid": dead.pid}, now, host="elsewhere") is None


def test_the_heartbeat_keeps_a_lease_alive_until_it_is_released(tmp_path):
    state = StoreState(str(tmp_path / "x.zarr"))
    state.acquire_lease("bake-a", 0.4)
    with LeaseKeeper([state.lease()], "bake-a", ttl=0.4):
        time.sleep(1.0)  # 2.5 times its time to live
        with pytest.raises(LeaseError, match="owner bake-a"):
            state.acquire_lease("bake-b", 0.4)
    time.sleep(0.6)  # no heartbeat any more: it is stale, and taken over
    state.acquire_lease("bake-b", 0.4)
    assert state.read_json("lease.json")["owner"] == "bake-b"
