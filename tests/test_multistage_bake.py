"""A deep rechunk baked in two stages: the same bytes as one pass, what xarray reads, and resumable mid-stage.

24 one-step zlib netCDF inputs of 12x16 into chunks of time=24, lat=2, lon=2 with
a budget that makes 8 write tasks across the map: one pass would inflate every
input 8 times, so the plan stages it through an intermediate in the state folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.core import StoreSpec, cut_pieces, finalize, plan_bake, prepare_store, read_schema, write_task
from arcoforge.core.bake import Mode, stage_two_keys, write_stage_two
from arcoforge.core.stages import STAGE_ONE, intermediate_url, stage_one_work
from arcoforge.io.state import state_url

N, NLAT, NLON = 24, 12, 16
CHUNKS = {"time": N, "lat": 2, "lon": 2}
MAX_MEM = 5000  # bytes: write tasks of (24, 6, 4), 8 of them; stage-1 tasks of 3 whole inputs


def dataset(day: int) -> xr.Dataset:
    rng = np.random.default_rng(day)
    temperature = rng.normal(280, 5, (1, NLAT, NLON)).round(2).astype("float32")
    temperature[0, day % NLAT, :3] = np.nan
    wind = rng.gamma(2, 2, (1, NLAT, NLON)).astype("float32")
    ds = xr.Dataset(
        {"temperature": (("time", "lat", "lon"), temperature, {"units": "K"}),
         "wind": (("time", "lat", "lon"), wind, {"units": "m s-1"}),
         "mask": (("lat", "lon"), (np.arange(NLAT * NLON).reshape(NLAT, NLON) % 3).astype("int8"))},
        coords={"time": pd.date_range("2001-01-01", periods=N, freq="D")[day:day + 1],
                "lat": np.linspace(-60, 60, NLAT), "lon": np.linspace(0, 350, NLON)},
    )
    for name in ("temperature", "wind"):
        ds[name].encoding.update(zlib=True, complevel=4, chunksizes=(1, NLAT, NLON))
    return ds


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("days")
    found = []
    for day in range(N):
        path = str(folder / f"day-{day:02d}.nc")
        dataset(day).to_netcdf(path, engine="h5netcdf")
        found.append(path)
    return found


def recipe(paths: list[str], root: Path, name: str, **kwargs) -> beam.PTransform:
    pattern = af.pattern_from_file_sequence(paths, "time")
    return (beam.Create(pattern.items()) | af.OpenWithXarray()
            | af.StoreToZarr(target_root=str(root), store_name=name, combine_dims=pattern.combine_dim_keys,
                             target_chunks=CHUNKS, max_mem=MAX_MEM, **kwargs))


def chunk_files(store: Path) -> dict[str, bytes]:
    """Every chunk of the store's arrays, by key (metadata left out: it records the bake's time)."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and "/c/" in f"/{p.relative_to(store)}".replace(os.sep, "/")}


@pytest.fixture(scope="module")
def baked(paths, tmp_path_factory) -> Path:
    """One Beam run baking the same inputs twice: in two stages (the default here) and in one pass."""
    root = tmp_path_factory.mktemp("out")
    with beam.Pipeline() as pipeline:
        _ = pipeline | "staged" >> recipe(paths, root, "staged.zarr")
        _ = pipeline | "one pass" >> recipe(paths, root, "one.zarr", multistage_threshold=None)
    return root


def test_two_stages_write_the_bytes_of_one_pass_and_what_xarray_reads(baked, paths):
    staged, one = chunk_files(baked / "staged.zarr"), chunk_files(baked / "one.zarr")
    assert len(staged) == 3 * 6 * 8 + 3  # temperature, wind, mask (6x8 chunks each), time/lat/lon
    assert staged == one
    result = xr.open_zarr(baked / "staged.zarr").load()
    assert result.temperature.encoding["chunks"] == (24, 2, 2)
    with xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time",
                           data_vars="minimal", coords="minimal", compat="override") as reference:
        reference = reference.load()
        for name in ("temperature", "wind", "mask"):
            xr.testing.assert_identical(result[name], reference[name])
    state = Path(state_url(str(baked / "staged.zarr")))
    recorded = json.loads((state / "plan.json").read_text())["plan"]
    assert recorded["stages"] == {"temperature": [[3, 6, 4], [3, 12, 16]]}  # it was baked in two stages
    assert "stages" not in json.loads((Path(state_url(str(baked / "one.zarr"))) / "plan.json").read_text())["plan"]
    assert not (state / "stage1").exists()  # and the intermediate is gone


