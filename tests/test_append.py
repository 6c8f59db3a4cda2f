"""Appending new inputs to a published store, idempotently, with checks before anything is written."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.demo import write_demo_archive
from arcoforge.io.state import StoreState


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    return write_demo_archive(tmp_path_factory.mktemp("days"), ndays=10, nlat=6, nlon=12, start=dt.date(2001, 2, 20))


def recipe(paths, target, **kwargs):
    pattern = af.pattern_from_file_sequence(paths, "time")
    return (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.StoreToZarr(target_root=str(target), store_name="a.zarr", combine_dims=pattern.combine_dim_keys,
                         target_chunks={"time": 4}, append_dim="time", **kwargs)
    )


def reference(paths):
    return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time").load()


def chunk_mtimes(store):
    return {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "c" in p.parts}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_append_then_append_again_is_a_no_op(tmp_path, days, zarr_format):
    af.run_local(recipe(days[:6], tmp_path, zarr_format=zarr_format))
    store = tmp_path / "a.zarr"
    units = xr.open_zarr(store).time.encoding["units"]
    af.run_local(recipe(days, tmp_path, zarr_format=zarr_format))  # the pattern grew by 4 days
    appended = xr.open_zarr(store)
    xr.testing.assert_equal(appended.load().drop_attrs(), reference(days).drop_attrs())
    assert appended.time.encoding["units"] == units  # new days counted from the store's epoch
    # still one chunk: baked with room for 12 (6 x 2, rounded up to a power of two: 16)
    assert zarr.open_group(str(store), mode="r")["time"].chunks == (16,)
    assert StoreState(str(store)).ingested() == days

    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name not in ("zarr.json", ".zmetadata")}
    af.run_local(recipe(days, tmp_path, zarr_format=zarr_format))
    after = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name not in ("zarr.json", ".zmetadata")}
    assert after == before


def write_day(path, day, **changes):
    ds = xr.open_dataset(day, engine="h5netcdf").load()
    for name, value in changes.items():
        value(ds)
    ds.to_netcdf(path, engine="h5netcdf")
    return str(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ds: ds.drop_vars("sea_ice_fraction"), r"lack variables \['sea_ice_fraction'\]"),
        (lambda ds: ds.__setitem__("sea_ice_fraction", ds.sea_ice_fraction.astype("float64")), "has dtype float64"),
        (lambda ds: ds.analysed_sst.encoding.update(scale_factor=0.02), "changes its encoding: scale_factor"),
    ],
)
def test_inputs_that_change_the_store_are_refused_before_writing(tmp_path, days, change, message):
    af.run_local(recipe(days[:6], tmp_path))
    store = tmp_path / "a.zarr"
    before = chunk_mtimes(store)

    def changed(ds):
        result = change(ds)
        return result if isinstance(result, xr.Dataset) else ds

    bad = tmp_path / "bad.nc"
    ds = xr.open_dataset(days[6], engine="h5netcdf").load()
    ds = changed(ds)
    ds.to_netcdf(bad, engine="h5netcdf")
    with pytest.raises(Exception, match=message):
        af.run_local(recipe(days[:6] + [str(bad)], tmp_path))
    assert chunk_mtimes(store) == before
    assert xr.open_zarr(store).sizes["time"] == 6
    assert StoreState(str(store)).read_json("lease.json") is None  # released: nothing was written


def test_overlapping_or_backwards_time_is_refused(tmp_path, days):
    af.run_local(recipe(days[:6], tmp_path))
    # a "new" file whose day is one the store has
    with pytest.raises(Exception, match=r"along 'time': values .* overlap the store, which ends at"):
        af.run_local(recipe(days[:6] + [write_day(tmp_path / "dup.nc", days[3])], tmp_path))
    assert xr.open_zarr(tmp_path / "a.zarr").sizes["time"] == 6


def test_appending_to_an_unfinished_store_is_refused(tmp_path, days):
    af.run_local(recipe(days[:6], tmp_path))
    StoreState(str(tmp_path / "a.zarr")).remove("complete.json")  # as if that bake had died
    with pytest.raises(Exception, match="its bake did not complete; run that bake again"):
        af.run_local(recipe(days, tmp_path))


def test_cli_append_flag(tmp_path, days):
    from arcoforge.cli import main

    (tmp_path / "r.py").write_text(
        "import apache_beam as beam\n"
        "from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence\n"
        f"pattern = pattern_from_file_sequence({days[:7]!r}, 'time')\n"
        "recipe = (beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray()\n"
        "          | StoreToZarr(store_name='a.zarr', combine_dims=pattern.combine_dim_keys))\n"
    )
    target = tmp_path / "out"
    assert main(["-q", "bake", str(tmp_path / "r.py"), "--target-root", str(target), "--no-stac"]) == 0
    first_chunk = next((target / "a.zarr" / "analysed_sst" / "c").rglob("*"))
    while first_chunk.is_dir():
        first_chunk = next(first_chunk.iterdir())
    written = first_chunk.stat().st_mtime_ns
    (tmp_path / "r.py").write_text((tmp_path / "r.py").read_text().replace(repr(days[:7]), repr(days)))
    assert main(["-q", "bake", str(tmp_path / "r.py"), "--target-root", str(target), "--no-stac", "--append"]) == 0
    np.testing.assert_array_equal(xr.open_zarr(target / "a.zarr").time.values, reference(days).time.values)
    assert first_chunk.stat().st_mtime_ns == written  # appended, not baked again
    assert StoreState(str(target / "a.zarr")).ingested() == days


def test_an_append_interrupted_after_its_journal_resumes_and_writes_the_old_stores_partial_chunk_once(
        tmp_path, days, monkeypatch):
    """6 days in chunks of 4: the append rewrites chunk 1 (days 4-5 and the new 6-7) and adds chunk 2."""
    af.run_local(recipe(days[:6], tmp_path))
    import arcoforge.append_txn

    def interrupt(step):
        if step == "append.journal":
            raise KeyboardInterrupt("interrupted after the journal")

    monkeypatch.setattr(arcoforge.append_txn, "checkpoint", interrupt)
    with pytest.raises(BaseException, match="interrupted after the journal"):
        af.run_local(recipe(days, tmp_path, break_lease=True))
    state = StoreState(str(tmp_path / "a.zarr"))
    assert state.read_json("append.json")["new_lengths"] == {"time": 10}
    assert xr.open_zarr(tmp_path / "a.zarr").sizes["time"] == 6  # readers still see the old store
    monkeypatch.undo()
    af.run_local(recipe(days, tmp_path, break_lease=True))  # resumes the same append
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "a.zarr").load().drop_attrs(), reference(days).drop_attrs())
    assert state.read_json("append.json") is None and state.ingested() == days


def test_an_append_to_an_object_store_interrupted_before_its_commit_is_rolled_back_by_the_next_day(
        days, s3, s3_filesystem, monkeypatch):
    """On S3 (moto): the saved chunk put back, the new chunks deleted, the next day's append takes both days."""
    import arcoforge.append_txn
    from arcoforge.runtime.context import use_runtime_defaults

    options, bucket = s3
    target = f"s3://{bucket}/stores"

    def run(paths, **kwargs):
        with use_runtime_defaults(storage_options=options):
            af.run_local(recipe(paths, target, **kwargs))

    def interrupt(step):
        if step == "append.coordinate":
            raise KeyboardInterrupt("interrupted before the commit")

    run(days[:6])
    store = f"{target}/a.zarr"
    fs = s3_filesystem(options)
    before = {path: fs.cat_file(path) for path in fs.find(store)}
    monkeypatch.setattr(arcoforge.append_txn, "checkpoint", interrupt)
    with pytest.raises(BaseException, match="interrupted before the commit"):
        run(days[:9], break_lease=True)
    monkeypatch.undo()
    assert xr.open_zarr(store, storage_options=options).sizes["time"] == 6  # readers still see the old store
    fs = s3_filesystem(options)
    assert set(fs.find(store)) > set(before)  # chunks beyond the old extent were written

    # What the next bake does first (another plan): the store is byte for byte the one before.
    state = StoreState(store, options)
    arcoforge.append_txn.roll_back(state, state.read_json("append.json"), options)
    fs = s3_filesystem(options)
    assert {path: fs.cat_file(path) for path in fs.find(store)} == before

    run(days, break_lease=True)  # the next day's append takes the rolled-back days too
    appended = xr.open_zarr(store, storage_options=options).load()
    xr.testing.assert_equal(appended.drop_attrs(), reference(days).drop_attrs())
    assert state.ingested() == days and state.read_json("append.json") is None


def test_the_inputs_of_a_store_baked_by_an_older_version_are_still_read(tmp_path):
    state = StoreState(str(tmp_path / "old.zarr"))
    state.write_json("complete.json", {"lengths": {"time": 2}})
    state.write_json("ingested.json", {"urls": ["a.nc", "b.nc"]})  # where older versions kept them
    assert state.ingested() == ["a.nc", "b.nc"]
    state.mark_complete({"lengths": {"time": 3}, "ingested": ["a.nc", "b.nc", "c.nc"]})
    assert state.ingested() == ["a.nc", "b.nc", "c.nc"] and state.read_json("ingested.json") is None
