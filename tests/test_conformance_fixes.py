"""Regression tests for the four problems of issue 11 (real CF files that baked wrong or crashed).

1. 0-d variables (grid_mapping ``crs``, scalar coordinates, a scalar time) bake and read back equal.
2. Packed integers decode to the same dtype and values from the store as from the source.
3. Bad inputs are refused before anything is written; oversized attributes are dropped.
4. Zarr encodings (``compressor`` for v2, numcodecs compressors for v3) are honoured, bad ones refused.

Each input is written here with netCDF4/xarray; every bake is read back with xarray and
compared with what xarray makes of the inputs.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.io.state import task_id

pytestmark = [pytest.mark.filterwarnings("ignore::xarray.SerializationWarning")]


def bake(paths: list[str], root: Path, name: str, zarr_format: int = 3, num_workers: int = 1,
         nitems_per_file: int | None = None, **store_kwargs) -> Path:
    """Bake ``paths`` concatenated along time, the way a user writes the recipe; return the store."""
    pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=nitems_per_file)
    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.StoreToZarr(target_root=str(root), store_name=name, combine_dims=pattern.combine_dim_keys,
                         zarr_format=zarr_format, **store_kwargs)
    )
    af.run_local(recipe, num_workers=num_workers)
    return root / name


def reference(paths: list[str]) -> xr.Dataset:
    with xr.open_mfdataset(paths, combine="nested", concat_dim="time", data_vars="minimal",
                           coords="minimal", compat="override") as ds:
        return ds.load()


def assert_same_decoded(store: Path, expected: xr.Dataset) -> None:
    """Values bit-exact (NaN-aware), dtypes identical, variable attributes equal."""
    with xr.open_zarr(store) as ds:
        result = ds.load()
    assert set(result.variables) == set(expected.variables)
    for name, variable in expected.variables.items():
        got = result[name]
        assert got.dtype == variable.dtype, (name, got.dtype, variable.dtype)
        assert got.dims == variable.dims, name
        np.testing.assert_array_equal(got.values, variable.values, err_msg=name)
        assert got.attrs == variable.attrs, name


# --------------------------------------------------------------------------- 1. 0-d variables


def test_task_id_of_a_0d_variable_names_a_file_not_the_group_folder():
    assert task_id("crs", ()) == "crs/scalar"
    assert task_id("sst", (3, 0, 0)) == "sst/3.0.0"


@pytest.fixture(scope="module")
def scalar_files(tmp_path_factory) -> list[str]:
    """Two files with a grid_mapping variable, a scalar height, a scalar reference time."""
    folder = tmp_path_factory.mktemp("scalars")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        ds = xr.Dataset(
            {"tas": (("time", "lat", "lon"), rng.random((2, 3, 4), dtype="f4"), {"grid_mapping": "crs"}),
             "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude"})},
            coords={"time": ("time", np.arange(2) + 2 * i, {"units": "days since 2000-01-01"}),
                    "height": ((), 2.0, {"units": "m"}),
                    "reftime": ((), 5, {"units": "hours since 1999-12-31", "calendar": "standard"}),
                    "lat": np.arange(3.0), "lon": np.arange(4.0)})
        path = folder / f"scalars_{i}.nc"
        ds.to_netcdf(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("zarr_format, num_workers", [(2, 1), (3, 1)])
def test_0d_variables_bake_and_read_back_equal(scalar_files, tmp_path, zarr_format, num_workers):
    store = bake(scalar_files, tmp_path, "scalars.zarr", zarr_format, num_workers)
    expected = reference(scalar_files)
    assert_same_decoded(store, expected)
    with xr.open_zarr(store) as ds:
        assert ds["reftime"].encoding["units"] == "hours since 1999-12-31"
        assert ds["reftime"].values == np.datetime64("1999-12-31T05:00")
        assert "height" in ds.coords and ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude"


# --------------------------------------------------------------------------- 2. packed integers

# name: (stored dtype, scale_factor, add_offset, _FillValue, other attributes)
PACKED = {
    "i16_f32": ("i2", np.float32(0.01), np.float32(273.15), np.int16(-32768), {}),
    "i16_f64": ("i2", np.float64(0.01), np.float64(273.15), np.int16(-32768), {}),
    "i8_f32": ("i1", np.float32(0.5), np.float32(10), np.int8(-128), {}),
    "i8_f64": ("i1", np.float64(0.5), np.float64(10), np.int8(-128), {}),
    "u8_f32": ("u1", np.float32(0.2), np.float32(-5), np.uint8(255), {}),
    "u8_f64": ("u1", np.float64(0.2), np.float64(-5), np.uint8(255), {}),
    "i16_negative_scale": ("i2", np.float32(-0.01), np.float32(0), np.int16(32767), {}),
    "i16_scale_only_f32": ("i2", np.float32(0.1), None, None, {}),
    "i16_f32_offset_f64": ("i2", np.float32(0.01), np.float64(100), np.int16(-1), {}),
    "i8_unsigned_f32": ("i1", np.float32(0.4), np.float32(0), np.int8(-1), {"_Unsigned": "true"}),
    "i8_unsigned_f64": ("i1", np.float64(0.4), np.float64(1), np.int8(-1), {"_Unsigned": "true"}),
    "i8_unsigned": ("i1", None, None, np.int8(-1), {"_Unsigned": "true"}),
    "i8_unsigned_no_fill": ("i1", None, None, None, {"_Unsigned": "true"}),
    "i16_f32_kept_packed": ("i2", np.float32(0.01), np.float32(273.15), np.int16(-32768), {}),
}
KEEP_PACKED = {"i16_f32_kept_packed": {"dtype": "int16", "_FillValue": -32768}}


def write_packed(path: Path, first_time: int, rng: np.random.Generator) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 2)
        nc.createDimension("x", 5)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = [first_time, first_time + 1]
        for name, (dtype, scale, offset, fill, extra) in PACKED.items():
            variable = nc.createVariable(name, dtype, ("time", "x"), fill_value=fill)
            variable.set_auto_maskandscale(False)  # the raw integers are written as they are
            if scale is not None:
                variable.scale_factor = scale
            if offset is not None:
                variable.add_offset = offset
            for key, value in extra.items():
                variable.setncattr(key, value)
            info = np.iinfo(np.dtype(dtype))
            raw = rng.integers(info.min, info.max, (2, 5), endpoint=True).astype(dtype)
            if fill is not None:
                raw[0, 0] = fill
            variable[:] = raw


@pytest.fixture(scope="module")
def packed_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("packed")
    rng = np.random.default_rng(1)
    paths = [str(folder / f"packed_{i}.nc") for i in range(2)]
    for i, path in enumerate(paths):
        write_packed(Path(path), 2 * i, rng)
    return paths


def test_unsigned_is_resolved_to_an_unsigned_dtype_and_fill():
    from arcoforge.packing import resolve_unsigned, store_value_encoding

    encoding = resolve_unsigned({"dtype": np.dtype("i1"), "_FillValue": np.int8(-1), "_Unsigned": "true"})
    assert (np.dtype(encoding["dtype"]), encoding["_FillValue"]) == (np.dtype("u1"), 255)
    assert "_Unsigned" not in encoding
    # float32-decoding packs are stored unpacked unless an integer dtype is asked for
    source = {"dtype": "<i2", "scale_factor": np.float32(0.1), "_FillValue": np.int16(-1)}
    assert store_value_encoding("v", np.dtype("f4"), source) == {}
    assert store_value_encoding("v", np.dtype("f4"), source, {"dtype": "int16"})["scale_factor"] == np.float32(0.1)
    assert store_value_encoding("v", np.dtype("f8"), {**source, "scale_factor": 0.1}) == {**source, "scale_factor": 0.1}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_packed_variables_decode_to_the_source_dtype_and_values(packed_files, tmp_path, zarr_format):
    store = bake(packed_files, tmp_path, "packed.zarr", zarr_format, encoding=KEEP_PACKED)
    expected = reference(packed_files)
    with xr.open_zarr(store) as ds:
        result = ds.load()
    rows = []
    for name in PACKED:
        got, want = result[name], expected[name]
        rows.append((name, str(want.dtype), str(got.dtype)))
        if name in KEEP_PACKED:  # asked to stay packed: int16 in the store, decoded as float64
            assert got.encoding["dtype"] == np.dtype("int16") and got.dtype == np.float64
            np.testing.assert_allclose(got.values, want.values, atol=0.006)
            continue
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        np.testing.assert_array_equal(got.values, want.values, err_msg=name)  # NaN-aware, bit-exact
    assert result["i16_f64"].encoding["scale_factor"] == 0.01  # float64 packs keep their packing
    assert result["i8_unsigned_f64"].encoding["dtype"] == np.dtype("u1")
    assert "scale_factor" not in result["i16_f32"].encoding


def test_appending_to_a_store_holding_unpacked_values(packed_files, tmp_path):
    bake(packed_files[:1], tmp_path, "append.zarr", encoding=KEEP_PACKED)
    store = bake(packed_files, tmp_path, "append.zarr", append_dim="time", encoding=KEEP_PACKED)
    expected = reference(packed_files)
    with xr.open_zarr(store) as ds:
        assert ds.sizes["time"] == 4
        np.testing.assert_array_equal(ds["i16_f32"].values, expected["i16_f32"].values)
        assert ds["i16_f32"].dtype == np.float32


# --------------------------------------------------------------------------- 3. bad inputs


def write_series(folder: Path, days: list[list[int]], dtypes: list[str] | None = None,
                 attrs: list[dict] | None = None, units: str = "days since 2000-01-01") -> list[str]:
    """One small file per list of days; ``dtypes``/``attrs`` per file change what one file holds."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, times in enumerate(days):
        values = np.arange(len(times) * 3, dtype=(dtypes or ["f4"] * len(days))[i]).reshape(len(times), 3)
        ds = xr.Dataset({"v": (("time", "x"), values)}, attrs=(attrs or [{}] * len(days))[i],
                        coords={"time": ("time", np.asarray(times, dtype="f8"), {"units": units})})
        path = folder / f"series_{i}.nc"
        ds.to_netcdf(path)
        paths.append(str(path))
    return paths


