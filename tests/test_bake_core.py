"""The bake core (arcoforge.core.bake) driven directly, without Beam, on a local store.

plan_bake decides one mode from the store's state (fresh, resume, append, resume an append, nothing new),
prepare_store / write_task / finalize follow it; the fingerprint is computed once per plan.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
import arcoforge.core.bake as core
from arcoforge.compressed_pickle import opened
from arcoforge.core import Mode, StoreSpec, cut_pieces, finalize, plan_bake, prepare_store, read_schema, write_task
from arcoforge.runtime.context import BakeContext
from arcoforge.io.state import StoreState, task_id

N_INPUTS, STEPS = 5, 2  # five inputs of two time steps each
URLS = [f"day{i}.nc" for i in range(N_INPUTS)]  # (only their pattern's combine_dims are used)


def dataset(i: int) -> xr.Dataset:
    time = pd.date_range("2000-01-01", periods=N_INPUTS * STEPS, freq="D")[i * STEPS:(i + 1) * STEPS]
    sst = np.arange(STEPS * 3 * 4, dtype="float32").reshape(STEPS, 3, 4) + 100 * i
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), sst, {"units": "K"})},
                    coords={"time": time, "lat": [0.0, 1.0, 2.0], "lon": [0.0, 1.0, 2.0, 3.0]})
    return ds


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list:
    """(index, dataset) of every input, written to netCDF and opened, the index from a pattern over all."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = [str(folder / f"day{i}.nc") for i in range(N_INPUTS)]
    for i, path in enumerate(paths):
        dataset(i).to_netcdf(path)
    pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=STEPS)
    elements = [(index, xr.open_dataset(url)) for index, url in pattern.items()]
    yield elements
    for _, ds in elements:
        ds.close()


def sources(elements: list) -> list[str]:
    return [ds.encoding["source"] for _, ds in elements]


def spec_for(tmp_path, inputs, **kwargs) -> StoreSpec:
    pattern = af.pattern_from_file_sequence(URLS, "time", nitems_per_file=STEPS)
    # Chunks of one input, and a budget of about one chunk per write task: one task per input.
    return StoreSpec(url=str(tmp_path / "s.zarr"), combine_dims=tuple(pattern.combine_dim_keys),
                     target_chunks={"time": STEPS}, max_mem=200, owner="test-owner", **kwargs)


def plan(spec: StoreSpec, elements: list):
    return plan_bake(spec, [read_schema(element, spec) for element in elements])


def tasks_of(bake, elements: list) -> dict:
    tasks: dict = {}
    for element in elements:
        for key, piece in cut_pieces(element, bake):
            tasks.setdefault(key, []).append(piece)
    return tasks


def run(spec: StoreSpec, elements: list, stop_after: int | None = None):
    """Plan, prepare, write the tasks (only ``stop_after`` of them: an interrupted bake), finalize."""
    bake = plan(spec, elements)
    prepare_store(bake)
    tasks = list(tasks_of(bake, elements).items())
    total = sum(write_task(task, bake) for task in tasks[:stop_after])
    if stop_after is None:
        finalize(total, bake)
    return bake, [key for key, _ in tasks[:stop_after]]


def expected(elements: list) -> xr.Dataset:
    return xr.concat([ds for _, ds in elements], "time")


def test_fresh_bake_reads_back_equal_and_a_rerun_resumes_with_all_done(tmp_path, inputs):
    spec = spec_for(tmp_path, inputs)
    bake, _ = run(spec, inputs)
    assert bake.mode is Mode.FRESH and bake.plan.n_tasks == N_INPUTS + 2  # sst: one per input; lat, lon
    xr.testing.assert_equal(xr.open_zarr(spec.url).load().drop_attrs(), expected(inputs).drop_attrs())
    assert StoreState(spec.url).ingested() == sources(inputs)

    again = plan(spec, inputs)
    assert again.mode is Mode.RESUME and len(again.plan.done) == again.plan.n_tasks
    assert tasks_of(again, inputs) == {}  # nothing left to write
    assert prepare_store(again) == spec.url and finalize(0, again) == spec.url
    xr.testing.assert_equal(xr.open_zarr(spec.url).load().drop_attrs(), expected(inputs).drop_attrs())


def test_an_interrupted_bake_resumes_with_its_tasks_done(tmp_path, inputs):
    spec = spec_for(tmp_path, inputs)
    _, written = run(spec, inputs, stop_after=2)
    with pytest.raises(Exception):  # nothing is published before finalize
        xr.open_zarr(spec.url)
    resumed = plan(spec, inputs)
    assert resumed.mode is Mode.RESUME
    assert resumed.plan.done == {task_id(*key) for key in written}
    left = tasks_of(resumed, inputs)
    assert len(left) == resumed.plan.n_tasks - 2 and not set(left) & set(written)
    prepare_store(resumed)  # a no-op: the template of the same plan is there
    finalize(sum(write_task(task, resumed) for task in left.items()), resumed)
    xr.testing.assert_equal(xr.open_zarr(spec.url).load().drop_attrs(), expected(inputs).drop_attrs())


