from __future__ import annotations

import cftime
import numpy as np
import pytest
import xarray as xr

from arcoforge import ConcatDim, FilePattern, MergeDim, SchemaError
from arcoforge.schema import combine_schemas, input_schema


def daily(start: int, n: int, units: str = "days since 2000-01-01", calendar: str = "standard",
          nlat: int = 3, name: str = "tas", extra_attrs: dict | None = None) -> xr.Dataset:
    """A decoded dataset as open_dataset would give it, with its CF encoding."""
    times = cftime.num2date(np.arange(start, start + n) + 0.5, units, calendar)
    if calendar in ("standard", "proleptic_gregorian"):
        times = np.array([np.datetime64(t.isoformat()) for t in times], dtype="datetime64[ns]")
    ds = xr.Dataset(
        {name: (("time", "lat"), np.arange(n * nlat, dtype="float32").reshape(n, nlat), {"units": "K"})},
        coords={"time": ("time", times), "lat": ("lat", np.linspace(-10, 10, nlat))},
        attrs={"title": "t", **(extra_attrs or {})},
    )
    ds["time"].encoding.update(units=units, calendar=calendar, dtype="float64")
    ds[name].encoding.update(_FillValue=np.float32(1e20), dtype="float32")
    return ds


def schemas_of(pattern: FilePattern, datasets: list[xr.Dataset]):
    out = []
    for (index, url), ds in zip(pattern.items(), datasets):
        ds.encoding["source"] = url
        out.append(input_schema(ds, index, pattern.concat_dims))
    return out


def seq(n):
    return FilePattern(lambda time: f"file{time}.nc", ConcatDim("time", list(range(n))))


def test_concat_lengths_are_read_from_each_input():
    pattern = seq(3)
    datasets = [daily(0, 366), daily(366, 365), daily(731, 365)]
    schema = combine_schemas(schemas_of(pattern, datasets), pattern.combine_dim_keys)
    assert schema.dims == {"time": 1096, "lat": 3}
    assert schema.offsets["time"].tolist() == [0, 366, 731]
    assert schema.lengths["time"].tolist() == [366, 365, 365]
    expected = np.concatenate([ds.time.values for ds in datasets])
    np.testing.assert_array_equal(schema.concat_coords["time"], expected)
    assert schema.variables["tas"].shape == (1096, 3)


def test_inputs_arriving_out_of_order_are_sorted():
    pattern = seq(3)
    schemas = schemas_of(pattern, [daily(0, 2), daily(2, 3), daily(5, 2)])
    schema = combine_schemas(reversed(schemas), pattern.combine_dim_keys)
    assert schema.offsets["time"].tolist() == [0, 2, 5]


def test_nitems_per_file_is_checked_and_the_file_named():
    pattern = seq(2)
    schemas = schemas_of(pattern, [daily(0, 2), daily(2, 3)])
    with pytest.raises(SchemaError, match=r"file1\.nc \(pattern index Index\(time=1\)\) has 3 items .*nitems_per_file=2"):
        combine_schemas(schemas, pattern.combine_dim_keys, {"time": 2})


def test_other_dimensions_must_match_and_both_files_are_named():
    pattern = seq(2)
    schemas = schemas_of(pattern, [daily(0, 2), daily(2, 2, nlat=4)])
    with pytest.raises(SchemaError, match=r"'lat' has size 4 in file1\.nc .* but 3 in file0\.nc"):
        combine_schemas(schemas, pattern.combine_dim_keys)


def test_a_variable_missing_from_one_file_is_named():
    pattern = seq(2)
    other = daily(2, 2).rename({"tas": "pr"})
    with pytest.raises(SchemaError, match=r"file1\.nc .*lacks variables \['tas'\]"):
        combine_schemas(schemas_of(pattern, [daily(0, 2), other]), pattern.combine_dim_keys)


def test_missing_concat_dimension_is_named():
    pattern = seq(1)
    ds = daily(0, 2).isel(time=0)
    ds.encoding["source"] = "file0.nc"
    with pytest.raises(SchemaError, match=r"file0\.nc .* has no dimension 'time'"):
        input_schema(ds, next(iter(pattern)), ["time"])