def schemas_of(paths: list[str]):
    from arcoforge.schema import input_schema

    pattern = af.pattern_from_file_sequence(paths, "time")
    schemas = []
    for index, url in pattern.items():
        with xr.open_dataset(url) as ds:
            schemas.append(input_schema(ds, index, ["time"]))
    return pattern, schemas


@pytest.mark.parametrize("days, problem", [
    ([[0, 1], [1, 2]], "repeats"),         # a timestamp given twice, across files
    ([[2, 3], [0, 1]], "goes back to"),    # files out of order
    ([[0, 0], [1, 2]], "repeats"),         # within one file
])
def test_time_that_repeats_or_goes_back_is_refused(tmp_path, days, problem):
    from arcoforge.errors import SchemaError
    from arcoforge.input_checks import check_inputs

    pattern, schemas = schemas_of(write_series(tmp_path, days))
    with pytest.raises(SchemaError) as error:
        check_inputs(schemas, pattern.combine_dim_keys)
    message = str(error.value)
    assert "\n" not in message and problem in message and "'time'" in message and "expected a time after" in message
    bad = 0 if days[0][0] == days[0][1] else 1
    assert f"series_{bad}.nc (pattern index Index(time={bad}))" in message


def test_a_coordinate_that_is_not_time_may_repeat(tmp_path):
    """NEMO's time_counter is 0 in every file; only time-like concat coordinates must increase."""
    from arcoforge.input_checks import check_inputs

    pattern, schemas = schemas_of(write_series(tmp_path, [[0.0], [0.0]], units="1"))
    check_inputs(schemas, pattern.combine_dim_keys)