def test_a_changed_plan_starts_fresh(tmp_path, inputs):
    spec = spec_for(tmp_path, inputs)
    run(spec, inputs, stop_after=1)
    # Provenance (who baked, when) changes no chunk: the bake resumes.
    assert plan(dataclasses.replace(spec, provenance={"recipe_id": "other"}), inputs).mode is Mode.RESUME
    assert plan(dataclasses.replace(spec, target_chunks={"time": 1}), inputs).mode is Mode.FRESH


def test_append_new_inputs_then_nothing_new(tmp_path, inputs):
    spec = spec_for(tmp_path, inputs, append_dim="time")
    first, _ = run(spec, inputs[:3])
    assert first.mode is Mode.FRESH  # no store yet: baked whole
    appended, _ = run(spec, inputs)
    assert appended.mode is Mode.APPEND and appended.plan.n_tasks == 2
    xr.testing.assert_equal(xr.open_zarr(spec.url).load().drop_attrs(), expected(inputs).drop_attrs())
    assert StoreState(spec.url).ingested() == sources(inputs)

    nothing = plan(spec, inputs)
    assert nothing.mode is Mode.NOTHING_NEW and nothing.fingerprint is None
    assert tasks_of(nothing, inputs) == {} and finalize(0, nothing) == spec.url


def test_an_interrupted_append_resumes(tmp_path, inputs):
    spec = spec_for(tmp_path, inputs, append_dim="time")
    run(spec, inputs[:3])
    _, written = run(spec, inputs, stop_after=1)
    xr.testing.assert_equal(xr.open_zarr(spec.url).load().drop_attrs(), expected(inputs[:3]).drop_attrs())
    resumed = plan(spec, inputs)
    assert resumed.mode is Mode.RESUME_APPEND and resumed.plan.done == {task_id(*key) for key in written}
    prepare_store(resumed)
    finalize(sum(write_task(task, resumed) for task in tasks_of(resumed, inputs).items()), resumed)
    xr.testing.assert_equal(xr.open_zarr(spec.url).load().drop_attrs(), expected(inputs).drop_attrs())


def test_one_fingerprint_and_one_store_state_per_bake(tmp_path, inputs, monkeypatch):
    prints, states = [], []

    def counted(document):
        prints.append(document)
        return real(document)

    class CountedState(StoreState):
        def __init__(self, *args, **kwargs):
            states.append(args)
            super().__init__(*args, **kwargs)

    real = core.fingerprint
    for module in ("arcoforge.core.bake", "arcoforge.io.zarr_store", "arcoforge.append_txn"):
        if hasattr(sys.modules[module], "fingerprint"):
            monkeypatch.setattr(sys.modules[module], "fingerprint", counted)
    monkeypatch.setattr(core, "StoreState", CountedState)
    spec = spec_for(tmp_path, inputs)
    bake, _ = run(spec, inputs)
    assert len(prints) == 1 and bake.fingerprint == real(prints[0])
    assert states == [(spec.url, None)]  # planned, prepared, five tasks written, finalized: one StoreState


def test_the_recipe_max_mem_wins_over_the_context(tmp_path):
    pattern = af.pattern_from_file_sequence(URLS, "time", nitems_per_file=STEPS)

    def budget(recipe_max_mem, context_max_mem):
        store = af.StoreToZarr(store_name="s.zarr", combine_dims=pattern.combine_dim_keys, max_mem=recipe_max_mem)
        return store.spec(BakeContext(target_root=str(tmp_path), max_mem=context_max_mem)).max_mem

    assert budget("100MB", "2GB") == 100_000_000  # the recipe's explicit value wins
    assert budget(None, "2GB") == 2_000_000_000  # else the context's (arcoforge bake --max-mem)
    assert budget(None, None) == 1_000_000_000  # else the default, 1GB


def test_the_core_does_not_import_beam():
    code = "import sys, arcoforge.core; assert 'apache_beam' not in sys.modules, 'the bake core imported Beam'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _open_files() -> set[str]:
    folder = "/proc/self/fd"
    paths = set()
    for fd in os.listdir(folder):
        try:
            paths.add(os.readlink(f"{folder}/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return paths


def test_what_is_kept_of_an_input_lets_its_file_close_and_cuts_the_same_pieces(tmp_path, inputs):
    """Inputs kept for cutting wait in batches (and Beam keeps the last one): kept as objects, each held its
    file open, ~0.6 MB of netCDF-C and HDF5 a file in every reading worker (issue 16)."""
    spec = spec_for(tmp_path, inputs)
    bake = plan(spec, inputs)
    index, _ = inputs[1]
    path = str(tmp_path / "day1-again.nc")  # a file of its own: the fixture holds its inputs open
    dataset(1).to_netcdf(path)
    ds = xr.open_dataset(path)  # lazily: its variables read from the open file when cut
    assert path in _open_files()
    kept = core.keep_variables((index, ds), spec)
    del ds
    gc.collect()
    assert path not in _open_files()  # nothing kept holds it open
    cut = list(cut_pieces((index, opened(kept[1])), bake))
    direct = list(cut_pieces(inputs[1], bake))
    assert [key for key, _ in cut] == [key for key, _ in direct] and cut
    for (_, piece), (_, reference) in zip(cut, direct):
        for name, values in piece[1].items():
            np.testing.assert_array_equal(np.asarray(values), np.asarray(reference[1][name]))
