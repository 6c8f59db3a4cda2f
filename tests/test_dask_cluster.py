"""``arcoforge bake --runner dask`` against a real dask.distributed cluster of separate processes (issue 16).

The test starts ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1 (no LocalCluster: nothing shares the bake's process), bakes a daily
archive through the CLI, and compares the store value by value with xarray's
own reading of the inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import arcoforge
from arcoforge.cli import EXIT_OK, main

SRC = str(Path(arcoforge.__file__).resolve().parents[1])


def _start(args: list[str], folder: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    log = open(folder / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=folder, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def dask_cluster_processes(tmp_path_factory):
    """A scheduler and two single-threaded workers, each its own process; yields the scheduler's address."""
    distributed = pytest.importorskip("distributed", reason="needs dask.distributed (pip install 'arcoforge[test]')")
    folder = tmp_path_factory.mktemp("dask-cluster")
    scheduler_file = folder / "scheduler.json"
    processes = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                         "--scheduler-file", str(scheduler_file)], folder, "scheduler")]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert processes[0].poll() is None, (folder / "scheduler.log").read_text()
            time.sleep(0.1)
        for number in range(2):
            processes.append(_start(["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                     "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1",
                                     "--memory-limit", "2GB", "--local-directory", str(folder / f"w{number}")],
                                    folder, f"worker-{number}"))
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
            pids = set(client.run(os.getpid).values())
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:") and len(pids) == 2 and os.getpid() not in pids
        yield address, pids
    finally:
        for process in reversed(processes):  # workers first; a worker has nothing left to save
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


RECIPE = '''
import json, apache_beam as beam
from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

pattern = pattern_from_file_sequence(json.loads({paths!r}), "time", nitems_per_file=1)
recipe = (beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray(file_type=pattern.file_type)
          | StoreToZarr(store_name="sst.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={{"time": 5}},
                        max_pieces_per_task=5))
'''


def test_bake_on_a_dask_cluster_of_separate_processes(tmp_path, daily_archive, dask_cluster_processes, capsys):
    address, worker_pids = dask_cluster_processes
    recipe = tmp_path / "recipe.py"
    recipe.write_text(RECIPE.format(paths=json.dumps(daily_archive)))
    code = main(["-q", "bake", str(recipe), "--target-root", str(tmp_path / "out"), "--runner", "dask",
                 "--dask-address", address, "--no-stac", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_OK, lines[-1]
    assert lines[-1]["status"] == "succeeded" and lines[-1]["stores"] == [str(tmp_path / "out" / "sst.zarr")]

    store = xr.open_zarr(tmp_path / "out" / "sst.zarr")
    expected = xr.open_mfdataset(daily_archive, engine="h5netcdf", combine="nested", concat_dim="time",
                                 data_vars="minimal", coords="minimal", compat="override")
    xr.testing.assert_equal(store.load(), expected.load())
    np.testing.assert_array_equal(store.time.values, expected.time.values)
    # 12 days in chunks of 5 with at most 5 pieces a task: 3 write tasks, on the cluster's workers
    assert store.analysed_sst.encoding["chunks"][0] == 5
    # Progress came from the workers, through the scheduler (they need not share this machine's disk).
    final = [line for line in lines if line.get("event") == "progress" and line["final"]]
    assert final and final[-1]["inputs_read"] == len(daily_archive)
    assert final[-1]["tasks_done"] == final[-1]["tasks_total"] > 0
