"""Benchmark: the deep rechunk (time-series layout) in one pass and in two stages, against the shallow one.

    python benchmarks/deep_rechunk.py --files 120            # ~1 GB of one-step 720x1440 files
    python benchmarks/deep_rechunk.py --files 365 --runs deep-1   # one run; the table keeps earlier ones

One-step daily files (benchmarks/corpus.py: two float32 fields, zlib, one chunk
per field) baked by ``arcoforge bake`` with 2 workers and max_mem=1GB into
chunks of time=<all files>, lat=30, lon=30, with ``multistage_threshold`` null
(one pass: every write task inflates every input again) and at its default
(two stages through an intermediate), and into time=30 (shallow) for scale.
Each run is its own process tree (wall time and peak RSS of the tree, as
benchmarks/run.py measures them); both deep stores are compared value by value
with the shallow one before the table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402
from run import MiB, bake_arcoforge, environment, print_table, run_measured  # noqa: E402

RECHUNKER_JOB = """
import sys, time
import dask, xarray as xr
from rechunker import rechunk
paths, target, temp, nfiles, max_mem = sys.argv[1].split(","), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ds = xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time", chunks={"time": 1})
for name in ds.variables:
    ds[name].encoding = {}  # netCDF's (zlib, chunksizes) are no Zarr encoding
deep = {"time": nfiles, "lat": 30, "lon": 30}
chunks = {"temperature": deep, "wind_speed": deep, "time": None, "lat": None, "lon": None}
with dask.config.set(scheduler="processes", num_workers=2):
    rechunk(ds, chunks, max_mem, target, temp_store=temp).execute()
"""


def bake_rechunker(python: str, paths: list[str], out: Path, nfiles: int, max_mem: str) -> tuple[float, int]:
    """rechunker 0.5.4 (zarr 2: its own virtualenv) on the same files, 2 dask worker processes."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    seconds, peak, _ = run_measured([python, "-c", RECHUNKER_JOB, ",".join(paths), str(out / "bench.zarr"),
                                     str(out / "temp.zarr"), str(nfiles), max_mem])
    return seconds, peak


def same_values(store: Path, reference: Path) -> str:
    """'ok' if both stores hold the same values (compared a band of latitudes at a time), else raises."""
    a, b = xr.open_zarr(store), xr.open_zarr(reference)
    assert a.sizes == b.sizes, (a.sizes, b.sizes)
    for start in range(0, a.sizes["lat"], 90):
        band = slice(start, start + 90)
        for name in ("temperature", "wind_speed"):
            if not np.array_equal(a[name].isel(lat=band).values, b[name].isel(lat=band).values, equal_nan=True):
                raise AssertionError(f"{store}: {name} differs from {reference} in latitudes {band}")
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--max-mem", default="1GB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/arcoforge-bench")
    parser.add_argument("--runs", default="shallow,deep-1,deep-2",
                        help="which runs (shallow, deep-1, deep-2); the others' rows come from earlier runs' results")
    parser.add_argument("--rechunker-python", help="a Python with rechunker (and zarr<3) to run it too")
    parser.add_argument("--output", help="also write the table (markdown) to this file")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    corpus_dir = workdir / "corpus"
    paths = corpus.write_corpus(corpus_dir, args.files)
    deep = {"time": args.files, "lat": 30, "lon": 30}
    runs = [("shallow: time=30, 1 pass", {"time": 30}, "4.0", "shallow"),
            (f"deep: time={args.files}, lat=30, lon=30, 1 pass", deep, "null", "deep-1"),
            (f"deep: time={args.files}, lat=30, lon=30, 2 stages", deep, "4.0", "deep-2")]
    wanted = args.runs.split(",")
    results = workdir / f"deep-{args.files}-{args.max_mem}.json"  # rows kept between invocations
    kept = json.loads(results.read_text()) if results.exists() else {}
    rows, stores = [], {}
    for name, chunks, threshold, folder in runs:
        out = workdir / f"out-{folder}"
        stores[folder] = out / "bench.zarr"
        if folder in wanted:
            seconds, peak = bake_arcoforge(corpus_dir, args.files, out, args.workers, args.max_mem, chunks,
                                           extra_env={"ARCOFORGE_BENCH_MULTISTAGE": threshold})
            kept[folder] = [name, f"{seconds:.1f}", f"{peak / MiB:,.0f}"]
            results.write_text(json.dumps(kept))
            print(kept[folder], flush=True)
    folders = [folder for *_, folder in runs if folder in kept]
    rows = [list(kept[folder]) for folder in folders]
    if args.rechunker_python:  # its max_mem is per task: the same data budget per worker as arcoforge's
        seconds, peak = bake_rechunker(args.rechunker_python, paths, workdir / "out-rechunker", args.files,
                                       "342MB")
        kept["rechunker"] = ["rechunker 0.5.4 (dask, 2 processes), same deep chunks", f"{seconds:.1f}",
                             f"{peak / MiB:,.0f}"]
        results.write_text(json.dumps(kept))
        print(kept["rechunker"], flush=True)
    if "rechunker" in kept:
        stores["rechunker"] = workdir / "out-rechunker" / "bench.zarr"
        folders, rows = folders + ["rechunker"], rows + [list(kept["rechunker"])]
    shallow_seconds = float(rows[0][1])
    for row, folder in zip(rows, folders):
        row.append(f"{float(row[1]) / shallow_seconds:.1f}x")
        row.append("reference" if folder == "shallow" else same_values(stores[folder], stores["shallow"]))
    nbytes = args.files * 720 * 1440 * 4 * 2
    text = f"Measured with {environment()}\n" + print_table(
        f"Deep rechunk: {args.files} one-step files of 720x1440 ({nbytes / 1e9:.1f} GB of float32), "
        f"arcoforge bake, {args.workers} workers, max_mem={args.max_mem}",
        ["run", "wall (s)", "peak RSS, tree (MiB)", "vs shallow", "same values"], rows)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
