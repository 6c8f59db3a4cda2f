"""Virtual references to the inputs' chunks: kerchunk JSON, kerchunk parquet, and an Icechunk repository.

Each output is opened with xarray and compared with ``open_mfdataset`` of the
inputs, for local files and files served over HTTP; NetCDF3 inputs go through
VirtualiZarr's NetCDF3 parser; inputs whose encodings differ stop with an error
naming the file and the variable.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import apache_beam as beam
import icechunk
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
from arcoforge import stac
from arcoforge.demo import write_demo_archive
from arcoforge.io import virtual_refs as vr
from arcoforge.io.icechunk_store import history, open_repository
from arcoforge.runtime.runners import local_pipeline_options, local_runner


pytestmark = [
    # Third-party notices about libraries they use, not what is tested: fsspec reads parquet references with
    # pandas' fastparquet engine; the inputs' zlib is a numcodecs codec in the references' Zarr v3 metadata.
    pytest.mark.filterwarnings("ignore:The 'fastparquet' engine is deprecated"),
    pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification"),
]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("virtual-inputs")
    return [str(p) for p in write_demo_archive(folder, ndays=6, nlat=10, nlon=16, start=dt.date(2003, 7, 1))]


def expected(paths) -> xr.Dataset:
    return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time", data_vars="minimal",
                             coords="minimal", compat="override").load()


def bake(urls: list[str], root: str, icechunk: bool = True, source_options: dict | None = None) -> None:
    """One pipeline: the inputs' references opened once, written as JSON, as parquet and into Icechunk."""
    pattern = af.pattern_from_file_sequence(urls, "time", nitems_per_file=1)
    with beam.Pipeline(runner=local_runner(1), options=local_pipeline_options(1)) as pipeline:
        opened = (pipeline | beam.Create(pattern.items())
                  | af.OpenWithKerchunk(file_type=pattern.file_type, inline_threshold=300,
                                        storage_options=source_options))
        for name in ("reference.json", "reference.parquet"):
            _ = opened | f"Write {name}" >> af.WriteCombinedReference(
                "refs", concat_dims=["time"], identical_dims=["lat", "lon"], target_root=root, output_file_name=name)
        if icechunk:
            _ = opened | af.WriteVirtualIcechunk("virtual.icechunk", concat_dims=["time"],
                                                 identical_dims=["lat", "lon"], target_root=root,
                                                 source_storage_options=source_options)


def assert_references_equal(root: Path, protocol: str, reference: xr.Dataset, remote_options: dict | None = None):
    for name in ("reference.json", "reference.parquet"):
        # remote_protocol: fsspec guesses it from one reference, which may be an inlined chunk's (no URL)
        refs = xr.open_dataset(str(root / "refs" / name), engine="kerchunk",
                               storage_options={"remote_protocol": protocol, "remote_options": remote_options or {}})
        xr.testing.assert_equal(refs.load(), reference)


def open_virtual_icechunk(url: str, prefix: str, credentials=None) -> xr.Dataset:
    repo = open_repository(url, create=False, virtual_credentials={prefix: credentials})
    return xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)


def test_local_inputs_as_json_parquet_and_icechunk_references(archive, tmp_path):
    bake(archive, str(tmp_path))
    reference = expected(archive)
    assert_references_equal(tmp_path, "file", reference)
    prefix = "file://" + os.path.dirname(archive[0]) + "/"
    xr.testing.assert_equal(open_virtual_icechunk(str(tmp_path / "virtual.icechunk"), prefix).load(), reference)
    # References, not copies: the repository holds no chunk of the inputs' size.
    stored = sum(p.stat().st_size for p in (tmp_path / "virtual.icechunk").rglob("*") if p.is_file())
    assert stored < sum(os.path.getsize(p) for p in archive) / 2
    commit = next(history(str(tmp_path / "virtual.icechunk")))
    assert commit.metadata["kind"] == "virtual" and commit.metadata["n_inputs"] == 6
    # Its STAC asset says it is virtual, which snapshot, and which location readers must authorize.
    path = stac.write_store_collection(str(tmp_path / "virtual.icechunk"), str(tmp_path), quicklook=False)
    asset = stac.read_json(path)["assets"]["zarr"]
    assert "virtual" in asset["roles"] and asset["icechunk:virtual_chunk_containers"] == [prefix]
    assert asset["icechunk:snapshot_id"] == commit.id
    xr.testing.assert_equal(stac.open_dataset_from_collection(path).load(), reference)


def test_http_inputs_as_json_and_parquet_references(archive, tmp_path, file_server):
    for path in archive:
        file_server.files[Path(path).name] = Path(path).read_bytes()
    urls = [file_server.url(Path(p).name) for p in archive]
    bake(urls, str(tmp_path), icechunk=False)
    assert_references_equal(tmp_path, "http", expected(archive))
    # Icechunk 1.x would store these references but read them without the port: stopped before writing.
    with pytest.raises(af.RecipeError, match=rf"{urls[0]}: Icechunk .* without the URL's port"):
        vr.check_icechunk_can_read(urls)


def test_s3_inputs_as_json_parquet_and_icechunk_references(archive, tmp_path, s3, s3_filesystem):
    options, bucket = s3
    fs = s3_filesystem(options)
    urls = []
    for path in archive:
        fs.put_file(path, f"{bucket}/inputs/{Path(path).name}")
        urls.append(f"s3://{bucket}/inputs/{Path(path).name}")
    bake(urls, str(tmp_path), source_options={"s3": options})
    reference = expected(archive)
    assert_references_equal(tmp_path, "s3", reference, options)
    credentials = icechunk.s3_static_credentials(access_key_id=options["key"], secret_access_key=options["secret"])
    actual = open_virtual_icechunk(str(tmp_path / "virtual.icechunk"), f"s3://{bucket}/inputs/", credentials)
    xr.testing.assert_equal(actual.load(), reference)