def test_a_dtype_differing_between_inputs_is_refused_unless_the_recipe_chooses_one(tmp_path):
    from arcoforge.errors import SchemaError
    from arcoforge.input_checks import check_inputs

    pattern, schemas = schemas_of(write_series(tmp_path, [[0], [1]], dtypes=["f4", "f8"]))
    with pytest.raises(SchemaError, match=r"series_1.nc \(pattern index Index\(time=1\)\): variable 'v' has "
                                          r"dtype float64, expected float32 as in .*series_0.nc"):
        check_inputs(schemas, pattern.combine_dim_keys)
    check_inputs(schemas, pattern.combine_dim_keys, {"v": {"dtype": "float64"}})


def test_large_attributes_are_dropped_with_a_warning(tmp_path, caplog):
    from arcoforge.input_checks import drop_large_attrs

    big = "x" * 70_000
    _, schemas = schemas_of(write_series(tmp_path, [[0]], attrs=[{"history": big, "title": "t"}]))
    schemas[0].variables["v"].attrs["comment"] = big
    with caplog.at_level("WARNING"):
        schema = drop_large_attrs(schemas[0])
    assert schema.attrs == {"title": "t"} and "comment" not in schema.variables["v"].attrs
    assert "series_0.nc (pattern index Index(time=0)): attribute 'history' (70000 bytes)" in caplog.text
    assert "variable 'v': attribute 'comment'" in caplog.text
    assert drop_large_attrs(schemas[0], None).attrs["history"] == big


def _nothing_written(root: Path, name: str) -> bool:
    store = root / name
    return not store.exists() or not any(store.iterdir())


def test_bad_inputs_stop_the_bake_before_anything_is_written(tmp_path):
    duplicated = write_series(tmp_path / "dup", [[0, 1], [1, 2]])
    with pytest.raises(Exception, match=r"series_1.nc \(pattern index Index\(time=1\)\): time coordinate 'time' "
                                        r"repeats"):
        bake(duplicated, tmp_path, "dup.zarr")
    assert _nothing_written(tmp_path, "dup.zarr")
    # the pattern says 2 items a file, the files hold 1: checked from pattern.combine_dim_keys
    short = write_series(tmp_path / "short", [[0], [1]])
    with pytest.raises(Exception, match=r"series_0.nc \(pattern index Index\(time=0\)\) has 1 items along 'time', "
                                        r"but the pattern says nitems_per_file=2"):
        bake(short, tmp_path, "short.zarr", nitems_per_file=2)
    assert _nothing_written(tmp_path, "short.zarr")


