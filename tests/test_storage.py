"""Credentials, secrets, retries and the verified input cache, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import errno
import json
import logging
import pickle
import shutil
import threading
from pathlib import Path

import botocore.exceptions
import fsspec
import numpy as np
import pytest
import s3fs.errors

from arcoforge import FileType, InputError, RecipeError
from arcoforge.openers import CachedPath, open_with_xarray, prepare_input
from arcoforge.io import (
    InputCache,
    RemoteInput,
    RetryPolicy,
    call_with_retries,
    describe_failure,
    filesystem,
    is_transient,
    options_for,
    public_url as public_name,
    redact,
    register_secrets,
    secret_values,
)




FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


pytestmark = pytest.mark.usefixtures("private_default_cache")


@pytest.fixture
def served(file_server, daily_archive):
    """The first daily file, served as ``d0.nc``; returns (server, its bytes)."""
    data = Path(daily_archive[0]).read_bytes()
    file_server.files["d0.nc"] = data
    return file_server, data


def cache_entries(root: Path) -> list[Path]:
    """Manifests in a cache folder: the entries that look complete."""
    return sorted(root.rglob("manifest.json"))


# ---------------------------------------------------------------------------------------------
# Secrets and options


def test_secrets_are_found_and_redacted_from_text_and_urls():
    options = {"key": "AKIAEXAMPLE", "secret": "plain-secret-123", "anon": False, "profile": "science",
               "client_kwargs": {"endpoint_url": "http://h:9000", "aws_session_token": "session-tok-456"},
               "headers": {"Authorization": "Bearer bearer-tok-789"}}
    found = secret_values(options, ["https://me:url-password@h/a.nc?token=query-tok-000&v=1"])
    # secrets by default: every value but harmless ones (profile, endpoint_url, anon), the user name, v=1 too
    assert found == {"AKIAEXAMPLE", "plain-secret-123", "session-tok-456", "Bearer bearer-tok-789",
                     "bearer-tok-789", "url-password", "query-tok-000", "me", "1"}
    text = redact("failed https://me:url-password@h/a.nc?token=query-tok-000 with plain-secret-123", found)
    assert not any(secret in text for secret in found)
    assert "https://h/a.nc" in public_name("https://me:url-password@h/a.nc?token=query-tok-000")
    # a query string is never published, only a digest that keeps distinct URLs distinct
    assert public_name("https://h/a.nc?version=2").startswith("https://h/a.nc#q")
    assert public_name("https://h/a.nc?version=2") != public_name("https://h/a.nc?version=3")


def test_registered_secrets_never_reach_a_log(caplog):
    secret = "log-secret-4e1f2a"
    register_secrets([secret])
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.DEBUG):
        log.debug("requesting https://h/x.nc?sig=%s", secret)
        try:
            raise OSError(f"connection to https://h/x.nc?sig={secret} failed")
        except OSError:
            log.warning("retrying", exc_info=True)
    assert "requesting" in caplog.text and "retrying" in caplog.text
    assert secret not in caplog.text


def test_options_by_protocol():
    options = {"s3": {"anon": True}, "https": {"headers": {"X-Key": "k"}}}
    assert options_for("s3://bucket/a.nc", options) == {"anon": True}
    assert options_for("https://h/a.nc", options) == {"headers": {"X-Key": "k"}}
    assert options_for("http://h/a.nc", options) == {"headers": {"X-Key": "k"}}
    assert options_for("/local/a.nc", {"anon": True}) == {}


# ---------------------------------------------------------------------------------------------
# Retries


def real_http_error(server, status: int) -> BaseException:
    """The exception fsspec raises for a real response of ``status``."""
    server.status["broken.nc"] = status
    fs, path = filesystem(server.url("broken.nc"))
    try:
        fs.cat_file(path)
    except Exception as error:
        return error
    raise AssertionError("no error")


def test_transient_and_permanent_failures_are_told_apart(file_server):
    for status in (500, 502, 503, 504, 429):
        error = real_http_error(file_server, status)
        assert is_transient(error), status
        assert describe_failure(error).startswith(f"HTTP {status}")
    for status in (404, 403):
        error = real_http_error(file_server, status)
        assert not is_transient(error), status
    assert describe_failure(real_http_error(file_server, 403)) == "access denied (HTTP 403)"

    def s3_error(code: str, status: int) -> BaseException:
        client_error = botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
        return s3fs.errors.translate_boto_error(client_error)

    assert is_transient(s3_error("SlowDown", 503))
    assert is_transient(s3_error("InternalError", 500))
    assert not is_transient(s3_error("NoSuchKey", 404))
    assert not is_transient(s3_error("AccessDenied", 403))
    assert is_transient(ConnectionResetError(errno.ECONNRESET, "reset by peer"))
    assert is_transient(TimeoutError())
    assert not is_transient(ValueError("a bug"))


def test_retries_back_off_with_jitter_and_stop_at_permanent_errors():
    policy = RetryPolicy(attempts=6, base_delay=0.1, max_delay=0.5)
    delays = [policy.delay(attempt) for attempt in range(1, 6) for _ in range(20)]
    assert all(0 <= d <= 0.5 for d in delays) and len(set(delays)) > 50
    assert max(policy.delay(1) for _ in range(50)) <= 0.1

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        return "ok"

    assert call_with_retries(flaky, FAST, "test") == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(FileNotFoundError):
        call_with_retries(lambda: calls.append(1) or open("/nonexistent/x.nc"), FAST, "test")
    assert len(calls) == 1
    with pytest.raises(RecipeError, match="at least 1"):
        RetryPolicy(attempts=0)


# ---------------------------------------------------------------------------------------------
# The input cache


def test_an_input_is_fetched_once_and_served_from_the_cache_without_network(served, tmp_path):
    server, data = served
    cache = InputCache(str(tmp_path / "cache"))
    source = prepare_input(server.url("d0.nc"), 0, cache=cache, retry=FAST)
    assert isinstance(source, CachedPath) and source.source_name == server.url("d0.nc")
    assert Path(source).read_bytes() == data
    assert server.count("d0.nc") == 1
    manifest = json.loads(cache_entries(tmp_path / "cache")[0].read_text())
    assert manifest["size"] == len(data) and manifest["url"] == server.url("d0.nc")

    server.stop()  # a hit needs no network
    again = prepare_input(server.url("d0.nc"), 0, cache=cache, retry=FAST)
    assert again == source
    ds = open_with_xarray(again, FileType.netcdf4, index=0)
    assert ds.encoding["source"] == server.url("d0.nc")
    assert ds.analysed_sst.shape == (1, 12, 24)


@pytest.mark.parametrize("damage", ["no manifest", "partial download", "short file", "flipped byte"])
def test_a_partial_or_corrupt_cache_entry_is_fetched_again(served, tmp_path, damage, caplog):
    server, data = served
    cache = InputCache(str(tmp_path / "cache"))
    path = Path(prepare_input(server.url("d0.nc"), 0, cache=cache, retry=FAST))
    manifest = path.parent / "manifest.json"
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "partial download":
        manifest.unlink()
        path.unlink()
        (path.parent / ".partial-1-abc").write_bytes(data[:100])
    elif damage == "short file":
        path.write_bytes(data[:-10])
    else:
        corrupted = bytearray(data)
        corrupted[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(corrupted))
    with caplog.at_level(logging.WARNING, logger="arcoforge"):
        again = Path(prepare_input(server.url("d0.nc"), 0, cache=cache, retry=FAST))
    assert again.read_bytes() == data
    assert server.count("d0.nc") == 2
    assert "fetching it again" in caplog.text
    assert not list(again.parent.glob(".partial-*"))


def test_a_truncated_download_is_retried_and_never_looks_complete(served, tmp_path):
    server, data = served
    cache = InputCache(str(tmp_path / "cache"))
    server.fail("d0.nc", "truncate")
    assert Path(prepare_input(server.url("d0.nc"), 0, cache=cache, retry=FAST)).read_bytes() == data
    assert server.count("d0.nc") == 2

    other = InputCache(str(tmp_path / "other"))
    server.fail("d0.nc", "truncate", "truncate")
    with pytest.raises(InputError, match=r"http://127.0.0.1:\d+/d0.nc \(pattern index 5\) .*(cut short|ended early|"
                                         r"could not be read).*gave up after 2 tries"):
        prepare_input(server.url("d0.nc"), 5, cache=other, retry=RetryPolicy(attempts=2, base_delay=0.01))
    assert cache_entries(tmp_path / "other") == []
    assert not list((tmp_path / "other").rglob(".partial-*"))


def test_a_checksum_mismatch_is_an_error_naming_the_url(served, tmp_path):
    server, data = served
    server.content_md5["d0.nc"] = "AAAAAAAAAAAAAAAAAAAAAA=="
    with pytest.raises(InputError, match=r"/d0.nc \(pattern index 2\) failed its checksum: MD5 [0-9a-f]{32} "
                                         r"but Content-MD5 says 0+ \(gave up after 4 tries\)"):
        prepare_input(server.url("d0.nc"), 2, cache=InputCache(str(tmp_path / "cache")), retry=FAST)
    assert server.count("d0.nc") == 4
    assert cache_entries(tmp_path / "cache") == []


def test_an_html_error_page_fails_at_once(served, tmp_path):
    server, _ = served
    server.fail("d0.nc", "html")
    with pytest.raises(InputError, match=r"/d0.nc \(pattern index 1\) is an HTML page, not a NetCDF or HDF5"):
        prepare_input(server.url("d0.nc"), 1, cache=InputCache(str(tmp_path / "cache")), retry=FAST)
    assert server.count("d0.nc") == 1
    assert cache_entries(tmp_path / "cache") == []


def test_a_machine_local_cache_hands_on_a_picklable_source_that_fetches_again_elsewhere(served, tmp_path):
    server, data = served
    cache = InputCache(str(tmp_path / "here"), machine_local=True)
    source = prepare_input(server.url("d0.nc"), 0, cache=cache, retry=FAST)
    assert isinstance(source, RemoteInput) and server.count("d0.nc") == 1
    ds = open_with_xarray(source, FileType.netcdf4, index=0)
    expected = ds.analysed_sst.values
    # What a worker on another machine gets: the pickled dataset, and a cache folder without the input.
    pickled = pickle.dumps(ds)
    shutil.rmtree(tmp_path / "here")
    moved = pickle.loads(pickled)
    np.testing.assert_array_equal(moved.analysed_sst.values, expected)
    assert server.count("d0.nc") == 2 and cache_entries(tmp_path / "here")


def test_without_a_cache_reads_go_over_the_network_and_survive_failures(served):
    server, data = served
    source = prepare_input(server.url("d0.nc"), 0, cache=False, retry=FAST)
    assert isinstance(source, RemoteInput)
    f = source.open()
    assert f.read(4) == data[:4]
    server.fail("d0.nc", 503, "reset")
    f.seek(1000)
    assert f.read(100) == data[1000:1100]
    clone = pickle.loads(pickle.dumps(f))
    assert clone.tell() == 1100 and clone.read(50) == data[1100:1150]
    ds = open_with_xarray(source, FileType.netcdf4, index=0, load=True)
    assert float(ds.analysed_sst.isnull().mean()) < 1


def test_compressed_inputs_are_cached_decompressed(served, tmp_path):
    import gzip

    server, data = served
    server.files["d0.nc.gz"] = gzip.compress(data)
    source = prepare_input(server.url("d0.nc.gz"), 0, cache=InputCache(str(tmp_path / "c")), retry=FAST)
    assert Path(source).name == "d0.nc" and Path(source).read_bytes() == data
    local = tmp_path / "local.nc.gz"
    local.write_bytes(gzip.compress(data))
    source = prepare_input(str(local), 0, retry=FAST)  # a local compressed file goes through the cache too
    assert open_with_xarray(source, FileType.netcdf4, index=0).analysed_sst.shape == (1, 12, 24)
    server.files["bad.nc.gz"] = b"\x1f\x8b" + b"not really gzip" * 10
    with pytest.raises(InputError, match=r"bad.nc.gz \(pattern index 3\) is not valid gzip data"):
        prepare_input(server.url("bad.nc.gz"), 3, cache=InputCache(str(tmp_path / "c")), retry=FAST)


def test_concurrent_fetches_are_capped(file_server, daily_archive, tmp_path):
    for i, path in enumerate(daily_archive[:6]):
        file_server.files[f"d{i}.nc"] = Path(path).read_bytes()
    file_server.delay_seconds = 0.15
    cache = InputCache(str(tmp_path / "cache"))
    threads = [threading.Thread(target=prepare_input, args=(file_server.url(f"d{i}.nc"), i),
                                kwargs=dict(cache=cache, retry=FAST, max_concurrency=2)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache_entries(tmp_path / "cache")) == 6
    assert file_server.max_active == 2


def test_netrc_credentials_are_used_for_basic_auth(served, tmp_path, monkeypatch):
    server, data = served
    server.basic_auth = ("scientist", "netrc-pass-9f8e")
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine 127.0.0.1 login scientist password netrc-pass-9f8e\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    fsspec.filesystem("http").clear_instance_cache()
    source = prepare_input(server.url("d0.nc"), 0, cache=InputCache(str(tmp_path / "c")), retry=FAST)
    assert Path(source).read_bytes() == data
    (tmp_path / "empty-netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))
    with pytest.raises(InputError, match=r"d0.nc \(pattern index 1\) cannot be read: access denied \(HTTP 401\)"):
        prepare_input(server.url("d0.nc"), 1, cache=InputCache(str(tmp_path / "d")), retry=FAST)