def _elements(paths: list[str]) -> list:
    pattern = af.pattern_from_file_sequence(paths, "time")
    return [(index, xr.open_dataset(url, engine="h5netcdf")) for index, url in pattern.items()]


def test_a_staged_bake_killed_in_either_stage_resumes_to_the_same_store(baked, paths, tmp_path):
    elements = _elements(paths)
    pattern = af.pattern_from_file_sequence(paths, "time")
    spec = StoreSpec(url=str(tmp_path / "staged.zarr"), combine_dims=tuple(pattern.combine_dim_keys),
                     target_chunks=CHUNKS, max_mem=MAX_MEM, owner="test")

    def planned():
        return plan_bake(spec, [read_schema(element, spec) for element in elements])

    def stage_one_tasks(bake) -> dict:
        tasks: dict = {}
        for element in elements:
            for key, piece in cut_pieces(element, bake):
                tasks.setdefault(key, []).append(piece)
        return tasks

    bake = planned()
    assert stage_one_work(bake.plan) == (8, 2 * N * NLAT * NLON * 4)  # for progress: stage 1's tasks and bytes
    stage = bake.plan.stages["temperature"]
    assert (stage.one_pass, stage.staged, stage.intermediate, stage.stage1_task) == (8.0, 3.0, (3, 6, 4), (3, 12, 16))
    assert bake.plan.groups["temperature"] == ["temperature", "wind"] and "mask" not in bake.plan.stages
    prepare_store(bake)
    first = stage_one_tasks(bake)
    stage_one = sorted(key for key in first if key[0].startswith(STAGE_ONE))
    assert len(stage_one) == 8 and any(key[0] == "mask" for key in first)  # 8 of 3 inputs; mask: one pass
    for key in stage_one[:3]:  # killed in stage 1
        write_task((key, first[key]), bake)

    bake = planned()
    assert bake.mode is Mode.RESUME and len(bake.plan.done) == 3
    assert stage_one_work(bake.plan)[0] == 5 + 3
    again = stage_one_tasks(bake)
    assert sorted(k for k in again if k[0].startswith(STAGE_ONE)) == stage_one[3:]
    for key, pieces in again.items():
        write_task((key, pieces), bake)
    keys = stage_two_keys(bake)
    assert len(keys) == 8
    for key in keys[:5]:  # killed in stage 2
        write_stage_two(key, bake)

    bake = planned()
    assert bake.mode is Mode.RESUME
    assert stage_two_keys(bake) == keys[5:] and not stage_one_tasks(bake)  # stage 1 is not read again
    for key in stage_two_keys(bake):
        write_stage_two(key, bake)
    assert Path(intermediate_url(bake.plan)).exists()
    finalize(0, bake)
    assert not Path(intermediate_url(bake.plan)).exists()
    assert chunk_files(tmp_path / "staged.zarr") == chunk_files(baked / "one.zarr")
    assert zarr.open_group(str(tmp_path / "staged.zarr"), mode="r")["wind"].shape == (N, NLAT, NLON)
    for _, ds in elements:
        ds.close()


RECIPE = """
import apache_beam as beam
import arcoforge as af

pattern = af.pattern_from_file_sequence({paths!r}, "time")
recipe = (beam.Create(pattern.items()) | af.OpenWithXarray()
          | af.StoreToZarr(store_name="staged.zarr", combine_dims=pattern.combine_dim_keys,
                           target_chunks={chunks!r}, max_mem={max_mem}))
"""


