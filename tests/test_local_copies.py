"""Local copies of remote inputs (``copy_to_local``) are removed once nothing reads them, wherever they are read.

Inputs come from a real HTTP server and a moto S3 server on 127.0.0.1; the
temporary folder is this test's own, so what is left in it is what arcoforge left.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge import InputError
from arcoforge.io import InputCache, RetryPolicy
from arcoforge.openers import open_with_xarray, prepare_input

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
SRC = Path(__file__).parents[1] / "src"

pytestmark = pytest.mark.usefixtures("private_default_cache")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def copies(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("arcoforge-"))


@pytest.fixture
def served(file_server, daily_archive):
    """Four daily files served as d0.nc ... d3.nc; returns (server, urls, local paths)."""
    paths = daily_archive[:4]
    return file_server, file_server.serve(paths), paths


def reference(paths):
    return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override").load()


@pytest.mark.parametrize("num_workers", [1, 2])  # in this process; in worker processes
def test_a_bake_over_http_with_copy_to_local_leaves_no_copies(served, private_tmp, tmp_path, num_workers):
    server, urls, paths = served
    pattern = af.pattern_from_file_sequence(urls, "time")
    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec(cache=False, retries=FAST)
        | af.OpenWithXarray(file_type=pattern.file_type, copy_to_local=True)
        | af.StoreToZarr(target_root=str(tmp_path), store_name="copied.zarr", combine_dims=pattern.combine_dim_keys,
                         target_chunks={"time": 3})  # inputs are read again by the write tasks: copied again
    )
    af.run_local(recipe, num_workers=num_workers)
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "copied.zarr").load(), reference(paths))
    assert copies(private_tmp) == []


def test_a_copy_lives_while_its_file_is_open_and_is_made_again_where_it_is_unpickled(served, private_tmp):
    server, urls, paths = served
    source = prepare_input(urls[0], cache=False, retry=FAST)
    ds = open_with_xarray(source, "netcdf4", copy_to_local=True)
    (copy,) = copies(private_tmp)
    assert copy.startswith(f"arcoforge-copy-{os.getpid()}.") and copy.endswith(".nc")
    variable = ds.analysed_sst.variable
    spilled = pickle.dumps(variable)  # as a lazily indexed variable is spilled for the write tasks

    # Unpickled in this process while the dataset is open: the same copy.
    again = pickle.loads(spilled)
    np.testing.assert_array_equal(again.values, ds.analysed_sst.values)
    assert copies(private_tmp) == [copy]
    del again

    ds.close()
    assert copies(private_tmp) == []  # closed: removed, although `variable` still refers to it
    expected = xr.open_dataset(paths[0], engine="h5netcdf").analysed_sst.values
    np.testing.assert_array_equal(variable.values, expected)  # read after closing: copied again
    del variable, ds
    gc.collect()
    assert copies(private_tmp) == []

    # Unpickled in another process (a write task's worker): its own copy, removed when it is done.
    (private_tmp.parent / "piece.pickle").write_bytes(spilled)
    script = ("import os, pickle, sys, tempfile\n"
              "def count():\n"
              "    return sum(n.startswith('arcoforge-copy-') for n in os.listdir(tempfile.gettempdir()))\n"
              "v = pickle.loads(open(sys.argv[1], 'rb').read())\n"
              "print(count())\n"
              "first = v[0].values\n"
              "print(count())\n"
              "del v\n"
              "print(count(), first.shape)\n")
    out = subprocess.run([sys.executable, "-c", script, str(private_tmp.parent / "piece.pickle")],
                         env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True, check=True)
    # nothing copied until something is read; then one copy, removed when the variable goes
    assert out.stdout.splitlines() == ["0", "1", f"0 {expected[0].shape}"]
    assert copies(private_tmp) == []  # the child removed its copy


def test_a_copy_from_s3_goes_when_its_dataset_does(s3, s3_filesystem, daily_archive, private_tmp):
    options, bucket = s3
    s3_filesystem(options).put(daily_archive[0], f"{bucket}/in/d0.nc")
    source = prepare_input(f"s3://{bucket}/in/d0.nc", cache=False, storage_options=options, retry=FAST)
    ds = open_with_xarray(source, "netcdf4", copy_to_local=True)
    assert len(copies(private_tmp)) == 1
    values = ds.analysed_sst.values
    del ds
    gc.collect()
    assert copies(private_tmp) == []
    np.testing.assert_array_equal(values, xr.open_dataset(daily_archive[0], engine="h5netcdf").analysed_sst.values)


def test_opens_that_fail_leave_no_copies(served, private_tmp, tmp_path, daily_archive):
    server, urls, _ = served
    server.files["half.nc"] = server.files["d1.nc"][:3000]  # an HDF5 signature, but half a file
    with pytest.raises(InputError, match="half.nc"):
        open_with_xarray(prepare_input(server.url("half.nc"), cache=False, retry=FAST), "netcdf4",
                         copy_to_local=True)
    server.status["d2.nc"] = 404  # the copy itself fails
    with pytest.raises(InputError, match="d2.nc"):
        open_with_xarray(prepare_input(urls[2], cache=False, retry=FAST), "netcdf4", copy_to_local=True)
    grouped = tmp_path / "grouped.nc"  # opens, then is refused: its data is in a group
    xr.Dataset().to_netcdf(grouped, engine="h5netcdf")
    xr.open_dataset(daily_archive[3], engine="h5netcdf").to_netcdf(grouped, group="g", mode="a", engine="h5netcdf")
    server.files["grouped.nc"] = grouped.read_bytes()
    with pytest.raises(InputError, match="no variables in its root group"):
        open_with_xarray(prepare_input(server.url("grouped.nc"), cache=False, retry=FAST), "netcdf4",
                         copy_to_local=True)
    assert copies(private_tmp) == []


def test_cached_inputs_are_opened_in_place_and_never_removed(served, private_tmp, tmp_path):
    _, urls, _ = served
    machine = prepare_input(urls[0], cache=InputCache(root=str(tmp_path / "machine"), machine_local=True))
    shared = prepare_input(urls[1], cache=str(tmp_path / "shared"))
    for source in (machine, shared):
        ds = open_with_xarray(source, "netcdf4", copy_to_local=True)
        assert copies(private_tmp) == []
        ds.load()
        ds.close()
    cached = sorted(p.name for p in tmp_path.glob("*/**/*.nc"))
    assert cached == ["d0.nc", "d1.nc"]


def test_downloads_into_a_cache_on_s3_leave_nothing_behind(served, s3, private_tmp):
    server, urls, paths = served
    options, bucket = s3
    cache = InputCache(root=f"s3://{bucket}/cache", storage_options=options)
    source = prepare_input(urls[0], cache=cache, retry=FAST)  # downloaded here, then uploaded
    assert copies(private_tmp) == []
    ds = open_with_xarray(source, "netcdf4", copy_to_local=True)  # a copy of the S3 entry
    assert len(copies(private_tmp)) == 1
    xr.testing.assert_equal(ds.load(), xr.open_dataset(paths[0], engine="h5netcdf").load())
    ds.close()
    server.fail("d1.nc", "truncate", "truncate")  # every try fails
    with pytest.raises(InputError, match="d1.nc"):
        prepare_input(urls[1], cache=cache, retry=FAST)
    assert copies(private_tmp) == []
