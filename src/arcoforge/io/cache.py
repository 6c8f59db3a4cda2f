"""The input cache: one verified local (or shared) copy of each remote input, and the download that fills it.

Reading an input over the network once per open would be slow and fragile, and a
half-written copy must never be read as data. So a download is written under a
temporary name, decompressed if needed, checked against the size the server
announced and its checksum (``Content-MD5`` or ``Digest: md5=``) and the data
signature (:mod:`arcoforge.io.signatures`), and made visible only then, with a
manifest holding its size and SHA-256, written last and atomically
(:mod:`arcoforge.io.atomic`). A hit is checked against the manifest and served
without network; an entry that is partial or corrupt is fetched again. Retries
and concurrency are the caller's (:mod:`arcoforge.io.remote`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec

from ..errors import InfrastructureError, RecipeError, describe_input
from ..scratch import scratch_file
from .atomic import write_atomically
from .filesystems import filesystem, protocol_of
from .redaction import public_url, redact
from .retries import TransientInputError
from .signatures import SNIFF_BYTES, NotDataError, check_data_signature

logger = logging.getLogger(__name__)

CHUNK_SIZE = 8 * 2**20
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
                write_atomically(f"{folder}/{MANIFEST}", document)
                _remember_verified(path, str(manifest["sha256"]))
            else:
                fs.put_file(local_file, path)
                fs.pipe_file(f"{folder}/{MANIFEST}", document)
        except OSError as error:
            raise InfrastructureError(
                f"cannot write the input cache at {public_url(self.location)}: {type(error).__name__}: {error}"
            ) from error
        return CacheEntry(path=path, size=int(manifest["size"]), sha256=str(manifest["sha256"]), local=self.is_local)

    def partial_file(self, name: str, compression: str | None) -> str:
        """A new local file to download into: inside the entry's folder when the cache is local."""
        if self.is_local:
            _, folder = self.folder(name, compression)
            os.makedirs(folder, exist_ok=True)
            return os.path.join(folder, f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        handle, path = scratch_file("download")  # named after this process: swept if it is killed
        os.close(handle)
        return path




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


def cached_file_name(url: str, compression: str | None) -> str:
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
                    check_data_signature(block[:SNIFF_BYTES], name, index)
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


