"""Recipes run for real on Beam's local runner, stores read back and compared with the inputs."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.runtime.pipeline_options import local_pipeline_options
from arcoforge.runtime.runners import local_runner


def pgf_recipe(pattern, target_root, **store_kwargs):
    """A recipe written the pangeo-forge-recipes 0.10 way."""
    return (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.StoreToZarr(target_root=target_root, combine_dims=pattern.combine_dim_keys, **store_kwargs)
        | af.ConsolidateDimensionCoordinates()
        | af.ConsolidateMetadata()
    )


def reference(paths, **kwargs):
    return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override", **kwargs)


def assert_same_dataset(store, expected):
    actual = xr.open_zarr(store)
    xr.testing.assert_equal(actual.load(), expected.load())
    for name in expected.variables:
        assert actual[name].attrs == {k: v for k, v in expected[name].attrs.items()}, name
    return actual


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("num_workers", [1, 2])
def test_daily_archive_equals_open_mfdataset(tmp_path, daily_archive, zarr_format, num_workers):
    pattern = af.pattern_from_file_sequence(daily_archive, "time", nitems_per_file=1)
    af.run_local(pgf_recipe(pattern, str(tmp_path), store_name="sst.zarr", target_chunks={"time": 5},
                            zarr_format=zarr_format), num_workers=num_workers)
    store = tmp_path / "sst.zarr"
    expected = reference(daily_archive)
    actual = assert_same_dataset(store, expected)

    # Times decode to the same instants although every file had its own epoch.
    np.testing.assert_array_equal(actual.time.values, expected.time.values)
    assert actual.time.encoding["units"].startswith("hours since 2000-02-24")
    # Packing and fill value survive.
    enc = actual.analysed_sst.encoding
    assert (np.dtype(enc["dtype"]), enc["scale_factor"], enc["add_offset"], enc["_FillValue"]) == (
        np.dtype("int16"), 0.01, 273.15, -32768)
    assert actual.sea_ice_fraction.isnull().any()  # the land mask
    # Chunks: 5 steps of data, coordinates in one chunk, and consolidated metadata.
    group = zarr.open_group(str(store), mode="r")
    assert group["analysed_sst"].chunks == (5, 12, 24)
    assert group["time"].chunks == (32,)  # one chunk, with room to append (12 x 2, rounded up to 2**5)
    assert group.metadata.zarr_format == zarr_format
    if zarr_format == 2:
        assert (store / ".zmetadata").exists()
        assert group["analysed_sst"].attrs["_ARRAY_DIMENSIONS"] == ["time", "lat", "lon"]
    else:
        assert json.loads((store / "zarr.json").read_text())["consolidated_metadata"] is not None
        assert group["analysed_sst"].metadata.dimension_names == ("time", "lat", "lon")


def write_monthly(directory, nyears, nlat=4):
    """Files of 12 monthly steps each, for chunks that do not align with files."""
    paths = []
    for year in range(nyears):
        time = xr.date_range(f"{2000 + year}-01-01", periods=12, freq="MS", use_cftime=True, calendar="noleap")
        ds = xr.Dataset(
            {"pr": (("time", "lat"), np.random.default_rng(year).random((12, nlat)).astype("f4"))},
            coords={"time": time, "lat": np.arange(nlat, dtype="f8")},
        )
        ds.time.encoding.update(units="days since 1850-01-01", calendar="noleap")
        path = os.path.join(directory, f"pr_{2000 + year}.nc")
        ds.to_netcdf(path, engine="h5netcdf")
        paths.append(path)
    return paths


def test_twelve_steps_per_file_into_five_step_chunks(tmp_path):
    paths = write_monthly(tmp_path, 3)
    pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=12)
    af.run_local(pgf_recipe(pattern, str(tmp_path / "out"), store_name="pr.zarr", target_chunks={"time": 5}))
    store = tmp_path / "out" / "pr.zarr"
    actual = assert_same_dataset(store, reference(paths))
    assert actual.time.encoding["calendar"] == "noleap"
    assert zarr.open_group(str(store), mode="r")["pr"].chunks == (5, 4)


def test_merge_dim_with_a_preprocessor(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for variable in ("tas", "pr"):
        for year in (2000, 2001):
            time = xr.date_range(f"{year}-01-01", periods=4, freq="D")
            ds = xr.Dataset({variable: (("time", "lat"), rng.random((4, 3)))},
                            coords={"time": time, "lat": [0.0, 1.0, 2.0]})
            ds["scratch"] = ("lat", [9, 9, 9])
            paths[variable, year] = str(tmp_path / f"{variable}_{year}.nc")
            ds.to_netcdf(paths[variable, year], engine="h5netcdf")

    pattern = af.FilePattern(lambda variable, time: paths[variable, time],
                             af.MergeDim("variable", ["tas", "pr"]), af.ConcatDim("time", [2000, 2001]))

    def drop_scratch(index, ds):
        return ds.drop_vars("scratch")

    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.Preprocess(drop_scratch)
        | af.StoreToZarr(target_root=str(tmp_path / "out"), store_name="m.zarr",
                         combine_dims=pattern.combine_dim_keys)
    )
    af.run_local(recipe)
    expected = xr.merge([reference([paths[v, 2000], paths[v, 2001]]).drop_vars("scratch") for v in ("tas", "pr")])
    assert_same_dataset(tmp_path / "out" / "m.zarr", expected)


def test_netcdf3_and_hdf5_group_inputs(tmp_path):
    time = xr.date_range("2000-01-01", periods=6, freq="D")
    ds = xr.Dataset({"t": (("time", "x"), np.arange(12.0).reshape(6, 2))}, coords={"time": time, "x": [0, 1]})
    nc3 = [str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]
    ds.isel(time=slice(0, 3)).to_netcdf(nc3[0], format="NETCDF3_64BIT", engine="scipy")
    ds.isel(time=slice(3, 6)).to_netcdf(nc3[1], format="NETCDF3_64BIT", engine="scipy")
    pattern = af.pattern_from_file_sequence(nc3, "time", file_type="netcdf3")
    af.run_local(pgf_recipe(pattern, str(tmp_path / "o3"), store_name="n3.zarr"))
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "o3" / "n3.zarr").load(), ds)

    grouped = [str(tmp_path / "g1.h5"), str(tmp_path / "g2.h5")]
    ds.isel(time=slice(0, 3)).to_netcdf(grouped[0], group="science/grid", engine="h5netcdf")
    ds.isel(time=slice(3, 6)).to_netcdf(grouped[1], group="science/grid", engine="h5netcdf")
    pattern = af.pattern_from_file_sequence(grouped, "time", file_type="netcdf4")
    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type, xarray_open_kwargs={"group": "science/grid"})
        | af.StoreToZarr(target_root=str(tmp_path / "og"), store_name="g.zarr", combine_dims=pattern.combine_dim_keys)
    )
    af.run_local(recipe)
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "og" / "g.zarr").load(), ds)


def test_recipe_applied_inside_a_plain_beam_pipeline(tmp_path, daily_archive):
    """As pangeo-forge recipes are run: Beam's default runner, no arcoforge runner code."""
    pattern = af.pattern_from_file_sequence(daily_archive[:4], "time")
    recipe = pgf_recipe(pattern, str(tmp_path), store_name="p.zarr")
    with beam.Pipeline(options=local_pipeline_options()) as p:
        p | recipe
    assert_same_dataset(tmp_path / "p.zarr", reference(daily_archive[:4]))


