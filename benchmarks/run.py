"""Benchmark: arcoforge against the xarray baseline and the raw limits, in one run.

    python benchmarks/run.py                       # table 1 on 365 files of 720x1440 (~3 GB)
    python benchmarks/run.py --scaling --wide      # and table 2: 90/180/365 files, 20 wide files
    python benchmarks/run.py --files 60 --nlat 180 --nlon 360 --repeat 1   # a quick look

Every measured run is its own process tree, started once the page cache is
flushed; its peak RSS is the largest sum of the RSS of the process and all
its descendants, sampled every 50 ms.
Every output store is compared value by value with its inputs before the
table is printed. Needs the ``bench`` extra (psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import xarray as xr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

MiB = 2**20


@dataclass
class Result:
    name: str
    seconds: float
    peak_rss: int
    nbytes: int
    verified: str = "-"
    spread: str = "-"

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds


def run_measured(args: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run a command; return wall seconds, peak RSS of its whole process tree, and its stderr tail.

    The page cache is flushed first: the gigabytes the previous run wrote would otherwise be
    written back to disk during this one (after 30 s, Linux's default), slowing whichever
    contender happens to come next (measured: the same 2-worker bake took 10.3 s right after
    the 1-worker runs and 8.5 s in table 2).
    """
    os.sync()
    started = time.perf_counter()
    process = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed ({process.returncode}):\n{err[-3000:]}")
    return seconds, peak, (out + err)[-2000:]


