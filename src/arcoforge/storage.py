"""Remote storage: filesystems and credentials, secrets kept out of sight, retries, the input cache.

Inputs and stores are named by fsspec URLs (``s3://bucket/key``, ``https://host/a.nc``,
local paths). This module holds what every remote read and write needs:

- **Options.** :func:`options_for` picks the filesystem options of a URL's protocol
  from a flat dict or one keyed by protocol (``{"s3": {...}, "https": {...}}``);
  HTTP gets a read timeout and ``~/.netrc`` credentials (``trust_env``) by default.
- **Secrets** are :mod:`arcoforge.redaction`'s (re-exported here): every value
  not known to be harmless is one; :func:`public_name` is how a URL is published.
- **Retries.** :func:`is_transient` tells a failure worth retrying (HTTP 5xx and
  429, timeouts, connection resets, S3 ``SlowDown``) from a permanent one (404,
  403, a body that is not data); :func:`call_with_retries` retries with
  exponential backoff and full jitter.
- **The input cache.** :class:`InputCache` keeps one verified copy of each input:
  a download is written under a temporary name, checked against the size the
  server announced and its checksum (``Content-MD5``, or an S3 ETag that is an
  MD5), and made visible only then, with a manifest holding its size and SHA-256.
  A hit is checked against the manifest and served without network; an entry
  that is partial or corrupt is fetched again.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import netrc
import os
import random
import re
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec

from .deadline import DEFAULT_DEADLINE, Deadline, DeadlineExceeded, call_within
from .errors import InfrastructureError, InputError, RecipeError, describe_input
from .redaction import (  # noqa: F401 (secret handling lives in arcoforge.redaction; re-exported)
    REDACTED,
    environment_secrets,
    redact,
    register_secrets,
    secret_values,
)
from .redaction import public_url as public_name

logger = logging.getLogger(__name__)

T = TypeVar("T")


# Filesystem protocols that may key a per-protocol options dict.
_PROTOCOLS = {"s3", "s3a", "http", "https", "gs", "gcs", "az", "abfs", "adl", "file", "local", "memory", "ftp",
              "sftp", "ssh", "hf", "oci", "ocilake", "webdav"}
# HTTP reads that stall this long fail (and are retried); connecting has the same limit.
DEFAULT_HTTP_TIMEOUT = 60.0
CHUNK_SIZE = 8 * 2**20


# ---------------------------------------------------------------------------------------------
# Credentials and filesystem options


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


# ---------------------------------------------------------------------------------------------
# Retries


# HTTP statuses worth another try: request timeout, too early, too many requests, server errors.
TRANSIENT_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "InternalServerError",
    "500", "502", "503", "504",
})
_TRANSIENT_ERRNO = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT,
                              errno.EPIPE, errno.EBUSY, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH,
                              getattr(errno, "EREMOTEIO", errno.EIO)})


class TransientInputError(InputError):
    """A download that came out wrong in a way another try may fix (truncated, checksum mismatch)."""


class NotDataError(InputError):
    """A remote body that is not a data file (an HTML error page, say): permanent."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def http_status(error: BaseException) -> int | None:
    """The HTTP status behind an error, if there is one (aiohttp, botocore, s3fs)."""
    for current in _chain(error):
        status = getattr(current, "status", None)
        if isinstance(status, int):
            return status
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    return None


