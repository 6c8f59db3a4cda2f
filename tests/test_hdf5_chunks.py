"""Direct chunk reads give exactly what HDF5 and netCDF-C give, and are used where they can be."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from arcoforge.hdf5_chunks import (
    DirectChunkArray,
    NetCDF4DirectEngine,
    chunk_layout,
    read_selection,
)
from arcoforge.openers import open_with_xarray

from ._sample_data import nemo_files  # noqa: F401  (a fixture)


def _uses_direct_reads(ds: xr.Dataset, name: str) -> bool:
    data = ds[name].variable._data
    while hasattr(data, "array"):
        if isinstance(data, DirectChunkArray):
            return True
        data = data.array
    return isinstance(data, DirectChunkArray)


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<i2", ">u2", "u1", "<f8", "<i8"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_selection_equals_what_hdf5_reads(tmp_path, dtype, shuffle):
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(7, 9, 5)) * 100).astype(dtype)
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, chunks=(3, 4, 5), compression="gzip", shuffle=shuffle)
    keys = [(slice(None), slice(None), slice(None)), (slice(2, 6), slice(1, 9), slice(0, 3)), (4, slice(3, 8), 2),
            (-1, -2, slice(None)), (slice(5, 5), slice(None), slice(None)), (slice(0, 7, 2), 1, 1)]
    with h5py.File(path, "r") as f:
        layout = chunk_layout(f["v"])
        assert layout is not None and layout.filters == ((2, 1) if shuffle else (1,))
        for key in keys:
            got = read_selection(f["v"], layout, key)
            np.testing.assert_array_equal(got, f["v"][key])
            assert got.dtype == f["v"].dtype and got.shape == f["v"][key].shape


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_shape_chunking_and_window_reads_like_hdf5(tmp_path_factory, data):
    ndim = data.draw(st.integers(1, 3))
    shape = tuple(data.draw(st.integers(1, 12)) for _ in range(ndim))
    chunks = tuple(data.draw(st.integers(1, n)) for n in shape)
    starts = [data.draw(st.integers(0, n)) for n in shape]
    key = tuple(slice(a, data.draw(st.integers(a, n))) for a, n in zip(starts, shape))
    values = np.arange(int(np.prod(shape)), dtype="<i4").reshape(shape)
    path = tmp_path_factory.mktemp("h") / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, chunks=chunks, compression="gzip", shuffle=data.draw(st.booleans()))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(read_selection(f["v"], chunk_layout(f["v"]), key), values[key])


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("v", shape=(4, 6), chunks=(2, 3), dtype="<f4", compression="gzip", fillvalue=-9)
        dataset[0:2, 0:3] = 1.5
    with h5py.File(path, "r") as f:
        got = read_selection(f["v"], chunk_layout(f["v"]), (slice(None), slice(None)))
    expected = np.full((4, 6), -9, "<f4")
    expected[0:2, 0:3] = 1.5
    np.testing.assert_array_equal(got, expected)


def test_a_chunk_stored_without_its_optional_deflate_is_read_as_stored(tmp_path):
    """HDF5 records a skipped filter in the chunk's filter mask; the chunk bytes are then raw."""
    path = tmp_path / "a.h5"
    values = np.arange(12, dtype="<i4").reshape(2, 6)
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("v", shape=(2, 6), chunks=(2, 3), dtype="<i4", compression="gzip")
        dataset.id.write_direct_chunk((0, 0), zlib.compress(values[:, :3].tobytes()), filter_mask=0)
        dataset.id.write_direct_chunk((0, 3), values[:, 3:].tobytes(), filter_mask=1)  # deflate skipped
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(read_selection(f["v"], chunk_layout(f["v"]), (slice(None),) * 2), values)
        np.testing.assert_array_equal(f["v"][...], values)  # (what HDF5 itself makes of it)


