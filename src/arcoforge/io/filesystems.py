"""Filesystems: which fsspec filesystem a URL is read through, with which options and credentials.

Inputs and stores are named by fsspec URLs (``s3://bucket/key``, ``https://host/a.nc``,
local paths). Every remote read and write goes through :func:`filesystem`, so
the rules that turn a recipe's options into a working filesystem live here:

- :func:`options_for` picks the options of a URL's protocol from a flat dict or
  one keyed by protocol (``{"s3": {...}, "https": {...}}``); :func:`merge_options`
  layers them; :func:`split_open_kwargs` separates a pattern's
  ``fsspec_open_kwargs`` into filesystem options, file options and compression.
- HTTP gets a connect/read timeout and ``~/.netrc`` credentials (aiohttp's
  ``trust_env``) by default (:func:`http_options`, :func:`netrc_credentials`).
- Every option value that may be a secret is registered with
  :mod:`arcoforge.io.redaction` before the filesystem is made, so it never
  reaches a log.
"""

from __future__ import annotations

import base64
import logging
import netrc
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import fsspec

from ..errors import RecipeError
from .redaction import register_secrets, secret_values

logger = logging.getLogger(__name__)

# Filesystem protocols that may key a per-protocol options dict.
_PROTOCOLS = {"s3", "s3a", "http", "https", "gs", "gcs", "az", "abfs", "adl", "file", "local", "memory", "ftp",
              "sftp", "ssh", "hf", "oci", "ocilake", "webdav"}
# HTTP reads that stall this long fail (and are retried); connecting has the same limit.
DEFAULT_HTTP_TIMEOUT = 60.0


def netrc_credentials(host: str) -> tuple[str, str] | None:
    """``(login, password)`` for ``host`` from ``$NETRC`` or ``~/.netrc``, if it has an entry.

    HTTP sources use these automatically (aiohttp's ``trust_env``), also on the
    host a request is redirected to, as NASA Earthdata Login does.
    """
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.isfile(path):
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError) as error:
        logger.warning("cannot read %s: %s", path, type(error).__name__)
        return None
    if not entry:
        return None
    login, _, password = entry
    return (login or "", password or "")


def protocol_of(url: str) -> str:
    """The fsspec protocol of a URL (``file`` for a plain path).

    >>> protocol_of("s3://b/k"), protocol_of("/tmp/x"), protocol_of("simplecache::https://h/x")
    ('s3', 'file', 'https')
    """
    last = url.rsplit("::", 1)[-1]
    return last.split("://", 1)[0].lower() if "://" in last else "file"


def options_for(url: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The filesystem options that apply to ``url``.

    ``options`` is either flat (applied to every remote URL) or keyed by protocol
    (``{"s3": {...}, "https": {...}}``; ``http`` options serve ``https`` too).

    >>> options_for("https://h/a.nc", {"s3": {"anon": True}, "http": {"headers": {"X": "1"}}})
    {'headers': {'X': '1'}}
    >>> options_for("s3://b/a.nc", {"anon": True})
    {'anon': True}
    """
    options = dict(options or {})
    if options and all(key in _PROTOCOLS and isinstance(value, Mapping) for key, value in options.items()):
        protocol = protocol_of(url)
        fallback = {"https": "http", "http": "https", "s3a": "s3", "gcs": "gs", "gs": "gcs", "local": "file"}
        chosen = options.get(protocol, options.get(fallback.get(protocol, ""), {}))
        return dict(chosen)
    if protocol_of(url) in ("file", "local", "memory"):
        return {}  # flat options are meant for remote sources
    return options


def merge_options(base: Mapping[str, Any] | None, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested dicts (``client_kwargs``, ``headers``) merged key by key."""
    merged = dict(base or {})
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = value
    return merged


# Keyword arguments of fsspec.open that are about the file, not the filesystem.
_FILE_KWARGS = ("block_size", "cache_type", "cache_options", "mode", "compression", "encoding", "errors",
                "newline", "num", "expand")


def split_open_kwargs(open_kwargs: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Split a pattern's ``fsspec_open_kwargs`` into filesystem options, file options and compression.

    >>> split_open_kwargs({"anon": True, "block_size": 0, "compression": "gzip"})
    ({'anon': True}, {'block_size': 0}, 'gzip')
    """
    fs_options, file_options, compression = {}, {}, None
    for key, value in (open_kwargs or {}).items():
        if key == "compression":
            compression = value
        elif key in ("mode", "encoding", "errors", "newline", "num", "expand"):
            continue  # inputs are always read as bytes
        elif key in _FILE_KWARGS:
            file_options[key] = value
        else:
            fs_options[key] = value
    return fs_options, file_options, compression


def infer_compression(url: str, compression: str | None) -> str | None:
    """The compression of an input: as given, or inferred from its name when ``"infer"`` or not given.

    >>> infer_compression("https://h/a.nc.gz", None), infer_compression("/d/a.nc", "infer")
    ('gzip', None)
    """
    if compression not in (None, "infer"):
        if compression not in fsspec.available_compressions():
            raise RecipeError(f"compression {compression!r} is not one of {fsspec.available_compressions()}")
        return compression
    path = urllib.parse.urlsplit(url).path if "://" in url else url
    return fsspec.utils.infer_compression(path)


def http_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """HTTP filesystem options with our defaults: ``~/.netrc`` and proxy variables trusted, a read timeout.

    ``timeout`` (seconds, our shorthand) sets aiohttp's connect and read timeouts;
    an explicit ``client_kwargs["timeout"]`` wins.
    """
    import aiohttp

    options = dict(options)
    client = dict(options.get("client_kwargs") or {})
    timeout = options.pop("timeout", DEFAULT_HTTP_TIMEOUT)
    client.setdefault("trust_env", True)
    if "timeout" not in client:
        client["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=float(timeout), sock_read=float(timeout))
    if "auth" in options and isinstance(options["auth"], (list, tuple)):
        options["auth"] = aiohttp.BasicAuth(*options["auth"])
    options["client_kwargs"] = client
    return options


def filesystem(url: str, options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of ``url``, with ``options`` (and HTTP defaults) applied."""
    options = dict(options or {})
    secrets = secret_values(options)
    if protocol_of(url) in ("http", "https"):
        options = http_options(options)
        host = urllib.parse.urlsplit(url).hostname
        credentials = netrc_credentials(host) if host else None
        if credentials:  # aiohttp reads ~/.netrc itself; its password must stay out of logs all the same
            login, password = credentials
            secrets |= {password, base64.b64encode(f"{login}:{password}".encode()).decode()}
    register_secrets(secrets)
    return fsspec.core.url_to_fs(url, **options)