def summarize(runs: list[tuple[float, int]]) -> tuple[float, int]:
    """The median wall time and the largest peak of ``runs``."""
    times = sorted(seconds for seconds, _ in runs)
    return times[len(times) // 2], max(peak for _, peak in runs)


def repeated(measure, repeat: int) -> tuple[float, int]:
    """Run ``measure()`` (returning wall seconds and peak RSS) ``repeat`` times: the median
    time, and the largest peak (memory targets hold at every run, not on average)."""
    return summarize([measure() for _ in range(repeat)])


def environment() -> str:
    """What the numbers were measured with."""
    from importlib.metadata import PackageNotFoundError, version

    def have(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    packages = ", ".join(f"{name} {have(name)}" for name in
                         ("arcoforge", "apache-beam", "xarray", "zarr", "numcodecs", "netCDF4", "google-cloud-storage"))
    return (f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB; {packages}")


def python_job(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def bake_arcoforge(corpus_dir: Path, nfiles: int, out: Path, workers: int, max_mem: str,
                   chunks: dict, extra_env: dict | None = None) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    seconds, peak, _ = run_measured(
        [sys.executable, "-m", "arcoforge.cli", "-q", "bake", str(HERE / "corpus_recipe.py"),
         "--target-root", str(out), "--num-workers", str(workers), "--max-mem", max_mem, "--no-stac"],
        env={"ARCOFORGE_BENCH_CORPUS": str(corpus_dir), "ARCOFORGE_BENCH_FILES": str(nfiles),
             "ARCOFORGE_BENCH_CHUNKS": json.dumps(chunks), **(extra_env or {})},
    )
    return seconds, peak


def bake_xarray(paths: list[str], out: Path, chunks: dict, codec: str) -> tuple[float, int]:
    """xarray.open_mfdataset(parallel=True) + .chunk(...).to_zarr(...), as users do it."""
    shutil.rmtree(out, ignore_errors=True)
    lines = [
        "import xarray as xr",
        f"ds = xr.open_mfdataset({paths!r}, engine='h5netcdf', parallel=True, combine='nested', concat_dim='time')",
        "enc = None",
    ]
    if codec == "blosc-lz4":
        lines += [
            "from zarr.codecs import BloscCodec",
            "enc = {v: {'compressors': [BloscCodec(cname='lz4', clevel=5, shuffle='shuffle')]} for v in ds.data_vars}",
        ]
    lines.append(f"ds.chunk({chunks!r}).to_zarr({str(out)!r}, mode='w', encoding=enc, consolidated=True)")
    seconds, peak, _ = run_measured([sys.executable, "-c", "\n".join(lines)])
    return seconds, peak


# How each raw read limit reads one variable (``dataset``, an h5py Dataset) whole.
_READ_WITH_H5PY = "dataset[...]"
_READ_WITH_LIBDEFLATE = """
size = int(np.prod(dataset.chunks)) * dataset.dtype.itemsize
for corner in np.ndindex(*(-(-n // c) for n, c in zip(dataset.shape, dataset.chunks))):
    offset = tuple(i * c for i, c in zip(corner, dataset.chunks))
    np.frombuffer(deflate.zlib_decompress(dataset.id.read_direct_chunk(offset)[1], size), dataset.dtype)
"""


def raw_read_limit(paths: list[str], libdeflate: bool = False) -> tuple[float, int]:
    """Read and inflate every byte of every input in 2 processes: the floor for reading.

    With h5py (HDF5 inflates with zlib), the floor for the usual stack; with ``libdeflate``,
    each stored chunk read as bytes and inflated by libdeflate, as arcoforge reads deflated
    NetCDF-4 chunks (arcoforge.hdf5_chunks): the floor for arcoforge's own reads.
    """
    body = textwrap.indent(textwrap.dedent(_READ_WITH_LIBDEFLATE if libdeflate else _READ_WITH_H5PY), " " * 24)
    return run_measured(python_job(f"""
        import h5py, numpy as np{", deflate" if libdeflate else ""}
        from concurrent.futures import ProcessPoolExecutor
        paths = {paths!r}
        def read(part):
            for p in part:
                with h5py.File(p, "r") as f:
                    for name in ("temperature", "wind_speed"):
                        dataset = f[name]
{body}
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(read, [paths[0::2], paths[1::2]]))
    """))[:2]


def raw_write_limit(nfiles: int, nlat: int, nlon: int, chunk: int, out: Path) -> tuple[float, int]:
    """Compress and write the output's bytes (Blosc LZ4) in 2 processes, data already in memory.

    Each process times only its writes, not making the data; the slower process counts.
    """
    shutil.rmtree(out, ignore_errors=True)
    _, peak, text = run_measured(python_job(f"""
        import sys, time
        sys.path.insert(0, {str(HERE)!r})
        import numpy as np, zarr
        from zarr.codecs import BloscCodec
        from concurrent.futures import ProcessPoolExecutor
        import corpus
        nfiles, nlat, nlon, chunk, out = {nfiles}, {nlat}, {nlon}, {chunk}, {str(out)!r}
        for name in ("temperature", "wind_speed"):
            zarr.create_array(out + "/" + name, shape=(nfiles, nlat, nlon), dtype="f4", chunks=(chunk, nlat, nlon),
                              compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")], overwrite=True)
        def write(worker):
            spent = 0.0
            for name in ("temperature", "wind_speed"):
                array = zarr.open_array(out + "/" + name, mode="r+", config={{"write_empty_chunks": True}})
                for start in range(worker * chunk, nfiles, 2 * chunk):
                    stop = min(start + chunk, nfiles)
                    block = np.stack([corpus._fields(d, nlat, nlon)[name == "wind_speed"] for d in range(start, stop)])
                    began = time.perf_counter()
                    array[start:stop] = block
                    spent += time.perf_counter() - began
            return spent
        with ProcessPoolExecutor(2) as pool:
            print("SPENT", max(pool.map(write, [0, 1])))
    """))
    return float(text.split("SPENT")[-1].split()[0]), peak


def verify(store: Path, paths: list[str], chunk: int) -> str:
    """Compare a store with its inputs, block by block; returns 'ok' or raises."""
    actual = xr.open_zarr(store)
    expected = xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time")
    assert actual.sizes == expected.sizes, (actual.sizes, expected.sizes)
    np.testing.assert_array_equal(actual.time.values, expected.time.values)
    for start in range(0, len(paths), chunk):
        block = slice(start, start + chunk)
        for name in ("temperature", "wind_speed"):
            a = actual[name].isel(time=block).values
            b = expected[name].isel(time=block).values
            if not np.array_equal(a, b, equal_nan=True):
                raise AssertionError(f"{store}: {name} differs from the inputs in time steps {block}")
    return "ok"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = [f"\n{title}", "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def table_one(args: argparse.Namespace, workdir: Path) -> str:
    corpus_dir = workdir / f"corpus-{args.nlat}x{args.nlon}"
    print(f"corpus: {args.files} files in {corpus_dir} ...", flush=True)
    paths = corpus.write_corpus(corpus_dir, args.files, args.nlat, args.nlon)
    nbytes = args.files * 2 * args.nlat * args.nlon * 4
    chunks = {"time": args.chunk}
    contenders = [
        ("arcoforge, 1 worker", lambda: bake_arcoforge(corpus_dir, args.files, workdir / "out-arcoforge-1", 1,
                                                        args.max_mem, chunks)),
        ("arcoforge, 2 workers", lambda: bake_arcoforge(corpus_dir, args.files, workdir / "out-arcoforge-2", 2,
                                                         args.max_mem, chunks)),
        ("xarray open_mfdataset + to_zarr, zarr default (zstd)",
         lambda: bake_xarray(paths, workdir / "out-xarray-zstd.zarr", chunks, "default")),
        ("xarray open_mfdataset + to_zarr, blosc-lz4",
         lambda: bake_xarray(paths, workdir / "out-xarray-lz4.zarr", chunks, "blosc-lz4")),
        ("raw limit: read + inflate (h5py, 2 procs)", lambda: raw_read_limit(paths)),
        ("raw limit: compress + write (Blosc LZ4, 2 procs)",
         lambda: raw_write_limit(args.files, args.nlat, args.nlon, args.chunk, workdir / "out-raw.zarr")),
        ("raw read with libdeflate (direct chunks, 2 procs)", lambda: raw_read_limit(paths, libdeflate=True)),
    ]
    # Round by round, every contender once a round: a stretch of minutes when the machine is
    # slower (it happens on shared VMs) then slows all of them alike instead of one.
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name, _ in contenders}
    for round_number in range(args.repeat):
        for name, measure in contenders:
            runs[name].append(measure())
            print(f"  round {round_number + 1}: {name}: {runs[name][-1][0]:.1f} s", flush=True)
    outputs = {"arcoforge, 1 worker": workdir / "out-arcoforge-1" / "bench.zarr",
               "arcoforge, 2 workers": workdir / "out-arcoforge-2" / "bench.zarr",
               "xarray open_mfdataset + to_zarr, zarr default (zstd)": workdir / "out-xarray-zstd.zarr",
               "xarray open_mfdataset + to_zarr, blosc-lz4": workdir / "out-xarray-lz4.zarr"}

    def result(name: str) -> Result:
        seconds, peak = summarize(runs[name])
        times = [t for t, _ in runs[name]]
        checked = verify(outputs[name], paths, args.chunk) if name in outputs else "-"
        return Result(name, seconds, peak, nbytes, checked, f"{min(times):.1f}-{max(times):.1f}")

    names = [name for name, _ in contenders]
    results = [result(name) for name in names[:6]]
    read, write = results[4], results[5]
    raw = read.seconds + write.seconds
    results.append(Result("raw limit: sum of the two", raw, max(read.peak_rss, write.peak_rss), nbytes))
    results.append(result(names[6]))
    raw_libdeflate = results[-1].seconds + write.seconds
    results.append(Result("raw limit with libdeflate reads: sum", raw_libdeflate,
                          max(results[-1].peak_rss, write.peak_rss), nbytes))

    baseline = results[2].seconds
    rows = [[r.name, f"{r.seconds:.1f}", r.spread, f"{r.peak_rss / MiB:,.0f}", f"{r.mb_per_s:,.0f}",
             f"{r.seconds / baseline:.2f}", r.verified] for r in results]
    text = print_table(
        f"Table 1: {args.files} daily files, 2 x float32 ({args.nlat}x{args.nlon}), zlib 4 "
        f"({nbytes / 1e9:.1f} GB uncompressed), target chunks time={args.chunk}, max_mem={args.max_mem}; "
        f"median wall of {args.repeat} interleaved rounds, largest peak",
        ["run", "wall s", "fastest-slowest s", "peak RSS MiB (tree)", "MB/s", "ratio to xarray", "output = inputs"],
        rows)
    best = min(results[0].seconds, results[1].seconds)
    text += (f"\n\nTargets: arcoforge/xarray = {best / baseline:.2f} (target <= 0.40); "
             f"arcoforge/raw limit = {best / raw:.2f} (target <= 1.5; "
             f"{best / raw_libdeflate:.2f} against the limit with libdeflate reads); "
             f"peak RSS {max(results[0].peak_rss, results[1].peak_rss) / MiB:,.0f} MiB "
             f"(target <= max_mem + 512 MiB)")
    print(text.rsplit("\n", 1)[-1], flush=True)
    return text


def table_two(args: argparse.Namespace, workdir: Path) -> str:
    rows = []
    corpus_dir = workdir / f"corpus-{args.nlat}x{args.nlon}"
    if args.scaling:
        for nfiles in (90, 180, 365):
            paths = corpus.write_corpus(corpus_dir, nfiles, args.nlat, args.nlon)
            out = workdir / "out-scaling"
            seconds, peak = repeated(
                lambda: bake_arcoforge(corpus_dir, nfiles, out, 2, args.max_mem, {"time": args.chunk}), args.repeat)
            ok = verify(out / "bench.zarr", paths, args.chunk)
            rows.append([f"{nfiles} files of {args.nlat}x{args.nlon}", f"{seconds:.1f}",
                         f"{seconds / nfiles * 1000:.0f}", f"{peak / MiB:,.0f}", ok])
            print(f"  {rows[-1][0]}: {seconds:.1f} s", flush=True)
    if args.wide:
        wide_dir = workdir / "corpus-3600x7200"
        print(f"wide corpus: 20 files in {wide_dir} ...", flush=True)
        paths = corpus.write_corpus(wide_dir, 20, 3600, 7200, hdf5_chunks=(1, 900, 1800))
        out = workdir / "out-wide"
        chunks = {"time": 20, "lat": 900, "lon": 1800}
        seconds, peak = repeated(lambda: bake_arcoforge(wide_dir, 20, out, 2, "1GB", chunks), args.repeat)
        ok = verify(out / "bench.zarr", paths, 5)
        rows.append(["20 files of 3600x7200, max_mem=1GB", f"{seconds:.1f}", f"{seconds / 20 * 1000:.0f}",
                     f"{peak / MiB:,.0f}", ok])
    return print_table(f"Table 2: scaling (arcoforge, 2 workers; median wall of {args.repeat} runs, largest peak)",
                       ["corpus", "wall s", "ms per file", "peak RSS MiB (tree)", "output = inputs"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=365)
    parser.add_argument("--nlat", type=int, default=720)
    parser.add_argument("--nlon", type=int, default=1440)
    parser.add_argument("--chunk", type=int, default=30, help="target chunk length along time")
    parser.add_argument("--max-mem", default="1GB")
    parser.add_argument("--workdir", default="/tmp/arcoforge-bench")
    parser.add_argument("--scaling", action="store_true", help="table 2: 90/180/365 files")
    parser.add_argument("--wide", action="store_true", help="table 2: 20 files of 3600x7200")
    parser.add_argument("--skip-table-one", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median wall, largest peak)")
    parser.add_argument("--output", help="also write the tables (markdown) to this file")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    text = f"Measured with {environment()}"
    print(text, flush=True)
    if not args.skip_table_one:
        text += table_one(args, workdir)
    if args.scaling or args.wide:
        text += "\n" + table_two(args, workdir)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