def test_other_filters_and_layouts_are_left_to_hdf5(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("checksummed", data=np.ones((4, 4)), chunks=(2, 2), compression="gzip", fletcher32=True)
        f.create_dataset("contiguous", data=np.ones((4, 4)))
        f.create_dataset("uncompressed", data=np.ones((4, 4)), chunks=(2, 2))
        f.create_dataset("lzf", data=np.ones((4, 4)), chunks=(2, 2), compression="lzf")
        f.create_dataset("text", data=np.array([b"ab", b"cd"]), chunks=(1,), compression="gzip")
    with h5py.File(path, "r") as f:
        assert [name for name in f if chunk_layout(f[name]) is not None] == []


def _write_netcdf(path: Path, data_model: str = "NETCDF4") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    with netCDF4.Dataset(path, "w", format=data_model) as ds:
        ds.createDimension("time", None)
        ds.createDimension("y", 30)
        ds.createDimension("x", 40)
        time = ds.createVariable("time", "i4", ("time",))
        time.units, time.calendar = "days since 2000-01-01", "noleap"
        time[:] = np.arange(5)
        packed = ds.createVariable("packed", "i2", ("time", "y", "x"), zlib=True, shuffle=True,
                                   chunksizes=(2, 16, 16), fill_value=-32767)
        packed.scale_factor, packed.add_offset = 0.01, 280.0
        values = rng.normal(size=(5, 30, 40)) * 10 + 280
        values[0, :3, :3] = np.nan
        packed.set_auto_maskandscale(False)
        packed[:] = np.where(np.isnan(values), -32767, np.round((np.nan_to_num(values) - 280.0) / 0.01)).astype("i2")
        plain = ds.createVariable("plain", "f8", ("time", "y", "x"), zlib=True, complevel=1)
        plain[:] = values
        ds.createVariable("checked", "f4", ("y", "x"), zlib=True, fletcher32=True)[:] = values[0]
        ds.createVariable("big_endian", ">f4", ("y", "x"), zlib=True, endian="big")[:] = values[2]
        ds.createVariable("raw", "f4", ("y", "x"))[:] = values[0]
        if data_model == "NETCDF4":
            group = ds.createGroup("sub")
            group.createVariable("inner", "f4", ("y", "x"), zlib=True)[:] = values[1]
    return {"values": values}


def test_the_engine_gives_what_netcdf4_gives_and_reads_deflated_variables_directly(tmp_path):
    path = tmp_path / "a.nc"
    _write_netcdf(path)
    direct = xr.open_dataset(path, engine=NetCDF4DirectEngine)
    expected = xr.open_dataset(path, engine="netcdf4")
    assert {name for name in direct.variables if _uses_direct_reads(direct, name)} == {"packed", "plain", "big_endian"}
    xr.testing.assert_identical(direct.load(), expected.load())
    for name in direct.variables:  # the same dtypes too, byte order included
        assert direct[name].dtype == expected[name].dtype, name
    for name in direct.variables:
        assert direct[name].encoding == expected[name].encoding
    inner = xr.open_dataset(path, engine=NetCDF4DirectEngine, group="sub")
    assert _uses_direct_reads(inner, "inner")
    xr.testing.assert_identical(inner.load(), xr.open_dataset(path, engine="netcdf4", group="sub").load())


def test_netcdf3_inputs_are_read_by_netcdf_c(tmp_path):
    path = tmp_path / "classic.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("x", 4)
        ds.createVariable("v", "f4", ("x",))[:] = np.arange(4)
    ds = xr.open_dataset(path, engine=NetCDF4DirectEngine)
    assert not _uses_direct_reads(ds, "v")
    np.testing.assert_array_equal(ds["v"].values, np.arange(4))


def test_lazy_variables_pickle_small_and_read_in_another_process_state(tmp_path):
    path = tmp_path / "a.nc"
    _write_netcdf(path)
    ds = open_with_xarray(str(path), file_type="netcdf4")
    assert _uses_direct_reads(ds, "plain")  # the default for local NetCDF-4 paths
    piece = ds["plain"].variable[1:3, 5:20]
    blob = pickle.dumps(piece)
    assert len(blob) < 20_000
    np.testing.assert_array_equal(pickle.loads(blob).values,
                                  xr.open_dataset(path, engine="netcdf4")["plain"].values[1:3, 5:20])


def test_an_explicit_engine_is_respected(tmp_path):
    path = tmp_path / "a.nc"
    _write_netcdf(path)
    ds = open_with_xarray(str(path), file_type="netcdf4", xarray_open_kwargs={"engine": "netcdf4"})
    assert not _uses_direct_reads(ds, "plain")


def test_real_nemo_files_read_identically(nemo_files):  # noqa: F811
    path = nemo_files[0]
    direct = xr.open_dataset(path, engine=NetCDF4DirectEngine)
    assert any(_uses_direct_reads(direct, name) for name in direct.variables)
    xr.testing.assert_identical(direct.load(), xr.open_dataset(path, engine="netcdf4").load())
