"""Recipes reading inputs over HTTP from a server on 127.0.0.1 that fails when told to."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.skipping import SKIPPED_ATTR, read_skipped_inputs
from arcoforge.io import RetryPolicy




FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


pytestmark = pytest.mark.usefixtures("private_default_cache")


def recipe(pattern, target_root, opener=None, xarray_opener=None, **store_kwargs):
    return (
        beam.Create(pattern.items())
        | (opener or af.OpenURLWithFSSpec(open_kwargs=pattern.fsspec_open_kwargs))
        | (xarray_opener or af.OpenWithXarray(file_type=pattern.file_type))
        | af.StoreToZarr(target_root=target_root, combine_dims=pattern.combine_dim_keys, **store_kwargs)
    )


def reference(paths):
    return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override").load()


@pytest.fixture
def served_archive(file_server, daily_archive):
    """Six daily files served as d0.nc ... d5.nc; returns (server, urls, local paths)."""
    paths = daily_archive[:6]
    return file_server, file_server.serve(paths), paths


def test_a_recipe_reads_through_a_flaky_server(served_archive, tmp_path):
    server, urls, paths = served_archive
    server.stall_seconds = 1.0
    for name, failure in zip(["d0.nc", "d1.nc", "d2.nc", "d3.nc", "d4.nc"], [503, 500, 429, "reset", "stall"]):
        server.fail(name, failure)
    # fsspec sizes a file with HEAD, then GET, and reports both failing as FileNotFoundError: still retried
    server.fail("d5.nc", 502, method="HEAD")
    server.fail("d5.nc", 502)
    pattern = af.pattern_from_file_sequence(urls, "time", nitems_per_file=1)
    with af.use_runtime_defaults(cache_root=str(tmp_path / "cache"), retries=FAST,
                                 source_storage_options={"http": {"timeout": 0.3}}):
        af.run_local(recipe(pattern, str(tmp_path), store_name="flaky.zarr", target_chunks={"time": 4}))
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "flaky.zarr").load(), reference(paths))
    assert [server.count(f"d{i}.nc") for i in range(6)] == [2, 2, 2, 2, 2, 2]
    assert server.count("d5.nc", "HEAD") == 2


def test_permanent_failures_stop_the_bake_at_once_naming_url_and_index(served_archive, tmp_path):
    server, urls, _ = served_archive
    server.status["d3.nc"] = 404
    pattern = af.pattern_from_file_sequence(urls, "time")
    with af.use_runtime_defaults(cache_root=str(tmp_path / "cache"), retries=FAST):
        with pytest.raises(Exception, match=r"http://127.0.0.1:\d+/d3.nc \(pattern index Index\(time=3\)\) "
                                            r"does not exist: not found \(HTTP 404\)"):
            af.run_local(recipe(pattern, str(tmp_path), store_name="missing.zarr"))
    assert server.count("d3.nc") <= 1 and server.count("d3.nc", "HEAD") == 1  # never retried
    assert not (tmp_path / "missing.zarr").exists()

    server.status.pop("d3.nc")
    server.fail("d1.nc", 503, 503, 503)
    pattern = af.pattern_from_file_sequence(urls, "time")
    with af.use_runtime_defaults(cache_root=str(tmp_path / "cache2"),
                                 retries=RetryPolicy(attempts=3, base_delay=0.01)):
        with pytest.raises(Exception, match=r"d1.nc \(pattern index Index\(time=1\)\) could not be read: "
                                            r"HTTP 503 Service Unavailable \(gave up after 3 tries\)"):
            af.run_local(recipe(pattern, str(tmp_path), store_name="unavailable.zarr"))
    assert not (tmp_path / "unavailable.zarr").exists()


def test_bad_inputs_are_skipped_filled_and_recorded(served_archive, tmp_path):
    server, urls, paths = served_archive
    server.files["d2.nc"] = server.files["d2.nc"][:3000]  # an HDF5 signature, but half a file: fails to open
    server.status["d3.nc"] = 404
    server.files["d4.nc"] = b"<html><body>Service temporarily unavailable</body></html>"
    pattern = af.pattern_from_file_sequence(urls, "time")
    progress = tmp_path / "progress"
    progress.mkdir()
    with af.use_runtime_defaults(cache_root=str(tmp_path / "cache"), retries=FAST, on_error="skip",
                                 progress_dir=str(progress)):
        af.run_local(recipe(pattern, str(tmp_path), store_name="gaps.zarr", target_chunks={"time": 4}))
    actual = xr.open_zarr(tmp_path / "gaps.zarr").load()
    expected = reference(paths)
    np.testing.assert_array_equal(actual.time.values, expected.time.values)  # continued from the neighbours
    good = [0, 1, 5]
    xr.testing.assert_equal(actual.isel(time=good), expected.isel(time=good))
    for position in (2, 3, 4):
        assert actual.analysed_sst.isel(time=position).isnull().all()
        assert actual.sea_ice_fraction.isel(time=position).isnull().all()

    records = read_skipped_inputs(actual.attrs)
    assert [(r["index"], r["url"], r["stage"]) for r in records] == [
        ({"time": 2}, urls[2], "open"), ({"time": 3}, urls[3], "fetch"), ({"time": 4}, urls[4], "fetch")]
    assert "cannot open" in records[0]["error"]
    assert "not found (HTTP 404)" in records[1]["error"] and "HTML page" in records[2]["error"]
    events = [json.loads(line) for f in progress.glob("events-*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(e["url"] for e in events if e["kind"] == "skipped") == urls[2:5]


def test_a_skipped_input_needs_a_known_length(served_archive, tmp_path):
    server, urls, paths = served_archive
    server.status["d5.nc"] = 404  # the last one: no neighbour after it tells its length
    pattern = af.pattern_from_file_sequence(urls, "time")
    with af.use_runtime_defaults(cache_root=str(tmp_path / "cache"), retries=FAST, on_error="skip"):
        with pytest.raises(Exception, match=r"d5.nc \(pattern index Index\(time=5\)\) was to be skipped, but its "
                                            r"length along 'time' cannot be known.*nitems_per_file"):
            af.run_local(recipe(pattern, str(tmp_path), store_name="unknown.zarr"))
        af.run_local(recipe(pattern, str(tmp_path), store_name="known.zarr",
                            xarray_opener=af.OpenWithXarray(file_type="netcdf4", nitems_per_file={"time": 1})))
    actual = xr.open_zarr(tmp_path / "known.zarr").load()
    np.testing.assert_array_equal(actual.time.values, reference(paths).time.values)
    assert actual.analysed_sst.isel(time=5).isnull().all()
    assert [r["index"] for r in read_skipped_inputs(actual.attrs)] == [{"time": 5}]


def test_without_skipping_nothing_is_recorded(served_archive, tmp_path):
    _, urls, paths = served_archive
    pattern = af.pattern_from_file_sequence(urls[:2], "time")
    with af.use_runtime_defaults(cache_root=str(tmp_path / "cache")):
        af.run_local(recipe(pattern, str(tmp_path), store_name="plain.zarr",
                            opener=af.OpenURLWithFSSpec(max_concurrency=1, on_error="skip")))
    actual = xr.open_zarr(tmp_path / "plain.zarr")
    assert read_skipped_inputs(actual.attrs) == [] and actual.attrs[SKIPPED_ATTR] == "[]"
    xr.testing.assert_equal(actual.load(), reference(paths[:2]))


def test_gzipped_inputs_with_query_string_secrets_and_no_cache(served_archive, tmp_path):
    import gzip

    server, urls, paths = served_archive
    server.token = "query-token-5b6c7d"
    for i in range(3):
        server.files[f"d{i}.nc.gz"] = gzip.compress(server.files[f"d{i}.nc"])
    pattern = af.FilePattern(lambda time: server.url(f"d{time}.nc.gz"), af.ConcatDim("time", [0, 1, 2]),
                             query_string_secrets={"token": server.token})
    af.run_local(recipe(pattern, str(tmp_path), store_name="gz.zarr",
                        opener=af.OpenURLWithFSSpec(secrets=pattern.query_string_secrets)))
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "gz.zarr").load(), reference(paths[:3]))

    # Read over the network while the write tasks run, without a cache: still retried.
    pattern = af.FilePattern(lambda time: server.url(f"d{time}.nc"), af.ConcatDim("time", [3, 4]),
                             query_string_secrets={"token": server.token})
    server.fail("d4.nc", 503)
    af.run_local(recipe(pattern, str(tmp_path), store_name="direct.zarr",
                        opener=af.OpenURLWithFSSpec(cache=False, retries=FAST, secrets=pattern.query_string_secrets)))
    actual = xr.open_zarr(tmp_path / "direct.zarr").load()
    xr.testing.assert_equal(actual, reference(paths[3:5]))
    assert all(server.token not in str(v) for v in actual.attrs.values())