def _netcdf(path: Path, start: int, scale: float | None = None, fmt: str = "NETCDF4") -> str:
    times = pd.date_range("2010-01-01", periods=3, freq="D") + pd.Timedelta(days=start)
    ds = xr.Dataset({"tas": (("time", "y", "x"), np.arange(start * 12, start * 12 + 36, dtype="f4").reshape(3, 3, 4))},
                    coords={"time": times, "y": np.arange(3.0), "x": np.arange(4.0)})
    encoding = {"time": {"units": "days since 2010-01-01"}}
    if scale is not None:
        encoding["tas"] = {"dtype": "int16", "scale_factor": scale, "_FillValue": -999}
    engine = "scipy" if fmt.startswith("NETCDF3") else "h5netcdf"
    ds.to_netcdf(path, format=fmt, engine=engine, encoding=encoding)
    return str(path)


def test_netcdf3_inputs_through_the_netcdf3_parser(tmp_path):
    paths = [_netcdf(tmp_path / f"n{i}.nc", 3 * i, fmt="NETCDF3_64BIT") for i in range(3)]
    opened = [vr.open_virtual(p, "netcdf3") for p in paths]
    url = vr.write_reference_file(vr.combine(opened, ["time"]), str(tmp_path / "refs" / "reference.json"))
    actual = xr.open_dataset(url, engine="kerchunk").load()
    xr.testing.assert_equal(actual, xr.open_mfdataset(paths, engine="scipy").load())


def test_inputs_whose_encodings_differ_stop_naming_file_and_variable(tmp_path):
    paths = [_netcdf(tmp_path / "a.nc", 0, scale=0.5), _netcdf(tmp_path / "b.nc", 3, scale=0.25)]
    # (with the default threshold, these tiny arrays are loaded and decoded: any encodings combine)
    xr.testing.assert_equal(vr.combine([vr.open_virtual(p) for p in paths], ["time"]).load(),
                            xr.open_mfdataset(paths).load())
    opened = [vr.open_virtual(p, "netcdf4", inline_threshold=0) for p in paths]
    with pytest.raises(af.InputError, match=r"b\.nc: variable 'tas' has scale_factor 0\.25, 0\.5 in file://.*a\.nc"):
        vr.combine(opened, ["time"])


def test_a_codec_or_dtype_zarr_cannot_express_stops_naming_file_and_variable(tmp_path):
    import h5py

    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("fine", data=np.arange(64, dtype="f4").reshape(8, 8), chunks=(4, 4), compression="gzip")
        f.create_dataset("packed", data=np.arange(64, dtype="f4").reshape(8, 8), chunks=(4, 4), scaleoffset=2)
    with pytest.raises(af.InputError, match=r"mixed\.h5, variable 'packed': cannot be referenced virtually: .*scaleoffset"):
        vr.open_virtual(str(path), "hdf5", inline_threshold=0)
    compound = tmp_path / "compound.h5"
    with h5py.File(compound, "w") as f:
        f.create_dataset("pair", data=np.zeros(8, dtype=[("a", "f4"), ("b", "i4")]), chunks=(4,))
    with pytest.raises(af.InputError, match=r"compound\.h5, variable 'pair': .*compound dtype"):
        vr.open_virtual(str(compound), "hdf5", inline_threshold=0)
    # A format with no parser fails when the recipe is built, not in a worker.
    with pytest.raises(af.RecipeError, match="no virtual-reference parser for file type 'grib'"):
        af.OpenWithKerchunk(file_type=af.FileType.grib)


def test_icechunk_refuses_chunks_of_an_input_modified_after_the_references(archive, tmp_path):
    import shutil
    import time

    folder = tmp_path / "inputs"
    folder.mkdir()
    paths = [shutil.copy(p, folder) for p in archive[:2]]
    opened = [vr.open_virtual(p, inline_threshold=0) for p in paths]
    url = str(tmp_path / "v.icechunk")
    vr.write_virtual_icechunk(vr.combine(opened, ["time"]), url, [vr.as_url(p) for p in paths], "main", "test", {})
    prefix = f"file://{folder}/"
    xr.testing.assert_equal(open_virtual_icechunk(url, prefix).load(), expected(paths))
    later = time.time() + 60  # an input rewritten after the references were committed
    os.utime(paths[0], (later, later))
    with pytest.raises(Exception, match="virtual chunk has changed"):
        open_virtual_icechunk(url, prefix).load()


def test_the_example_recipes_lint_clean_and_the_virtual_one_bakes_with_the_cli(tmp_path, monkeypatch, capsys):
    from arcoforge.cli import main

    recipes = Path(__file__).parent.parent / "recipes"
    write_demo_archive(tmp_path / "inputs", ndays=3)
    monkeypatch.setenv("ARCOFORGE_DEMO_INPUTS", str(tmp_path / "inputs"))
    monkeypatch.setenv("ARCOFORGE_DEMO_DAYS", "3")
    for name in ("daily_sst_icechunk.py", "daily_sst_virtual.py"):
        assert main(["-q", "lint", str(recipes / name)]) == 0
        assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    assert main(["-q", "bake", str(recipes / "daily_sst_virtual.py"), "--target-root", str(tmp_path / "out")]) == 0
    refs = xr.open_dataset(str(tmp_path / "out" / "daily-sst-refs" / "reference.json"), engine="kerchunk",
                           storage_options={"remote_protocol": "file"})
    assert refs.sizes["time"] == 3
    assert next(history(str(tmp_path / "out" / "daily-sst-virtual.icechunk"))).metadata["kind"] == "virtual"