def test_dtype_chosen_by_the_recipe_and_large_attribute_dropped_in_a_bake(tmp_path):
    paths = write_series(tmp_path / "in", [[0], [1]], dtypes=["f4", "f8"],
                         attrs=[{"history": "x" * 70_000, "title": "t"}, {"title": "t"}])
    store = bake(paths, tmp_path, "mixed.zarr", encoding={"v": {"dtype": "float64"}})
    with xr.open_zarr(store) as ds:
        assert ds["v"].dtype == np.float64 and ds.attrs["title"] == "t" and "history" not in ds.attrs
        np.testing.assert_array_equal(ds["v"].values, np.concatenate([np.arange(3.0), np.arange(3.0)]).reshape(2, 3))


# --------------------------------------------------------------------------- 4. encodings


def _codecs_in_metadata(store: Path, name: str, zarr_format: int) -> list[dict]:
    import json

    if zarr_format == 2:
        return [json.loads((store / name / ".zarray").read_text())["compressor"]]
    return json.loads((store / name / "zarr.json").read_text())["codecs"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_numcodecs_compressor_is_honoured(tmp_path, zarr_format):
    import numcodecs

    paths = write_series(tmp_path / "in", [[0], [1]])
    store = bake(paths, tmp_path, "zstd.zarr", zarr_format, encoding={"v": {"compressor": numcodecs.Zstd(3)}})
    codecs = _codecs_in_metadata(store, "v", zarr_format)
    if zarr_format == 2:
        assert codecs[0]["id"] == "zstd" and codecs[0]["level"] == 3
    else:
        assert {"name": "zstd", "configuration": {"level": 3, "checksum": False}} in codecs
    with xr.open_zarr(store) as ds:
        np.testing.assert_array_equal(ds["v"].values, reference(paths)["v"].values)


def test_numcodecs_compressors_map_to_zarr_v3_codecs_and_back():
    import numcodecs
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    from arcoforge.zarr_encoding import zarr_array_encoding

    v3 = zarr_array_encoding("v", {"compressors": [numcodecs.Blosc("zstd", 2, numcodecs.Blosc.BITSHUFFLE),
                                                   numcodecs.GZip(4)]}, 3)["compressors"]
    assert v3 == (BloscCodec(cname="zstd", clevel=2, shuffle="bitshuffle"), GzipCodec(level=4))
    v2 = zarr_array_encoding("v", {"compressor": ZstdCodec(level=5)}, 2)
    assert v2 == {"compressors": (numcodecs.Zstd(level=5),)}
    assert zarr_array_encoding("v", {"compressor": None}, 2) == {"compressors": None}


@pytest.mark.parametrize("encoding, zarr_format, message", [
    ({"v": {"chunks": 3}}, 3, r"encoding\['v'\] has keys \['chunks'\] that are not understood \(set chunks with "
                              r"target_chunks\)"),
    ({"v": {"compresor": None}}, 2, r"encoding\['v'\] has keys \['compresor'\] that are not understood; expected"),
    ({"v": {"compressor": "zstd"}}, 3, r"encoding\['v'\]: compressor 'zstd' cannot be written to a Zarr v3 store"),
    ({"v": {"shards": (2,)}}, 2, r"encoding\['v'\] has \['shards'\], which only Zarr v3 stores have"),
])
def test_bad_encodings_are_refused_when_the_transform_is_built(encoding, zarr_format, message):
    from arcoforge.errors import RecipeError

    with pytest.raises(RecipeError, match=message) as error:
        af.StoreToZarr(combine_dims=[], store_name="x.zarr", encoding=encoding, zarr_format=zarr_format)
    assert "\n" not in str(error.value)


def test_a_numcodecs_compressor_without_v3_twin_is_refused():
    import numcodecs

    from arcoforge.errors import RecipeError
    from arcoforge.zarr_encoding import zarr_array_encoding

    with pytest.raises(RecipeError, match=r"compressor Zlib\(level=1\) cannot be written to a Zarr v3 store"):
        zarr_array_encoding("v", {"compressors": (numcodecs.Zlib(1),)}, 3)


def test_combine_dims_given_as_names_is_refused_when_the_transform_is_built():
    from arcoforge.errors import RecipeError

    with pytest.raises(RecipeError, match=r"StoreToZarr\('x.zarr'\): combine_dims must be pattern.combine_dim_keys "
                                          r"\(Dimension objects\), got 'time' of type str"):
        af.StoreToZarr(combine_dims=["time"], store_name="x.zarr")
    pattern = af.pattern_from_file_sequence(["a.nc"], "time", nitems_per_file=2)
    assert af.StoreToZarr(combine_dims=pattern.combine_dim_keys, store_name="x.zarr").combine_dims[0].nitems_per_file == 2