def test_target_root_may_come_from_the_runtime(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive[:2], "time")
    with pytest.raises(af.RecipeError, match="no target_root.*--target-root"):
        af.run_local(pgf_recipe(pattern, None, store_name="late.zarr"))
    with af.use_runtime_defaults(target_root=str(tmp_path)):
        af.run_local(pgf_recipe(pattern, None, store_name="late.zarr"))
    assert (tmp_path / "late.zarr").exists()


def test_encoding_overrides_and_attrs(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive[:3], "time")
    recipe = pgf_recipe(
        pattern, str(tmp_path), store_name="e.zarr", attrs={"project": "arcoforge"},
        encoding={"time": {"units": "days since 1999-01-01"}, "sea_ice_fraction": {"dtype": "float64"}},
    )
    af.run_local(recipe)
    actual = xr.open_zarr(tmp_path / "e.zarr")
    assert actual.attrs["project"] == "arcoforge"
    assert actual.time.encoding["units"] == "days since 1999-01-01"
    assert actual.sea_ice_fraction.encoding["dtype"] == np.dtype("float64")
    xr.testing.assert_equal(actual.load(), reference(daily_archive[:3]).load())


def test_bad_encoding_override_names_the_variable(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive[:2], "time")
    recipe = pgf_recipe(pattern, str(tmp_path), store_name="bad.zarr", encoding={"nope": {"dtype": "f4"}})
    with pytest.raises(Exception, match="encoding names variable 'nope'"):
        af.run_local(recipe)
    assert not (tmp_path / "bad.zarr").exists()


def test_consolidate_dimension_coordinates_rewrites_chunked_coordinates(tmp_path):
    ds = xr.Dataset({"v": ("time", np.arange(10.0))}, coords={"time": np.arange(10)})
    store = str(tmp_path / "chunked.zarr")
    ds.to_zarr(store, zarr_format=3, consolidated=True,
               encoding={"time": {"chunks": (3,)}, "v": {"chunks": (3,)}})
    assert zarr.open_group(store, mode="r")["time"].chunks == (3,)
    with beam.Pipeline(runner=local_runner(1), options=local_pipeline_options()) as p:
        p | beam.Create([store]) | af.ConsolidateDimensionCoordinates()
    group = zarr.open_group(store, mode="r")
    assert group["time"].chunks == (10,)
    assert group["v"].chunks == (3,)
    xr.testing.assert_identical(xr.open_zarr(store).load(), ds)


