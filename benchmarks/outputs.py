"""Measure the three outputs on one corpus: copy to Zarr, copy to Icechunk, and virtual references.

For each output: the bake's wall time (in this process, one worker, after a
warm-up bake that pays the imports), its size on disk, and the time to open it
and read every value back; every output is checked equal to the Zarr store. Reading is timed in a fresh
process per output (the OS page cache is warm for all alike).

    PYTHONPATH=src python benchmarks/outputs.py --workdir /tmp/outputs-bench --files 60 --nlat 180 --nlon 360

Prints a Markdown table (docs/outputs.md quotes one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import apache_beam as beam
import xarray as xr

sys.path.insert(0, str(Path(__file__).parent))
from corpus import write_corpus  # noqa: E402

import arcoforge as af  # noqa: E402
from arcoforge.io.icechunk_store import open_repository  # noqa: E402
from arcoforge.runtime.runners import local_pipeline_options, local_runner  # noqa: E402


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def copy_recipe(paths: list[str], cls: type, name: str, root: Path, chunks: dict) -> beam.PTransform:
    pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=1)
    return (beam.Create(pattern.items()) | af.OpenURLWithFSSpec() | af.OpenWithXarray(file_type=pattern.file_type)
            | cls(store_name=name, combine_dims=pattern.combine_dim_keys, target_root=str(root), target_chunks=chunks))


def run_virtual(paths: list[str], root: Path, output: str) -> None:
    pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=1)
    with beam.Pipeline(runner=local_runner(1), options=local_pipeline_options(1)) as pipeline:
        opened = pipeline | beam.Create(pattern.items()) | af.OpenWithKerchunk(file_type=pattern.file_type)
        if output == "icechunk":
            _ = opened | af.WriteVirtualIcechunk("virtual.icechunk", concat_dims=["time"],
                                                 identical_dims=["lat", "lon"], target_root=str(root))
        else:
            _ = opened | af.WriteCombinedReference("refs", concat_dims=["time"], identical_dims=["lat", "lon"],
                                                   target_root=str(root), output_file_name=output)


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


OPENERS = {
    "zarr": "xr.open_zarr(PATH, chunks=None)",
    "icechunk": "xr.open_zarr(open_repository(PATH, create=False, virtual_credentials=CREDS)"
                ".readonly_session(branch='main').store, consolidated=False, chunks=None)",
    "kerchunk": "xr.open_dataset(PATH, engine='kerchunk', storage_options={'remote_protocol': 'file'})",
}


def read_seconds(kind: str, path: Path, credentials: dict | None = None) -> float:
    """Open an output and read every value, in a fresh process (no cache of this one helps): median seconds."""
    code = (f"import time, warnings; warnings.simplefilter('ignore'); import xarray as xr; "
            f"from arcoforge.io.icechunk_store import open_repository; PATH, CREDS = {str(path)!r}, {credentials!r}; "
            f"t = time.perf_counter(); {OPENERS[kind]}.load(); print(time.perf_counter() - t)")
    times = []
    for _ in range(3):  # the median of three: the machine may be shared
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return sorted(times)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/arcoforge-outputs-bench")
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--nlat", type=int, default=180)
    parser.add_argument("--nlon", type=int, default=360)
    parser.add_argument("--chunk", type=int, default=30, help="time steps per chunk of the copies")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = Path(args.workdir)
    paths = write_corpus(work / "corpus", args.files, args.nlat, args.nlon)
    folder = os.path.dirname(paths[0])
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    chunks = {"time": args.chunk}
    af.run_local(copy_recipe(paths[:2], af.StoreToZarr, "warmup.zarr", work / "warmup", chunks))  # imports
    shutil.rmtree(work / "warmup", ignore_errors=True)

    rows = []
    bake_s, _ = timed(lambda: af.run_local(copy_recipe(paths, af.StoreToZarr, "copy.zarr", out, chunks)))
    reference = xr.open_zarr(out / "copy.zarr").load()
    rows.append(("copy to Zarr (StoreToZarr)", bake_s, size_of(out / "copy.zarr"),
                 read_seconds("zarr", out / "copy.zarr")))

    bake_s, _ = timed(lambda: af.run_local(copy_recipe(paths, af.StoreToIcechunk, "copy.icechunk", out, chunks)))
    repo = open_repository(str(out / "copy.icechunk"), create=False)
    xr.testing.assert_equal(xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False), reference)
    rows.append(("copy to Icechunk (StoreToIcechunk)", bake_s, size_of(out / "copy.icechunk"),
                 read_seconds("icechunk", out / "copy.icechunk")))

    for name in ("reference.json", "reference.parquet"):
        bake_s, _ = timed(lambda: run_virtual(paths, out, name))
        ds = xr.open_dataset(str(out / "refs" / name), engine="kerchunk", storage_options={"remote_protocol": "file"})
        xr.testing.assert_equal(ds.load(), reference)
        rows.append((f"virtual, kerchunk {name.split('.')[1]} (WriteCombinedReference)", bake_s,
                     size_of(out / "refs" / name), read_seconds("kerchunk", out / "refs" / name)))

    bake_s, _ = timed(lambda: run_virtual(paths, out, "icechunk"))
    credentials = {f"file://{folder}/": None}
    repo = open_repository(str(out / "virtual.icechunk"), create=False, virtual_credentials=credentials)
    xr.testing.assert_equal(xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False), reference)
    rows.append(("virtual, Icechunk (WriteVirtualIcechunk)", bake_s, size_of(out / "virtual.icechunk"),
                 read_seconds("icechunk", out / "virtual.icechunk", credentials)))

    inputs = sum(os.path.getsize(p) for p in paths)
    print(f"corpus: {args.files} daily NetCDF4 files of 2 float32 {args.nlat}x{args.nlon} fields (zlib 4), "
          f"{inputs / 2**20:.1f} MiB; copies chunked {chunks}; 1 worker, in process; every output equals the Zarr copy")
    print("\n| output | bake (s) | size on disk | open + read all (s) |\n|---|---:|---:|---:|")
    for name, bake_s, size, read_s in rows:
        shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
        print(f"| {name} | {bake_s:.1f} | {shown} | {read_s:.2f} |")


if __name__ == "__main__":
    main()
