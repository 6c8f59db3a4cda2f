from __future__ import annotations

import fsspec
import numpy as np
import pytest
import xarray as xr

from arcoforge import FileType, InputError
from arcoforge.openers import local_path, open_url, open_with_xarray


@pytest.fixture
def nc_file(tmp_path):
    path = tmp_path / "x.nc"
    xr.Dataset({"a": ("t", np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")
    return str(path)


def test_open_url_gives_open_files_like_pangeo_forge(nc_file):
    # pangeo-forge-recipes 0.10: an fsspec OpenFile for any URL, local ones too.
    assert isinstance(open_url(nc_file), fsspec.core.OpenFile)
    assert isinstance(open_url("memory://x/y.nc"), fsspec.core.OpenFile)
    assert local_path("s3://bucket/key.nc") is None
    assert local_path("file://" + nc_file) == nc_file


def test_open_records_the_source(nc_file):
    ds = open_with_xarray(nc_file, FileType.netcdf4)
    assert ds.encoding["source"] == nc_file
    np.testing.assert_array_equal(ds.a.values, [0, 1, 2])


def test_open_through_fsspec_file_objects(nc_file):
    with open(nc_file, "rb") as f:
        data = f.read()
    with fsspec.open("memory://inputs/x.nc", "wb") as f:
        f.write(data)
    ds = open_with_xarray(open_url("memory://inputs/x.nc"), FileType.netcdf4, load=True)
    np.testing.assert_array_equal(ds.a.values, [0, 1, 2])


def test_an_html_error_page_is_named_as_not_netcdf():
    with fsspec.open("memory://inputs/error.nc", "wb") as f:
        f.write(b"<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(InputError, match=r"memory:///?inputs/error.nc \(pattern index 7\) is not a NetCDF or HDF5 file"):
        open_with_xarray(open_url("memory://inputs/error.nc"), FileType.netcdf4, index=7)


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"cannot open .*garbage.nc \(pattern index 3\) as netcdf4"):
        open_with_xarray(str(garbage), FileType.netcdf4, index=3)
    with pytest.raises(InputError, match=r"missing.nc \(pattern index 4\)"):
        open_with_xarray(str(tmp_path / "missing.nc"), FileType.netcdf4, index=4)


def test_undecodable_time_names_the_file(tmp_path):
    path = tmp_path / "badtime.nc"
    ds = xr.Dataset(coords={"time": ("time", [1.0, 2.0], {"units": "fortnights since whenever"})})
    ds.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(InputError, match=r"badtime.nc \(pattern index 0\).*time"):
        open_with_xarray(str(path), FileType.netcdf4, index=0)
