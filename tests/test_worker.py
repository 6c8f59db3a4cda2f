"""Local worker processes: warm workers started ahead of the runner, claimed by its worker command."""

from __future__ import annotations

import os
import tempfile
import time

import apache_beam as beam
import psutil
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.runtime.workers import WarmWorkers
from arcoforge.cli import _local_workers_wanted


def bake(paths, target):
    pattern = af.pattern_from_file_sequence(paths, "time")
    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.StoreToZarr(target_root=str(target), store_name="warm.zarr", combine_dims=pattern.combine_dim_keys,
                         target_chunks={"time": 4})
    )
    af.run_local(recipe, num_workers=2)
    actual = xr.open_zarr(target / "warm.zarr").load()
    expected = xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time",
                                 data_vars="minimal", coords="minimal", compat="override").load()
    xr.testing.assert_equal(actual, expected)


def test_a_bake_runs_on_the_warm_workers_started_for_it(tmp_path, daily_archive):
    with WarmWorkers(2) as warm:
        bake(daily_archive, tmp_path)
        assert warm.claimed() == 2
    assert all(process.poll() is not None for process in warm.processes)
    assert not os.path.exists(warm.folder)


def test_the_runner_starts_a_cold_worker_when_no_warm_one_is_free(tmp_path, daily_archive):
    with WarmWorkers(1) as warm:
        bake(daily_archive, tmp_path)
        assert warm.claimed() == 1


def all_workers(warm: WarmWorkers, count: int) -> list[psutil.Process]:
    """The warm workers: the one the bake started, and those it forked once it had imported."""
    if len(warm.processes) == count:  # (off Linux each is started on its own)
        return [psutil.Process(process.pid) for process in warm.processes]
    (first,) = warm.processes
    zygote = psutil.Process(first.pid)
    deadline = time.time() + 90
    children = zygote.children()
    while len(children) < count - 1 and time.time() < deadline:
        time.sleep(0.05)
        children = zygote.children()  # read once per round: the list checked is the list returned
    assert len(children) == count - 1, (zygote.status(), children)
    return [zygote, *children]


@pytest.mark.parametrize("dead", ["started", "forked"])
def test_a_warm_worker_that_died_is_passed_over(tmp_path, daily_archive, dead):
    with WarmWorkers(2) as warm:
        started, forked = all_workers(warm, 2)
        (started if dead == "started" else forked).kill()
        bake(daily_archive, tmp_path)
        assert warm.claimed() >= 1  # the dead one's socket may be claimed before the claimer finds it dead


def test_unclaimed_warm_workers_stop_with_the_bake():
    with WarmWorkers(3) as warm:
        assert WarmWorkers.active_folder() == warm.folder
        assert os.path.basename(warm.folder).startswith(f"arcoforge-workers-{os.getpid()}.")  # swept once it is gone
        workers = all_workers(warm, 3)
        assert len({worker.pid for worker in workers}) == 3
    assert WarmWorkers.active_folder() is None
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
    assert not os.path.exists(warm.folder)


@pytest.mark.parametrize("argv, wanted", [
    (["bake", "recipe.py", "--num-workers", "2"], 2),
    (["-q", "bake", "feedstock", "--num-workers", "3", "--runner", "direct"], 3),
    (["bake", "recipe.py"], 0),  # in process
    (["bake", "recipe.py", "--num-workers", "2", "--runner", "dask"], 0),
    (["bake", "recipe.py", "--num-workers", "2", "--config", "bake.toml"], 0),  # it may pick another runner
    (["demo", "--num-workers", "2"], 2),
    (["lint", "feedstock"], 0),
    (["bake", "--no-such-flag"], 0),  # main() reports the usage error
])
def test_the_command_starts_as_many_warm_workers_as_its_flags_ask_for(argv, wanted):
    assert _local_workers_wanted(argv) == wanted


def test_socket_folders_are_named_after_their_bake_and_a_long_temp_path_means_cold_workers(tmp_path, monkeypatch):
    # Killed bakes' folders are swept by their names (tests/test_scratch.py); a socket's path has ~100 bytes.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with WarmWorkers(0) as none:
        assert none.folder is None
    long = tmp_path / ("x" * (100 - len(str(tmp_path))))
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    with WarmWorkers(2) as cold:
        assert cold.count == 0 and cold.folder is None and WarmWorkers.active_folder() is None
    assert list(long.iterdir()) == []