def test_a_staged_bake_killed_by_sigkill_in_either_stage_reruns_to_the_same_bytes(baked, paths, tmp_path):
    import signal
    import subprocess
    import sys

    recipe_file = tmp_path / "recipe.py"
    recipe_file.write_text(RECIPE.format(paths=paths, chunks=CHUNKS, max_mem=MAX_MEM))
    src = str(Path(af.__file__).parents[1])

    def start(target: Path, fault: str | None) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": src}
        env.pop("ARCOFORGE_FAULT_AT", None)
        if fault:
            env["ARCOFORGE_FAULT_AT"] = fault
        return subprocess.Popen([sys.executable, "-m", "arcoforge.cli", "-q", "bake", str(recipe_file),
                                 "--target-root", str(target), "--no-stac"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Killed in the middle of stage 1 (into the intermediate), and in stage 2 (from it), two at a time.
    faults = {"stage-1": "bake.stage1#3", "stage-2": "bake.task#5"}
    killed = {name: start(tmp_path / name, fault) for name, fault in faults.items()}
    for name, process in killed.items():
        _, err = process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL, (name, err[-2000:])
        assert not (tmp_path / name / "staged.zarr" / "zarr.json").exists()  # readers see no store yet
    def done(name: str, group: str) -> int:
        folder = Path(state_url(str(tmp_path / name / "staged.zarr"))) / "done" / group
        return len(list(folder.iterdir())) if folder.exists() else 0

    # where each died: 3 of 8 stage-1 tasks written; all 8, then 2 stage-2 tasks
    assert (done("stage-1", ".stage1/temperature"), done("stage-1", "temperature")) == (3, 0)
    assert (done("stage-2", ".stage1/temperature"), done("stage-2", "temperature")) == (8, 2)
    reruns = {name: start(tmp_path / name, None) for name in faults}
    for name, process in reruns.items():
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, (name, err[-2000:])
        assert chunk_files(tmp_path / name / "staged.zarr") == chunk_files(baked / "one.zarr"), name
        assert not (Path(state_url(str(tmp_path / name / "staged.zarr"))) / "stage1").exists()


def test_stage_two_decodes_its_region_into_the_task_buffer_from_an_lz4_intermediate(baked, paths, tmp_path):
    from arcoforge.core.stages import stage_two_pieces
    from arcoforge.rechunk import TaskBuffer, assemble_task

    elements = _elements(paths)
    pattern = af.pattern_from_file_sequence(paths, "time")
    spec = StoreSpec(url=str(tmp_path / "staged.zarr"), combine_dims=tuple(pattern.combine_dim_keys),
                     target_chunks=CHUNKS, max_mem=MAX_MEM, owner="test")
    bake = plan_bake(spec, [read_schema(element, spec) for element in elements])
    prepare_store(bake)
    tasks: dict = {}
    for element in elements:
        for key, piece in cut_pieces(element, bake):
            tasks.setdefault(key, []).append(piece)
    for key in [k for k in tasks if k[0].startswith(STAGE_ONE)]:
        write_task((key, tasks[key]), bake)
    intermediate = zarr.open_group(intermediate_url(bake.plan), mode="r")
    codec = intermediate["wind"].metadata.codecs[-1]
    assert (type(codec).__name__, codec.cname.value, codec.shuffle.value) == ("BloscCodec", "lz4", "shuffle")

    one = zarr.open_group(str(baked / "one.zarr"), mode="r")
    buffer, grid = TaskBuffer(), bake.plan.grids["temperature"]
    dtypes = {"temperature": np.dtype("float32"), "wind": np.dtype("float32")}
    for key in stage_two_keys(bake)[:3]:
        for name, region, values in assemble_task(key, stage_two_pieces(key, bake.plan), grid, dtypes, buffer):
            assert values is buffer.get(values.shape, values.dtype)  # decoded in place: no array of its own
            np.testing.assert_array_equal(values, one[name][region])
    for _, ds in elements:
        ds.close()