def _s3_code(error: BaseException) -> str | None:
    for current in _chain(error):
        response = getattr(current, "response", None)
        if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
            return str(response["Error"].get("Code"))
    return None


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away if the same request is made again.

    Transient: HTTP 408/425/429/5xx, S3 ``SlowDown``/throttling/``InternalError``,
    timeouts, connections reset or refused, bodies cut short. Permanent:
    missing (404) or forbidden (403) inputs, bodies that are not data, and
    anything not known to be transient, so a bug is never retried for hours.
    The status or cause behind a wrapper counts: fsspec reports an HTTP 503
    while sizing a file as ``FileNotFoundError``.
    """
    status = http_status(error)
    if status is not None:
        return status in TRANSIENT_HTTP_STATUS
    code = _s3_code(error)
    if code is not None:
        return code in TRANSIENT_S3_CODES
    for current in _chain(error):
        if isinstance(current, TransientInputError):
            return True
        if isinstance(current, (NotDataError, RecipeError)):
            return False
        if _transient_kind(current):
            return True
    return False


_TRANSIENT_NAMES = frozenset({
    # aiohttp
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError", "ClientOSError",
    "ServerTimeoutError", "ClientConnectorError", "ConnectionTimeoutError", "SocketTimeoutError",
    "ClientConnectionResetError",
    # botocore
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError",
    # fsspec, http.client
    "FSTimeoutError", "IncompleteRead", "RemoteDisconnected",
})


def _transient_kind(error: BaseException) -> bool:
    import asyncio

    if isinstance(error, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    if type(error).__name__ in _TRANSIENT_NAMES:
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNO


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, a transient failure is retried.

    ``attempts`` counts the first try (1 means no retry). The wait before try
    ``n + 1`` is drawn uniformly from ``[0, min(max_delay, base_delay * 2**(n - 1))]``
    ("full jitter"), so many workers hitting one server spread out. ``deadline``
    bounds all tries of one read together, in seconds (``None``: no bound; see
    :mod:`arcoforge.deadline`).
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    deadline: float | None = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        if int(self.attempts) < 1:
            raise RecipeError(f"retries: attempts must be at least 1, got {self.attempts!r}")

    @classmethod
    def of(cls, value: "int | RetryPolicy | Mapping[str, Any] | None") -> "RetryPolicy":
        """A policy from an attempt count, a mapping of fields, a policy, or ``None`` (the default)."""
        if isinstance(value, RetryPolicy):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            return cls(**value)
        return cls(attempts=int(value))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)


def with_deadline(policy: RetryPolicy, seconds: float | None) -> RetryPolicy:
    """``policy`` with its deadline set to ``seconds`` (``arcoforge bake --input-deadline``), if given."""
    import dataclasses

    return policy if seconds is None else dataclasses.replace(policy, deadline=float(seconds))


def call_with_retries(function: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """Call ``function``, retrying transient failures as ``policy`` says; ``what`` names it in logs.

    All tries together end by ``policy.deadline``. The last failure is re-raised
    with ``attempts`` (how many tries were made) set on it.
    """
    attempt = 1
    deadline = Deadline(policy.deadline)
    while True:
        try:
            return call_within(function, deadline, what)
        except Exception as error:
            out_of_time = isinstance(error, DeadlineExceeded) or deadline.remaining() <= 0
            if attempt >= policy.attempts or not is_transient(error) or out_of_time:
                try:
                    error.attempts = attempt  # type: ignore[attr-defined]
                except AttributeError:
                    pass
                raise
            wait = min(policy.delay(attempt), max(0.0, deadline.remaining()))
            logger.info("%s failed (%s), try %d of %d; again in %.2f s",
                        redact(what), describe_failure(error), attempt, policy.attempts, wait)
            time.sleep(wait)
            attempt += 1


def describe_failure(error: BaseException) -> str:
    """A short, secret-free description of why a read failed (no URL: callers name the input)."""
    for current in _chain(error):
        if isinstance(current, (TransientInputError, NotDataError)):
            return redact(str(current))
    status = http_status(error)
    code = _s3_code(error)
    if status in (401, 403) or (status is None and isinstance(error, PermissionError)):
        return f"access denied ({f'HTTP {status}' if status else code or 'permission denied'})"
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket") or (
        status is None and code is None and isinstance(error, FileNotFoundError) and not is_transient(error)
    ):
        return f"not found ({f'HTTP {status}' if status else code or 'no such file'})"
    if status is not None:
        reason = next((getattr(c, "message", "") for c in _chain(error) if getattr(c, "status", None) == status), "")
        text = f"HTTP {status}" + (f" {reason}" if reason and str(reason) != str(status) else "")
        return redact(text + (f" ({code})" if code and code != str(status) else ""))
    if code is not None:
        return f"S3 error {code}"
    # A wrapper without a message of its own (fsspec's FileNotFoundError(url)) says less than its cause.
    current = next((c for c in _chain(error) if _transient_kind(c)), error)
    text = str(current).strip()
    return redact(f"{type(current).__name__}: {text}" if text else type(current).__name__)


# ---------------------------------------------------------------------------------------------
# Concurrency


_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def concurrency_slots(limit: int | None) -> threading.BoundedSemaphore | None:
    """A process-wide semaphore allowing ``limit`` concurrent remote opens (``None``: no limit)."""
    if not limit:
        return None
    if int(limit) < 1:
        raise RecipeError(f"max_concurrency must be at least 1, got {limit!r}")
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(int(limit), threading.BoundedSemaphore(int(limit)))


class _Slot:
    def __init__(self, limit: int | None):
        self.semaphore = concurrency_slots(limit)

    def __enter__(self) -> None:
        if self.semaphore is not None:
            self.semaphore.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        if self.semaphore is not None:
            self.semaphore.release()


# ---------------------------------------------------------------------------------------------
# What a body is


# Leading bytes of the data formats read; anything else that looks like text is an error page.
DATA_SIGNATURES = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n", b"GRIB", b"BUFR")
_TEXT_STARTS = (b"<", b"{", b"[")


def check_data_signature(start: bytes, name: str, index: object = None) -> None:
    """Fail, permanently, when a body is an HTML/XML/JSON document rather than a data file.

    Bodies of unknown binary formats pass: the xarray engine judges them.
    """
    if any(start.startswith(signature) for signature in DATA_SIGNATURES):
        return
    stripped = start.lstrip()
    if stripped[:1] in _TEXT_STARTS or stripped[:9].lower().startswith(b"<!doctype"):
        kind = "an HTML page" if b"html" in start.lower() else "a text document"
        raise NotDataError(
            f"{describe_input(index, name)} is {kind}, not a NetCDF or HDF5 file "
            f"(it starts with {start[:32]!r}); expected a NetCDF3 or HDF5 signature"
        )


# ---------------------------------------------------------------------------------------------
# The input cache


MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CacheEntry:
    """A verified input in the cache: where its bytes are and what they must be."""

    path: str
    size: int
    sha256: str
    local: bool


@dataclass(frozen=True)
class InputCache:
    """A folder (local path or fsspec URL) holding one verified copy of each input.

    Entry ``<root>/<key>/<file name>`` sits beside ``<root>/<key>/manifest.json``;
    the key is a digest of the input's public URL (its secrets left out) and
    compression. Compressed inputs are kept decompressed. The manifest is
    written last, so an entry without one is partial and fetched again.
    ``verify="hash"`` checks a hit's SHA-256 (once per process while the file is
    unchanged); ``"size"`` only its size. Remote cache roots are checked by size.

    ``root=None`` is :func:`default_cache_root`, found on each machine where it
    is used. ``machine_local`` says the folder is this machine's alone (not a
    mount every worker shares): inputs cached there are not handed on as paths.
    """

    root: str | None = None
    storage_options: dict | None = field(default=None, repr=False)
    verify: str = "hash"
    machine_local: bool = False

    def __post_init__(self) -> None:
        if self.verify not in ("hash", "size"):
            raise RecipeError(f"InputCache verify must be 'hash' or 'size', got {self.verify!r}")

    @property
    def location(self) -> str:
        return self.root or default_cache_root()

    @property
    def is_local(self) -> bool:
        return protocol_of(self.location) in ("file", "local")

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        root = self.location
        if self.is_local:
            path = root[len("file://"):] if root.startswith("file://") else root
            return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(path))
        return filesystem(root, self.storage_options)

    def folder(self, name: str, compression: str | None) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem and folder of the entry for input ``name`` (a public URL)."""
        fs, root = self._fs()
        digest = hashlib.sha256(f"{name}\n{compression or ''}".encode()).hexdigest()[:24]
        return fs, f"{root.rstrip('/')}/{digest}"

    def lookup(self, name: str, compression: str | None = None) -> CacheEntry | None:
        """The verified entry of input ``name``, or ``None``; a partial or corrupt entry is removed."""
        fs, folder = self.folder(name, compression)
        manifest_path = f"{folder}/{MANIFEST}"
        try:
            manifest = json.loads(fs.cat_file(manifest_path))
            path = f"{folder}/{manifest['file']}"
            size = int(fs.size(path))
        except FileNotFoundError:
            if fs.exists(folder):
                self._discard(fs, folder, name, "it has no manifest (a download that did not finish)")
            return None
        except (ValueError, KeyError, TypeError) as error:
            self._discard(fs, folder, name, f"its manifest is unreadable ({type(error).__name__})")
            return None
        entry = CacheEntry(path=path, size=int(manifest["size"]), sha256=str(manifest["sha256"]), local=self.is_local)
        if size != entry.size:
            self._discard(fs, folder, name, f"it holds {size} bytes, its manifest says {entry.size}")
            return None
        if self.verify == "hash" and self.is_local and not _verified(path, entry.sha256):
            self._discard(fs, folder, name, "its SHA-256 does not match its manifest")
            return None
        return entry

    def _discard(self, fs: fsspec.AbstractFileSystem, folder: str, name: str, why: str) -> None:
        logger.warning("cache entry for %s is unusable: %s; fetching it again", redact(name), why)
        try:
            fs.rm(folder, recursive=True)
        except FileNotFoundError:
            pass

    def commit(self, name: str, compression: str | None, local_file: str, file_name: str,
               manifest: Mapping[str, Any]) -> CacheEntry:
        """Move a verified download into the cache, its manifest last; returns the entry."""
        fs, folder = self.folder(name, compression)
        path = f"{folder}/{file_name}"
        document = json.dumps({**manifest, "file": file_name}, indent=1).encode()
        try:
            if self.is_local:
                os.makedirs(folder, exist_ok=True)
                os.replace(local_file, path)  # atomic: a reader sees the old file or the new one
                _write_atomically(f"{folder}/{MANIFEST}", document)
                _remember_verified(path, str(manifest["sha256"]))
            else:
                fs.put_file(local_file, path)
                fs.pipe_file(f"{folder}/{MANIFEST}", document)
        except OSError as error:
            raise InfrastructureError(
                f"cannot write the input cache at {public_name(self.location)}: {type(error).__name__}: {error}"
            ) from error
        return CacheEntry(path=path, size=int(manifest["size"]), sha256=str(manifest["sha256"]), local=self.is_local)

    def partial_file(self, name: str, compression: str | None) -> str:
        """A new local file to download into: inside the entry's folder when the cache is local."""
        if self.is_local:
            _, folder = self.folder(name, compression)
            os.makedirs(folder, exist_ok=True)
            return os.path.join(folder, f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        handle, path = tempfile.mkstemp(prefix="arcoforge-download-")
        os.close(handle)
        return path


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


# Files hashed by this process, while unchanged: (path, inode, size, mtime) -> sha256.
_VERIFIED: dict[tuple, str] = {}


def _stat_key(path: str) -> tuple:
    stat = os.stat(path)
    return (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _remember_verified(path: str, sha256: str) -> None:
    _VERIFIED[_stat_key(path)] = sha256


def _verified(path: str, sha256: str) -> bool:
    key = _stat_key(path)
    if _VERIFIED.get(key) == sha256:
        return True
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_SIZE):
            digest.update(block)
    if digest.hexdigest() != sha256:
        return False
    _VERIFIED[key] = sha256
    return True


def default_cache_root() -> str:
    """Where inputs are cached when nothing else is said: ``$ARCOFORGE_CACHE_DIR``, else a temp folder.

    The folder is this machine's own, so sources cached there are opened in a way
    that fetches them again on any other machine (see :class:`RemoteInput`).
    """
    return os.environ.get("ARCOFORGE_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), f"arcoforge-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}")


def _file_name(url: str, compression: str | None) -> str:
    """The cached file's name: the URL's last path segment, without its compression suffix."""
    path = urllib.parse.urlsplit(url).path if "://" in url else url
    name = re.sub(r"[^\w.+-]", "_", os.path.basename(path.rstrip("/")) or "input")
    if compression:
        for suffix, codec in fsspec.utils.compressions.items():
            if codec == compression and name.endswith("." + suffix):
                return name[: -len(suffix) - 1] or "input"
    return name


class _Digesting:
    """A reader that counts and hashes (MD5) the raw bytes read through it."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.count = 0
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        self.md5.update(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass  # the raw file is closed by its owner


def _expected_md5(info: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(hex MD5, header)`` a server announced for a body: ``Content-MD5``, or ``Digest: md5=``.

    S3 ETags are not used: with SSE-KMS or multipart uploads they are not MD5s
    (botocore validates S3 response checksums itself where the object has them).
    """
    candidates = [("Content-MD5", info.get("Content-MD5"))]
    digest = info.get("Digest")
    if isinstance(digest, str):
        for part in digest.split(","):
            algorithm, _, value = part.strip().partition("=")
            if algorithm.lower() == "md5":
                candidates.append(("Digest", value))
    for header, value in candidates:
        if isinstance(value, str) and value:
            try:
                return base64.b64decode(value, validate=True).hex(), header
            except ValueError:
                logger.debug("ignoring a %s header that is not base64", header)
    return None


def _decompression_errors() -> tuple[type[BaseException], ...]:
    import gzip
    import lzma
    import zlib

    return (gzip.BadGzipFile, zlib.error, lzma.LZMAError)


def download(url: str, options: Mapping[str, Any] | None, file_options: Mapping[str, Any] | None,
             compression: str | None, destination: str, name: str, index: object = None) -> dict[str, Any]:
    """One try at copying ``url`` into the local file ``destination``, decompressed and checked.

    Returns the manifest fields (sizes, SHA-256 of the bytes kept). Raises
    :class:`TransientInputError` for a body shorter than announced or whose
    MD5 does not match, :class:`NotDataError` for an HTML page.
    """
    fs, path = filesystem(url, options)
    info = fs.info(path)
    expected = info.get("size")
    open_options = dict(file_options or {})
    if protocol_of(url) in ("http", "https"):
        open_options.setdefault("block_size", 0)  # one streamed GET rather than a request per block
        if isinstance(expected, int):
            open_options.setdefault("size", expected)  # known: no second HEAD
    digest = hashlib.sha256()
    kept = 0
    with fs.open(path, "rb", **open_options) as raw:
        counting = _Digesting(raw)
        stream: Any = counting
        if compression:
            stream = fsspec.compression.compr[compression](counting, mode="rb")
        with open(destination, "wb") as out:
            first = True
            while True:
                try:
                    block = stream.read(CHUNK_SIZE)
                except EOFError:  # a compressed stream that stops before its end marker
                    raise TransientInputError(
                        f"{describe_input(index, name)} was cut short: its {compression} stream ended "
                        f"after {counting.count} bytes"
                    ) from None
                except _decompression_errors() as error:
                    raise NotDataError(
                        f"{describe_input(index, name)} is not valid {compression} data ({error})"
                    ) from None
                if not block:
                    break
                if first:
                    check_data_signature(block[:64], name, index)
                    first = False
                digest.update(block)
                out.write(block)
                kept += len(block)
    if isinstance(expected, int) and counting.count != expected:
        raise TransientInputError(
            f"{describe_input(index, name)} was cut short: received {counting.count} of {expected} bytes"
        )
    announced = _expected_md5(info)
    if announced is not None and counting.md5.hexdigest() != announced[0]:
        raise TransientInputError(
            f"{describe_input(index, name)} failed its checksum: MD5 {counting.md5.hexdigest()} "
            f"but {announced[1]} says {announced[0]}"
        )
    if kept == 0:
        raise NotDataError(f"{describe_input(index, name)} is empty")
    return {
        "url": name,
        "size": kept,
        "sha256": digest.hexdigest(),
        "source_size": counting.count,
        "source_md5": counting.md5.hexdigest(),
        "compression": compression,
        "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_FETCH_LOCKS: dict[str, threading.Lock] = {}


def _fetch_lock(folder: str) -> threading.Lock:
    """One lock per cache entry, so threads of a process never download the same input twice."""
    with _SLOTS_LOCK:
        return _FETCH_LOCKS.setdefault(folder, threading.Lock())


# ---------------------------------------------------------------------------------------------
# Remote inputs


@dataclass(frozen=True)
class RemoteInput:
    """An input that is read through fsspec: what travels from OpenURLWithFSSpec to OpenWithXarray.

    It holds what is needed to fetch, verify and open the input on any worker:
    its URL (query-string secrets included), filesystem options, cache, retry
    policy and concurrency limit. It is shown, and recorded, by its public
    ``name`` only.
    """

    url: str = field(repr=False)
    name: str
    options: dict | None = field(default=None, repr=False)
    file_options: dict | None = field(default=None, repr=False)
    compression: str | None = None
    cache: InputCache | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrency: int | None = None
    index: Any = None

    def __str__(self) -> str:
        return self.name

    def fetch(self) -> CacheEntry:
        """The verified cache entry of this input, downloaded (with retries) if the cache lacks it.

        Failures are :class:`InputError` naming the URL (public) and pattern index.
        """
        if self.cache is None:
            raise RecipeError(f"{self.name} has no cache to fetch into")
        entry = self.cache.lookup(self.name, self.compression)
        if entry is not None:
            logger.debug("cache hit for %s", self.name)
            return entry
        with _fetch_lock(self.cache.folder(self.name, self.compression)[1]), _Slot(self.max_concurrency):
            entry = self.cache.lookup(self.name, self.compression)  # another thread may have fetched it
            if entry is not None:
                return entry
            return self._download_into_cache()

    def _download_into_cache(self) -> CacheEntry:
        assert self.cache is not None
        started = time.monotonic()

        def attempt() -> dict[str, Any]:
            destination = self.cache.partial_file(self.name, self.compression)  # type: ignore[union-attr]
            try:
                manifest = download(self.url, self.options, self.file_options, self.compression,
                                    destination, self.name, self.index)
                return {**manifest, "_local": destination}
            except BaseException:
                if os.path.exists(destination):
                    os.remove(destination)
                raise

        try:
            manifest = call_with_retries(attempt, self.retry, f"fetching {self.name}")
        except InputError as error:
            # Plain InputError: runners hand worker errors back as text, classified by class name.
            if not is_transient(error):
                raise InputError(str(error)) from None
            raise InputError(f"{error} (gave up after {getattr(error, 'attempts', 1)} tries)") from None
        except Exception as error:
            raise self.failure(error) from None
        local = manifest.pop("_local")
        entry = self.cache.commit(self.name, self.compression, local, _file_name(self.url, self.compression),
                                  manifest)
        logger.info("fetched %s (%.1f MiB in %.1f s)", self.name, manifest["source_size"] / 2**20,
                    time.monotonic() - started)
        return entry

    def failure(self, error: BaseException) -> InputError:
        """The :class:`InputError` a failed read of this input becomes: URL, index, cause, tries."""
        attempts = getattr(error, "attempts", 1)
        what = describe_failure(error)
        where = describe_input(self.index, self.name)
        if what.startswith("access denied"):
            message = f"{where} cannot be read: {what}; check its credentials"
        elif what.startswith("not found"):
            message = f"{where} does not exist: {what}"
        elif is_transient(error):
            message = f"{where} could not be read: {what} (gave up after {attempts} tries)"
        else:
            message = f"{where} could not be read: {what}"
        return InputError(redact(message, secret_values(self.options, [self.url])))

    def open(self) -> "InputFile":
        """A seekable, picklable file object reading this input (from the cache when it has one)."""
        return InputFile(self)


class InputFile:
    """A read-only file object over a :class:`RemoteInput` that survives pickling and flaky networks.

    It opens lazily; a read that fails transiently reopens the input at the same
    position and tries again. Pickled (as Beam does with lazily opened datasets),
    it carries the input and its position, and reopens where it is unpickled:
    from the cache there, fetching the input again if that machine lacks it.
    """

    def __init__(self, source: RemoteInput, position: int = 0):
        self.source = source
        self._position = position
        self._file: Any = None
        self._size: int | None = None
        self.closed = False

    def __reduce__(self) -> tuple:
        return (InputFile, (self.source, self._position))

    def __repr__(self) -> str:
        return f"<InputFile {self.source.name}>"

    @property
    def name(self) -> str:
        return self.source.name

    def _open(self) -> Any:
        if self._file is not None:
            return self._file
        source = self.source
        if source.cache is not None:
            entry = source.fetch()
            self._size = entry.size
            if entry.local:
                self._file = open(entry.path, "rb")
            else:
                fs, _ = source.cache._fs()
                self._file = fs.open(entry.path, "rb")
        else:
            def open_remote() -> Any:
                with _Slot(source.max_concurrency):
                    fs, path = filesystem(source.url, source.options)
                    return fs.open(path, "rb", **dict(source.file_options or {}))

            try:
                self._file = call_with_retries(open_remote, source.retry, f"opening {source.name}")
            except Exception as error:
                raise source.failure(error) from None
            self._size = getattr(self._file, "size", None)
        self._file.seek(self._position)
        return self._file

    def _reopen(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # a broken connection may fail to close too
                pass
        self._file = None

    def _with_retries(self, operation: Callable[[Any], T], what: str) -> T:
        def run() -> T:
            try:
                return operation(self._open())
            except Exception:
                self._reopen()
                raise

        try:
            return call_with_retries(run, self.source.retry, f"{what} {self.source.name}")
        except InputError:
            raise
        except Exception as error:
            raise self.source.failure(error) from None

    def read(self, size: int = -1) -> bytes:
        data = self._with_retries(lambda f: f.read(size), "reading")
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        else:
            self._open()
            if self._size is None:
                self._size = self._with_retries(lambda f: f.seek(0, os.SEEK_END), "sizing")
            position = int(self._size) + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        if self._file is not None:
            self._file.seek(position)
        return position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self._reopen()
        self.closed = True

    def __enter__(self) -> "InputFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

