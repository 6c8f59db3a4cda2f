"""Baking to and from S3 on a moto server started on 127.0.0.1, and keeping secrets out of every output."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import apache_beam as beam
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge import stac
from arcoforge.openers import prepare_input
from arcoforge.skipping import read_skipped_inputs
from arcoforge.io import RetryPolicy
from arcoforge.io.zarr_store import open_store




FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


pytestmark = pytest.mark.usefixtures("private_default_cache")


def reference(paths):
    return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override").load()


def mixed_inputs(server, fs, bucket, paths):
    """Even days served over HTTP, odd days in the bucket; returns their URLs in order."""
    urls = []
    for i, path in enumerate(paths):
        if i % 2:
            fs.put_file(path, f"{bucket}/inputs/d{i}.nc")
            urls.append(f"s3://{bucket}/inputs/d{i}.nc")
        else:
            server.files[f"d{i}.nc"] = Path(path).read_bytes()
            urls.append(server.url(f"d{i}.nc"))
    return urls


def test_inputs_over_http_and_s3_bake_to_s3_and_open_from_s3(file_server, s3, s3_filesystem, daily_archive, tmp_path,
                                                             schemas_dir):
    options, bucket = s3
    fs = s3_filesystem(options)
    paths = daily_archive[:6]
    urls = mixed_inputs(file_server, fs, bucket, paths)
    file_server.fail("d0.nc", 503, "reset")
    file_server.fail("d2.nc", "truncate")
    pattern = af.pattern_from_file_sequence(urls, "time", nitems_per_file=1)
    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.StoreToZarr(store_name="mixed.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={"time": 4})
        | af.WriteSTAC(collection_id="mixed", schemas_dir=str(schemas_dir))
    )
    target = f"s3://{bucket}/stores"
    with af.use_runtime_defaults(target_root=target, storage_options=options, source_storage_options={"s3": options},
                                 cache_root=str(tmp_path / "cache"), retries=FAST):
        af.run_local(recipe)

    actual = xr.open_zarr(f"{target}/mixed.zarr", storage_options=options)
    xr.testing.assert_equal(actual.load(), reference(paths))
    assert [file_server.count(f"d{i}.nc") for i in (0, 2, 4)] == [3, 2, 1]
    assert zarr.open_group(open_store(f"{target}/mixed.zarr", options, read_only=True), mode="r")[
        "analysed_sst"].chunks == (4, 12, 24)

    collection = stac.read_json(f"{target}/stac/mixed/collection.json", options)
    assert collection["assets"]["zarr"]["href"] == "../../mixed.zarr"  # under the root: relative, portable
    assert stac.validate_stac_tree(f"{target}/stac/catalog.json", schemas_dir, options) == []
    reopened = stac.open_dataset_from_collection(f"{target}/stac/mixed/collection.json", storage_options=options)
    xr.testing.assert_equal(reopened.load(), actual.load())


def test_no_secret_reaches_any_output_or_log(file_server, s3, s3_filesystem, daily_archive, tmp_path, monkeypatch,
                                            caplog, capfd):
    options, bucket = s3
    s3_secret, netrc_password = "PLANTED-s3-secret-c0ffee", "PLANTED-netrc-pw-beef42"
    query_token, header_token = "PLANTED-query-token-d00d", "PLANTED-header-token-f00d"
    # Secrets of every shape: short (under 6 characters), under names on no list, in URL user info.
    short_query, odd_query, odd_header, odd_option, userinfo = "Zq7Xw", "Kj4Pw9", "Hd8Vq", "So3Lk", "Up9Wm"
    planted = [s3_secret, netrc_password, query_token, header_token, short_query, odd_query, odd_header,
               odd_option, userinfo]
    options = {**options, "secret": s3_secret, "config_kwargs": {"user_agent_extra": odd_option}}  # moto: any key
    fs = s3_filesystem(options)
    fs.mkdir(f"{bucket}/inputs")
    paths = daily_archive[:6]
    urls = mixed_inputs(file_server, fs, bucket, paths)
    file_server.basic_auth = ("scientist", netrc_password)
    file_server.token = query_token
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text(f"machine 127.0.0.1 login scientist password {netrc_password}\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    file_server.status["d4.nc"] = 404  # skipped: its URL (with the token) and error land in attrs and logs
    file_server.fail("d2.nc", 503)

    # The token goes into the HTTP URLs only (query_string_secrets would add it to the S3 ones too).
    signed = [f"{url}?token={query_token}&pwd={short_query}&zz_odd={odd_query}" if url.startswith("http") else url
              for url in urls]
    # the skipped input also carries user info (wrong credentials: it is refused, then skipped)
    signed[4] = signed[4].replace("http://", f"http://someone:{userinfo}@")
    pattern = af.FilePattern(lambda time: signed[time], af.ConcatDim("time", list(range(6)), nitems_per_file=1))

    def recipe():
        return (
            beam.Create(pattern.items())
            | af.OpenURLWithFSSpec()
            | af.OpenWithXarray(file_type=pattern.file_type)
            | af.StoreToZarr(store_name="secret.zarr", combine_dims=pattern.combine_dim_keys)
            | af.WriteSTAC(collection_id="secret")
        )

    progress = tmp_path / "progress"
    progress.mkdir()
    target = f"s3://{bucket}/stores"
    runtime = dict(target_root=target, storage_options=options, cache_root=str(tmp_path / "cache"),
                   source_storage_options={"s3": options, "http": {"headers": {"X-Api-Key": header_token,
                                                                                "X-Odd": odd_header}}},
                   retries=FAST, on_error="skip", progress_dir=str(progress))
    # Handlers other tests left on the root logger may write to streams pytest has closed since; logging
    # then prints the raw exception being handled. Only this test's capture is kept.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if isinstance(h, type(caplog.handler))])
    caplog.set_level(logging.DEBUG)
    for name in ("apache_beam", "botocore", "aiobotocore", "urllib3"):  # volume, not secrets, comes from these
        logging.getLogger(name).setLevel(logging.INFO)
    with af.use_runtime_defaults(**runtime):
        af.run_local(recipe())
    # the secrets were used
    assert all(query == f"token={query_token}&pwd={short_query}&zz_odd={odd_query}"
               for query in file_server.seen_queries)
    ds = xr.open_zarr(f"{target}/secret.zarr", storage_options=options)
    assert [r["index"] for r in read_skipped_inputs(ds.attrs)] == [{"time": 4}]

    # A bake that fails on a bad input: its error, and the traceback, hold no secret either.
    file_server.status["d0.nc"] = 403
    with af.use_runtime_defaults(**{**runtime, "on_error": None, "cache_root": str(tmp_path / "cache2")}):
        with pytest.raises(Exception) as failure:
            af.run_local(recipe())
    assert "d0.nc" in str(failure.value) and "403" in str(failure.value)

    outputs = {f"s3://{path}": fs.cat_file(path) for path in fs.find(bucket)}
    outputs.update({str(path): path.read_bytes() for path in tmp_path.rglob("*")
                    if path.is_file() and path != netrc_file})
    assert any(name.endswith("collection.json") for name in outputs) and any("cache" in n for n in outputs)
    texts = {"log": caplog.text, "stdout+stderr": "".join(capfd.readouterr()),
             "error": "".join(traceback.format_exception(failure.value))}
    assert "DEBUG" in caplog.text and "d4.nc" in caplog.text
    for secret in planted:
        leaks = [name for name, data in outputs.items() if secret.encode() in data]
        leaks += [name for name, text in texts.items() if secret in text]
        assert not leaks, f"{secret} found in {leaks}"


def test_credentials_from_an_aws_profile_and_the_environment(s3, s3_filesystem, daily_archive, tmp_path, monkeypatch):
    options, bucket = s3
    fs = s3_filesystem(options)
    fs.put_file(daily_archive[0], f"{bucket}/d0.nc")
    credentials = tmp_path / "credentials"
    credentials.write_text("[arco]\naws_access_key_id = profile-key-id\naws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    endpoint = {"endpoint_url": options["endpoint_url"], "client_kwargs": options["client_kwargs"]}

    source = prepare_input(f"s3://{bucket}/d0.nc", 0, cache=str(tmp_path / "cache"),
                           storage_options={"s3": {**endpoint, "profile": "arco"}}, retry=FAST)
    assert Path(source).read_bytes() == Path(daily_archive[0]).read_bytes()
    with pytest.raises(af.InputError, match=r"s3://.*/d0.nc \(pattern index 1\) could not be read: "
                                            r"ProfileNotFound: The config profile \(nope\) could not be found"):
        prepare_input(f"s3://{bucket}/d0.nc", 1, cache=str(tmp_path / "other"),
                      storage_options={**endpoint, "profile": "nope"}, retry=FAST)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    store = zarr.open_group(open_store(f"s3://{bucket}/env.zarr", endpoint), mode="w")
    store.attrs["written"] = "with credentials from the environment"
    assert json.loads(fs.cat_file(f"{bucket}/env.zarr/zarr.json"))["attributes"]["written"].startswith("with")
    with pytest.raises(af.InputError, match=r"s3://.*/missing.nc \(pattern index 2\) does not exist"):
        prepare_input(f"s3://{bucket}/missing.nc", 2, cache=str(tmp_path / "cache"), storage_options=endpoint,
                      retry=FAST)
