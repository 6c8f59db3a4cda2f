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
from arcoforge.state import task_id

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


@pytest.mark.parametrize("zarr_format, num_workers", [(2, 1), (3, 2)])
def test_0d_variables_bake_and_read_back_equal(scalar_files, tmp_path, zarr_format, num_workers):
    store = bake(scalar_files, tmp_path, "scalars.zarr", zarr_format, num_workers)
    expected = reference(scalar_files)
    assert_same_decoded(store, expected)
    with xr.open_zarr(store) as ds:
        assert ds["reftime"].encoding["units"] == "hours since 1999-12-31"
        assert ds["reftime"].values == np.datetime64("1999-12-31T05:00")
        assert "height" in ds.coords and ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