def test_merge_dims_union_variables_and_assign_writers():
    pattern = FilePattern(
        lambda variable, time: f"{variable}{time}.nc",
        MergeDim("variable", ["tas", "pr"]),
        ConcatDim("time", [0, 1]),
    )
    datasets = [daily(0, 2, name="tas"), daily(2, 2, name="tas"), daily(0, 2, name="pr"), daily(2, 2, name="pr")]
    schema = combine_schemas(schemas_of(pattern, datasets), pattern.combine_dim_keys)
    assert set(schema.variables) == {"tas", "pr", "time", "lat"}
    assert schema.dims == {"time": 4, "lat": 3}
    indexes = list(pattern)
    # tas comes from merge position 0, pr from 1; lat (no concat dim) only from the very first input
    assert [schema.writes_variable(i, "tas") for i in indexes] == [True, True, False, False]
    assert [schema.writes_variable(i, "pr") for i in indexes] == [False, False, True, True]
    assert [schema.writes_variable(i, "lat") for i in indexes] == [True, False, False, False]
    assert not any(schema.writes_variable(i, "time") for i in indexes)  # written with the template


def test_different_epochs_share_the_first_units():
    pattern = seq(3)
    datasets = [
        daily(0, 4, units="days since 1930-01-01", calendar="365_day"),
        daily(0, 4, units="days since 1970-01-01", calendar="365_day"),
        daily(0, 4, units="days since 2010-01-01", calendar="365_day"),
    ]
    schema = combine_schemas(schemas_of(pattern, datasets), pattern.combine_dim_keys)
    time = schema.variables["time"]
    assert time.encoding["units"] == "days since 1930-01-01"
    assert time.encoding["calendar"] == "365_day"
    assert np.dtype(time.encoding["dtype"]) == np.float64
    assert isinstance(schema.concat_coords["time"][0], cftime.datetime)


def test_different_calendars_are_refused():
    pattern = seq(2)
    datasets = [daily(0, 2, calendar="365_day"), daily(0, 2, calendar="360_day")]
    with pytest.raises(SchemaError, match=r"different calendars.*'365_day' in file0\.nc.*'360_day' in file1\.nc"):
        combine_schemas(schemas_of(pattern, datasets), pattern.combine_dim_keys)


def test_packing_kept_when_inputs_agree_and_dropped_when_not(caplog):
    pattern = seq(2)
    a, b = daily(0, 2), daily(2, 2)
    for ds in (a, b):
        ds["tas"].encoding.update(dtype="int16", scale_factor=0.01, add_offset=273.15, _FillValue=np.int16(-32768))
    schema = combine_schemas(schemas_of(pattern, [a, b]), pattern.combine_dim_keys)
    assert schema.variables["tas"].encoding["scale_factor"] == 0.01
    assert schema.variables["tas"].encoding["_FillValue"] == -32768

    b["tas"].encoding.update(scale_factor=0.02)
    schema = combine_schemas(schemas_of(pattern, [a, b]), pattern.combine_dim_keys)
    assert not {"scale_factor", "add_offset", "dtype", "_FillValue"} & set(schema.variables["tas"].encoding)
    assert "packed differently" in caplog.text


def test_conflicting_attributes_are_dropped_and_agreeing_ones_kept():
    pattern = seq(2)
    datasets = [daily(0, 2, extra_attrs={"tracking_id": "a", "source": "m"}),
                daily(2, 2, extra_attrs={"tracking_id": "b", "source": "m"})]
    schema = combine_schemas(schemas_of(pattern, datasets), pattern.combine_dim_keys)
    assert schema.attrs == {"title": "t", "source": "m"}


def test_a_gap_in_the_pattern_is_reported():
    pattern = seq(3)
    schemas = schemas_of(pattern, [daily(0, 2), daily(2, 2), daily(4, 2)])
    with pytest.raises(SchemaError, match=r"positions \[1\] along 'time'"):
        combine_schemas([schemas[0], schemas[2]], pattern.combine_dim_keys)


def test_incompatible_dtypes_are_refused_numeric_ones_promoted():
    pattern = seq(2)
    a, b = daily(0, 2), daily(2, 2)
    b["tas"] = b["tas"].astype("float64")
    schema = combine_schemas(schemas_of(pattern, [a, b]), pattern.combine_dim_keys)
    assert schema.variables["tas"].dtype == np.float64
    b["tas"] = b["tas"].astype(str)
    with pytest.raises(SchemaError, match="variable 'tas' has dtype"):
        combine_schemas(schemas_of(pattern, [a, b]), pattern.combine_dim_keys)
