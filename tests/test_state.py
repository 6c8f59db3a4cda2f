"""Bakes that survive failure: kill -9 and resume, atomic publish, leases."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import xarray as xr

from arcoforge.demo import write_demo_archive
from arcoforge.runtime.memory import WORKER_PROCESS_BYTES
from arcoforge.io.state import LeaseError, StoreState, state_url, task_id

RECIPE = textwrap.dedent('''
    import apache_beam as beam
    from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

    pattern = pattern_from_file_sequence({paths!r}, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        # one write task per day: (1, 360, 720) x (packed float64 + float32) fits 9 MB, two do not
        | StoreToZarr(store_name="r.zarr", combine_dims=pattern.combine_dim_keys,
                      target_chunks={{"time": 1}}, max_mem={max_mem!r})
    )
''')
N_DAYS = 40


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_demo_archive(tmp_path_factory.mktemp("days"), ndays=N_DAYS, nlat=360, nlon=720)


def write_recipe(folder: Path, paths, max_mem: str = "9MB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.py"
    recipe.write_text(RECIPE.format(paths=list(paths), max_mem=max_mem))
    return recipe


def bake_command(recipe: Path, target: Path, *extra: str, verbose: bool = False) -> list[str]:
    return [sys.executable, "-m", "arcoforge.cli", *([] if verbose else ["-q"]), "bake", str(recipe),
            "--target-root", str(target), "--no-stac", *extra]


def chunk_hashes(store: Path) -> dict[str, str]:
    """sha256 of every chunk file (metadata documents, which carry the bake time, left out)."""
    skip = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
    return {
        str(path.relative_to(store)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(store.rglob("*")) if path.is_file() and path.name not in skip
    }


def done_count(target: Path) -> int:
    done = target / ".arcoforge" / "r.zarr" / "done"
    # a marker being written when the bake was killed is a temporary file, not a done task
    return sum(1 for p in done.rglob("*") if p.is_file() and ".tmp-" not in p.name) if done.exists() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, archive):
    """An uninterrupted bake, to compare chunk bytes with."""
    root = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(root / "recipe", archive)
    subprocess.run(bake_command(recipe, root / "out"), check=True, capture_output=True, timeout=300)
    store = root / "out" / "r.zarr"
    return chunk_hashes(store), xr.open_zarr(store).load()


@pytest.mark.parametrize("kill_after_tasks, workers", [(0, 1), (N_DAYS // 2, 1), ("all", 1), (N_DAYS // 2, 2)])
def test_kill_9_then_resume_gives_byte_identical_chunks(tmp_path, archive, reference, kill_after_tasks, workers):
    """Killed with its whole process group: with 2 workers, the warm workers and their claimers too."""
    expected_hashes, expected = reference
    n_tasks = N_DAYS + 2  # a task per day, and one each for the lat and lon coordinates
    target = tmp_path / "out"
    # 9 MB a worker, plus the second worker process as max_mem counts it (the recipe's max_mem wins
    # over --max-mem, which only stands in for a recipe that gives none).
    max_mem = 9_000_000 * workers + WORKER_PROCESS_BYTES * (workers - 1)
    recipe = write_recipe(tmp_path / "recipe", archive, max_mem=f"{max_mem}B")
    workers_flags = ["--num-workers", str(workers)]
    process = subprocess.Popen(bake_command(recipe, target, *workers_flags), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wanted = n_tasks if kill_after_tasks == "all" else kill_after_tasks
    plan = target / ".arcoforge" / "r.zarr" / "plan.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (plan.exists() and done_count(target) >= wanted):
        if process.poll() is not None:
            break  # it finished first: resuming must then do nothing
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    complete = (target / ".arcoforge" / "r.zarr" / "complete.json").exists()
    killed_at = n_tasks if complete else done_count(target)
    assert killed_at >= wanted

    store = target / "r.zarr"
    if not complete:
        # Readers find no group rather than fill values standing in for missing chunks.
        with pytest.raises(Exception, match="(?i)no group"):
            xr.open_zarr(store)

    if not complete:
        # A chunk write killed before its rename leaves zarr's temporary file; the resumed bake removes it.
        abandoned = store / "analysed_sst" / "c" / "0" / "0" / f"0.{uuid.uuid4().hex}.partial"
        abandoned.parent.mkdir(parents=True, exist_ok=True)
        abandoned.write_bytes(b"half a chunk")

    # The dead bake's lease does not stand in the way: its process is gone, so a plain rerun takes it over.
    resumed = subprocess.run(bake_command(recipe, target, *workers_flags, verbose=True),
                             capture_output=True, text=True, timeout=300)
    if not complete:
        assert f"pid {process.pid}) from" not in resumed.stderr  # (the message names the old owner first)
        assert "took over the lease of" in resumed.stderr and f"its process {process.pid} on this host is gone" \
            in resumed.stderr, resumed.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n_tasks - killed_at} write tasks" in resumed.stderr  # only those left undone
    if workers == 1:  # (worker processes log warnings only)
        assert f"{killed_at} of {n_tasks} write tasks already done" in resumed.stderr
    assert chunk_hashes(store) == expected_hashes
    xr.testing.assert_identical(xr.open_zarr(store).load().drop_attrs(), expected.drop_attrs())


def test_a_bake_of_a_store_another_bake_holds_fails_clearly(tmp_path, archive):
    target = tmp_path / "out"
    recipe = write_recipe(tmp_path / "recipe", archive)
    other = StoreState(str(target / "r.zarr"))
    other.acquire_lease("nightly-bake-on-host-b", ttl_seconds=3600)
    blocked = subprocess.run(bake_command(recipe, target), capture_output=True, text=True, timeout=300)
    assert blocked.returncode == 4
    assert "is being written by another bake (lease held: owner nightly-bake-on-host-b" in blocked.stderr
    assert len(blocked.stderr.strip().splitlines()) == 1
    assert not (target / "r.zarr").exists()  # it stopped before writing anything
    other.release_lease("nightly-bake-on-host-b")
    done = subprocess.run(bake_command(recipe, target), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (target / ".arcoforge" / "r.zarr" / "lease.json").exists()  # released when complete
    assert xr.open_zarr(target / "r.zarr").sizes["time"] == N_DAYS


def test_two_bakes_starting_together_never_both_hold_the_lease(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    state = StoreState(str(tmp_path / "x.zarr"))

    def take(owner):
        try:
            state.acquire_lease(owner, ttl_seconds=60)
            return owner
        except LeaseError:
            return None

    with ThreadPoolExecutor(8) as pool:
        winners = [w for w in pool.map(take, [f"bake-{i}" for i in range(8)]) if w]
    assert len(winners) == 1
    assert state.read_json("lease.json")["owner"] == winners[0]


def test_rerunning_a_complete_bake_rewrites_nothing(tmp_path, archive):
    target = tmp_path / "out"
    recipe = write_recipe(tmp_path / "recipe", archive)
    subprocess.run(bake_command(recipe, target), check=True, capture_output=True, timeout=300)
    chunks = [p for p in (target / "r.zarr").rglob("*") if p.is_file() and p.name != "zarr.json"]
    mtimes = {p: p.stat().st_mtime_ns for p in chunks}
    rerun = subprocess.run(bake_command(recipe, target, verbose=True), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N_DAYS + 2} of {N_DAYS + 2} write tasks already done (complete)" in rerun.stderr
    assert {p: p.stat().st_mtime_ns for p in chunks} == mtimes


def test_only_abandoned_chunk_writes_are_removed(tmp_path):
    store = tmp_path / "s.zarr"
    (store / "v" / "c" / "0").mkdir(parents=True)
    keep = [store / "zarr.json", store / "v" / "c" / "0" / "0", store / "v" / "notes.partial",
            store / "v" / "c" / "0" / "1.abc.partial"]
    abandoned = [store / "v" / "c" / "0" / f"0.{uuid.uuid4().hex}.partial", store / f"zarr.{uuid.uuid4().hex}.partial"]
    for path in keep + abandoned:
        path.write_bytes(b"x")
    assert StoreState(str(store)).remove_abandoned_writes() == 2
    assert all(path.exists() for path in keep) and not any(path.exists() for path in abandoned)
    assert StoreState(str(tmp_path / "absent.zarr")).remove_abandoned_writes() == 0


def test_state_lives_beside_the_store_and_leases_name_their_owner(tmp_path):
    assert state_url(str(tmp_path / "x.zarr")) == f"{tmp_path}/.arcoforge/x.zarr"
    state = StoreState(str(tmp_path / "x.zarr"))
    state.acquire_lease("bake-a", ttl_seconds=60)
    state.acquire_lease("bake-a", ttl_seconds=60)  # the owner may renew
    with pytest.raises(LeaseError, match=r"lease held: owner bake-a.*--break-lease"):
        state.acquire_lease("bake-b", ttl_seconds=60)
    state.acquire_lease("bake-c", ttl_seconds=60, break_lease=True)
    state.release_lease("bake-d")  # not the owner: nothing happens
    assert state.read_json("lease.json")["owner"] == "bake-c"
    state.release_lease("bake-c")
    assert state.read_json("lease.json") is None

    state.start("abc", {"n_tasks": 2})
    state.mark_done(task_id("v", (0, 1)))
    assert state.plan_fingerprint() == "abc" and state.done_tasks() == {"v/0.1"}
    state.start("def", {"n_tasks": 2})
    assert state.done_tasks() == set()


def test_an_input_corrupt_mid_bake_is_named_and_the_fixed_bake_resumes(tmp_path, archive, reference):
    import h5py
    import shutil

    expected_hashes, _ = reference
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = [shutil.copy(path, inputs) for path in archive]
    bad = Path(paths[25])
    good_bytes = bad.read_bytes()
    with h5py.File(bad, "r") as f:  # the compressed data of one variable: its structure still opens
        chunk = f["analysed_sst"].id.get_chunk_info(0)
    with open(bad, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write((b"garbage!" * chunk.size)[: chunk.size])

    target = tmp_path / "out"
    recipe = write_recipe(tmp_path / "recipe", paths)
    failed = subprocess.run(bake_command(recipe, target), capture_output=True, text=True, timeout=300)
    assert failed.returncode == 3, failed.stderr
    assert f"reading 'analysed_sst' from {bad} (pattern index Index(time=25)) failed" in failed.stderr
    assert done_count(target) > 0  # the chunks written before the failure are kept
    assert not (target / ".arcoforge" / "r.zarr" / "lease.json").exists()

    bad.write_bytes(good_bytes)  # the input is fixed
    resumed = subprocess.run(bake_command(recipe, target, verbose=True), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "write tasks already done" in resumed.stderr
    assert chunk_hashes(target / "r.zarr") == expected_hashes


def test_a_target_that_cannot_be_written_is_a_clear_infrastructure_error(tmp_path, archive, capsys):
    from arcoforge.cli import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the target's parent folder should be")
    recipe = write_recipe(tmp_path / "recipe", archive[:3])
    code = main(["-q", "bake", str(recipe), "--target-root", str(blocker / "out"), "--no-stac"])
    err = capsys.readouterr().err
    assert code == 4
    assert "Not a directory" in err and str(blocker) in err and len(err.strip().splitlines()) == 1


def test_throttled_chunk_writes_are_retried_and_nothing_is_lost(tmp_path, moto_endpoint, s3, daily_archive):
    import importlib.util as _util
    import sys as _sys

    servers = _sys.modules["arcoforge_tests_servers"]  # loaded by conftest.py
    options, bucket = s3
    proxy = servers.FaultyS3Proxy(moto_endpoint)
    try:
        through_proxy = {**options, "endpoint_url": proxy.url}
        recipe = write_recipe(tmp_path / "recipe", daily_archive[:4])
        module_spec = _util.spec_from_file_location("throttled_recipe", recipe)
        module = _util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        import arcoforge as af

        target = f"s3://{bucket}/stores"
        with af.use_runtime_defaults(target_root=target, storage_options=through_proxy):
            af.run_local(module.recipe)
    finally:
        proxy.stop()
    assert len(proxy.failed) >= 8  # every chunk object was refused once (503 SlowDown)
    actual = xr.open_zarr(f"{target}/r.zarr", storage_options=options).load()
    expected = xr.open_mfdataset(daily_archive[:4], engine="h5netcdf", combine="nested", concat_dim="time").load()
    xr.testing.assert_equal(actual.drop_attrs(), expected.drop_attrs())


def test_the_plan_is_recorded_only_after_the_root_metadata_it_stands_for(tmp_path, monkeypatch):
    """A bake killed between holding the root metadata and recording its plan starts over, never resumes."""
    state = StoreState(str(tmp_path / "s.zarr"))
    written = []
    original = StoreState._write

    def write_then_die_before_the_plan(self, path, data):
        if path.endswith("plan.json"):
            raise KeyboardInterrupt("killed")
        written.append(path)
        original(self, path, data)

    monkeypatch.setattr(StoreState, "_write", write_then_die_before_the_plan)
    with pytest.raises(KeyboardInterrupt):
        state.start("abc", {"n_tasks": 1}, {"zarr.json": b"{}"})
    assert [p.rsplit("/", 2)[-2:] for p in written] == [["root", "zarr.json"]]
    assert state.plan_fingerprint() is None  # so the rerun starts over


def test_a_fingerprint_is_the_digest_of_the_description_json_hashed_as_it_is_encoded():
    """Stores planned before the digest was streamed keep their fingerprint (so they still resume)."""
    import json
    import math

    import numpy as np

    from arcoforge.io.state import fingerprint

    description = {"inputs": [f"/x/{i}.nc" for i in range(500)] + [None], "dims": {"time": 3},
                   "encoding": (np.float32(1.5), float("nan"), math.inf), "text": "é\u2028", "z": [], "a": {}}
    for document in (description, [], "plain", 3):
        expected = hashlib.sha256(json.dumps(document, sort_keys=True, default=repr).encode()).hexdigest()
        assert fingerprint(document) == expected
