"""Benchmark: many tiny one-step inputs into one store (issue 16), wall time and memory per process.

    python benchmarks/many_inputs.py 1000 10000          # the table rows
    python benchmarks/many_inputs.py 100000 --workers 2  # a long one
    python benchmarks/many_inputs.py 1000 --bake-args="--runner dask --dask-address tcp://127.0.0.1:8786"
    python benchmarks/many_inputs.py 10000 --icechunk    # StoreToIcechunk instead of StoreToZarr

Inputs are netCDF4 files of one time step of a 4x8 float32 field, written
once into ``--corpus`` and kept. Each row is ``arcoforge bake`` of a recipe
over the first N of them (chunks of 1,000 steps, 2 local workers) in its own
process tree; every 50 ms the RSS of each process of the tree is sampled, and
the row shows the peak of the whole tree, of the bake process and of the
largest worker (with ``--dask-address``, the cluster's workers count as the
tree's workers). The store is then compared value by value with what the
inputs hold (input i is ``i + k/100`` for k in 0..31 at time i).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import xarray as xr

MiB = 2**20
RECIPE = '''
import glob, os
import apache_beam as beam
from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToIcechunk, StoreToZarr, pattern_from_file_sequence

# The paths go straight into the pattern, which packs them: a list the recipe kept would stay its own (~100 B a path).
pattern = pattern_from_file_sequence(sorted(glob.glob(os.path.join(os.environ["MANY_CORPUS"], "f-*.nc")))
                                     [: int(os.environ["MANY_N"])], "time", nitems_per_file=1)
recipe = (beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray(file_type=pattern.file_type)
          | STEP(store_name="STORE", combine_dims=pattern.combine_dim_keys, target_chunks={"time": 1000}))
'''


def write_corpus(folder: Path, n: int) -> None:
    """Write (or reuse) ``n`` one-step files; netCDF4 directly, ~1.4 ms a file."""
    import netCDF4

    folder.mkdir(parents=True, exist_ok=True)
    field = np.arange(32, dtype="float32").reshape(1, 4, 8) / 100
    for i in range(n):
        path = folder / f"f-{i:07d}.nc"
        if path.exists():
            continue
        with netCDF4.Dataset(f"{path}.tmp", "w") as f:
            f.createDimension("time", 1)
            f.createDimension("lat", 4)
            f.createDimension("lon", 8)
            time_ = f.createVariable("time", "i4", ("time",))
            time_.units = "hours since 2000-01-01"
            time_[:] = [i]
            f.createVariable("sst", "f4", ("time", "lat", "lon"))[:] = i + field
        os.rename(f"{path}.tmp", path)


def dask_worker_pids(bake_args: list[str]) -> list[int]:
    """The process ids of the dask workers a ``--runner dask --dask-address A`` bake will use (none otherwise)."""
    if "--dask-address" not in bake_args:
        return []
    from distributed import Client

    with Client(bake_args[bake_args.index("--dask-address") + 1], timeout=30) as client:
        return sorted(client.run(os.getpid).values())


def run_sampled(args: list[str], env: dict, workers: list[int] = ()) -> tuple[float, int, int, int, str]:
    """Wall seconds, and peak RSS of the whole tree, of the root process and of its largest child.

    ``workers`` are processes outside the tree (a dask cluster's workers) counted as its children.
    """
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(process.pid)
    outside = [psutil.Process(pid) for pid in workers]
    tree = root_peak = child_peak = 0
    while process.poll() is None:
        try:
            children = root.children(recursive=True) + outside
            rss = {p.pid: p.memory_info().rss for p in [root, *children] if p.is_running()}
            tree = max(tree, sum(rss.values()))
            root_peak = max(root_peak, rss.get(root.pid, 0))
            child_peak = max([child_peak, *(v for pid, v in rss.items() if pid != root.pid)])
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out = process.communicate()[0]
    if process.returncode:
        raise RuntimeError(f"bake failed ({process.returncode}):\n{out[-3000:]}")
    return seconds, tree, root_peak, child_peak, out


def verify(store: Path, n: int) -> None:
    if store.suffix == ".icechunk":
        from arcoforge.io.icechunk_store import open_repository

        session = open_repository(str(store), create=False).readonly_session(branch="main")
        ds = xr.open_zarr(session.store, consolidated=False)
    else:
        ds = xr.open_zarr(store)
    expected = np.arange(n)[:, None, None] + np.arange(32, dtype="float32").reshape(1, 4, 8) / 100
    np.testing.assert_array_equal(ds.sst.values, expected.astype("float32"))
    assert ds.sizes["time"] == n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "arcoforge-many-inputs"))
    parser.add_argument("--bake-args", default="", help="more `arcoforge bake` arguments (another runner)")
    parser.add_argument("--icechunk", action="store_true", help="bake with StoreToIcechunk")
    options = parser.parse_args()
    corpus = Path(options.corpus)
    outside_workers = dask_worker_pids(options.bake_args.split())
    write_corpus(corpus, max(options.sizes))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        recipe = Path(work) / "recipe.py"
        step, store = ("StoreToIcechunk", "many.icechunk") if options.icechunk else ("StoreToZarr", "many.zarr")
        recipe.write_text(textwrap.dedent(RECIPE).replace("STEP", step).replace("STORE", store))
        for n in options.sizes:
            target = Path(work) / f"out-{n}"
            env = {**os.environ, "MANY_CORPUS": str(corpus), "MANY_N": str(n)}
            seconds, tree, root, child, _ = run_sampled(
                [sys.executable, "-m", "arcoforge.cli", "-q", "bake", str(recipe), "--target-root", str(target),
                 "--num-workers", str(options.workers), "--no-stac", *options.bake_args.split()], env, outside_workers)
            verify(target / store, n)
            rows.append((n, seconds, tree, root, child))
            print(f"{n} inputs: {seconds:.1f} s, tree {tree / MiB:.0f} MiB, bake {root / MiB:.0f} MiB, "
                  f"worker {child / MiB:.0f} MiB (verified)", flush=True)
    print("\n| inputs | wall | ms / input | peak RSS, whole tree | bake process | largest worker |")
    print("|---|---|---|---|---|---|")
    for n, seconds, tree, root, child in rows:
        print(f"| {n:,} | {seconds:.1f} s | {seconds / n * 1e3:.2f} | {tree / MiB:,.0f} MiB | {root / MiB:,.0f} MiB "
              f"| {child / MiB:,.0f} MiB |")
    if len(rows) > 1:
        print("\nGrowth per input between consecutive rows (bytes): whole tree, bake process, largest worker")
        for (n0, _, *before), (n1, _, *after) in zip(rows, rows[1:]):
            slopes = ", ".join(f"{(b - a) / (n1 - n0):,.0f}" for a, b in zip(before, after))
            print(f"- {n0:,} -> {n1:,}: {slopes}")


if __name__ == "__main__":
    main()