def test_shards_are_written_whole_by_one_worker_each(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive, "time")
    recipe = pgf_recipe(pattern, str(tmp_path), store_name="sharded.zarr",
                        target_chunks={"time": 2, "lat": 6}, target_shards={"time": 6, "lat": -1})
    af.run_local(recipe, num_workers=2)
    group = zarr.open_group(str(tmp_path / "sharded.zarr"), mode="r")
    assert group["analysed_sst"].chunks == (2, 6, 24)
    assert group["analysed_sst"].shards == (6, 12, 24)
    assert_same_dataset(tmp_path / "sharded.zarr", reference(daily_archive))


def test_shards_need_zarr_v3(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive[:2], "time")
    with pytest.raises(Exception, match="target_shards needs zarr_format=3"):
        af.run_local(pgf_recipe(pattern, str(tmp_path), store_name="s2.zarr", zarr_format=2,
                                target_shards={"time": 2}))
    assert not (tmp_path / "s2.zarr").exists()


def test_a_small_max_mem_splits_tasks_and_keeps_every_value(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive, "time")
    # one (time=5, lat=3, lon=24) chunk of packed float64 sst (3 x 8 bytes an element at work)
    # and of float32 ice (2 x 4): tasks of two chunks, each variable on its own
    unit_bytes = 5 * 3 * 24 * 3 * 8
    recipe = pgf_recipe(pattern, str(tmp_path), store_name="small.zarr",
                        target_chunks={"time": 5, "lat": 3}, max_mem=2 * unit_bytes)
    af.run_local(recipe)
    assert_same_dataset(tmp_path / "small.zarr", reference(daily_archive))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_chunks_of_fill_values_only_are_written_too(tmp_path, zarr_format):
    """A missing chunk must only ever mean "not written yet": an all-NaN chunk is stored as well."""
    paths = []
    for day in range(4):
        ds = xr.Dataset(
            {"land": (("time", "lat"), np.full((1, 6), np.nan, "f4")),
             "sst": (("time", "lat"), np.arange(6, dtype="f4")[None] + day)},
            coords={"time": [day], "lat": np.arange(6.0)},
        )
        paths.append(str(tmp_path / f"day{day}.nc"))
        ds.to_netcdf(paths[-1], engine="h5netcdf")
    pattern = af.pattern_from_file_sequence(paths, "time")
    af.run_local(pgf_recipe(pattern, str(tmp_path), store_name="fill.zarr", zarr_format=zarr_format,
                            target_chunks={"time": 2, "lat": 3}))
    store = tmp_path / "fill.zarr"
    for name in ("land", "sst"):
        chunk_files = [p for p in (store / name).rglob("*") if p.is_file() and not p.name.startswith((".z", "zarr"))]
        assert len(chunk_files) == 4, (name, chunk_files)
    assert_same_dataset(store, reference(paths))


def test_a_chunk_larger_than_max_mem_is_refused_before_writing(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive[:2], "time")
    with pytest.raises(Exception, match=r"one write unit .* more than max_mem"):
        af.run_local(pgf_recipe(pattern, str(tmp_path), store_name="big.zarr", max_mem="1kB"))
    assert not (tmp_path / "big.zarr").exists()


def test_target_chunks_by_size_and_by_function(tmp_path, daily_archive):
    pattern = af.pattern_from_file_sequence(daily_archive, "time")
    step = 12 * 24 * 4  # bytes of one step of the widest variable (float32 sea_ice_fraction)
    af.run_local(pgf_recipe(pattern, str(tmp_path), store_name="bysize.zarr", target_chunks={"time": f"{4 * step}B"}))
    assert zarr.open_group(str(tmp_path / "bysize.zarr"), mode="r")["analysed_sst"].chunks == (4, 12, 24)

    def chunk_by_function(template_ds, steps):
        assert template_ds.sizes == {"time": 12, "lat": 12, "lon": 24}
        return {"time": steps, "lat": template_ds.sizes["lat"] // 2}

    af.run_local(pgf_recipe(pattern, str(tmp_path), store_name="byfn.zarr", dynamic_chunking_fn=chunk_by_function,
                            dynamic_chunking_fn_kwargs={"steps": 3}))
    assert zarr.open_group(str(tmp_path / "byfn.zarr"), mode="r")["analysed_sst"].chunks == (3, 6, 24)
    assert_same_dataset(tmp_path / "byfn.zarr", reference(daily_archive))


def test_write_stac_after_store_to_zarr(tmp_path, daily_archive, schemas_dir):
    pattern = af.pattern_from_file_sequence(daily_archive[:3], "time")
    recipe = pgf_recipe(pattern, str(tmp_path), store_name="s.zarr") | af.WriteSTAC(
        collection_id="daily", metadata={"title": "Daily", "provenance": {"license": "CC0-1.0"}},
        schemas_dir=str(schemas_dir))
    af.run_local(recipe)
    catalog = json.loads((tmp_path / "stac" / "catalog.json").read_text())
    assert [link["href"] for link in catalog["links"] if link["rel"] == "child"] == ["./daily/collection.json"]
    collection = json.loads((tmp_path / "stac" / "daily" / "collection.json").read_text())
    assert collection["title"] == "Daily" and collection["license"] == "CC0-1.0"
    assert collection["arcoforge:provenance"]["n_inputs"] == 3
