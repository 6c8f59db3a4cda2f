"""pangeo-forge-recipes 0.10's storage targets: a filesystem and a root path under it.

:class:`FSSpecTarget` names where stores are written (``StoreToZarr(target_root=...)``);
:class:`FlatFSSpecTarget` / :class:`CacheFSSpecTarget` keep every file in one flat
folder under a name derived from its URL, and serve as an input cache
(``OpenURLWithFSSpec(cache=...)``, :func:`arcoforge.openers.open_url`).

A target is also a path-like naming its root (``os.fspath(target)``: a URL, or a path for local folders), so
any arcoforge option that takes a path or URL takes a target too.

>>> import fsspec
>>> target = FSSpecTarget(fsspec.filesystem("memory"), "/out")
>>> os.fspath(target / "sst.zarr")
'memory:///out/sst.zarr'
>>> CacheFSSpecTarget(fsspec.filesystem("memory"), "/cache")._full_path("https://h/a b.nc")
'/cache/aac88ab5bfb7ce13d580de0d5e2618ed-https_h_a-b.nc'
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..patterns import add_query_string_secrets

logger = logging.getLogger(__name__)


@dataclass
class FSSpecTarget:
    """A folder on an fsspec filesystem: ``fs``, ``root_path`` under it, and options to reopen it with."""

    fs: fsspec.AbstractFileSystem
    root_path: str = ""
    fsspec_kwargs: dict[Any, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fs.isdir(self.root_path):
            self.fs.mkdirs(self.root_path, exist_ok=True)

    @classmethod
    def from_url(cls, url: str) -> "FSSpecTarget":
        """The target a URL names (``s3://bucket/prefix``, ``/local/folder``)."""
        fs, _, paths = fsspec.get_fs_token_paths(url)
        if len(paths) != 1:
            raise ValueError(f"{url!r} names {len(paths)} paths, expected one folder")
        return cls(fs, paths[0])

    def __truediv__(self, suffix: str) -> "FSSpecTarget":
        return replace(self, root_path=os.path.join(self.root_path, suffix))

    def __fspath__(self) -> str:
        if isinstance(self.fs, LocalFileSystem):
            return self.root_path
        return self.fs.unstrip_protocol(self.root_path)

    def __str__(self) -> str:
        return os.fspath(self)

    def get_fsspec_remote_protocol(self) -> str:
        """The filesystem's protocol (its first name when it has several)."""
        protocol = self.fs.protocol
        return protocol if isinstance(protocol, str) else protocol[0]

    def get_mapper(self) -> fsspec.mapping.FSMap:
        """A mutable mapping over the root (zarr and xarray open it as a store, and write into it)."""
        fs = self.fs
        if isinstance(fs, LocalFileSystem) and not fs.auto_mkdir:
            fs = LocalFileSystem(auto_mkdir=True)  # zarr writes keys under folders that do not exist yet
        return fs.get_mapper(self.root_path)

    def _full_path(self, path: str) -> str:
        return os.path.join(self.root_path, path)

    def exists(self, path: str) -> bool:
        return self.fs.exists(self._full_path(path))

    def rm(self, path: str, recursive: bool = False) -> None:
        self.fs.rm(self._full_path(path), recursive=recursive)

    def size(self, path: str) -> int:
        return self.fs.size(self._full_path(path))

    def makedir(self, path: str) -> None:
        self.fs.makedir(self._full_path(path))

    @contextmanager
    def open(self, path: str, **kwargs: Any) -> Iterator[Any]:
        """A file under the root, closed when the ``with`` block ends."""
        opened = self.fs.open(self._full_path(path), **kwargs)
        try:
            yield opened
        finally:
            opened.close()

    def open_file(self, path: str, **kwargs: Any) -> Any:
        """A file under the root, opened (the caller closes it)."""
        return self.fs.open(self._full_path(path), **kwargs)


def slugify(value: str) -> str:
    """A file-name-safe, lower-case form of ``value``.

    >>> slugify("https://host/A b.nc")
    'https_host_a-b.nc'
    """
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^.\w\s-]+", "_", text.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-_")


class FlatFSSpecTarget(FSSpecTarget):
    """A target keeping every file in its root folder, named ``<md5 of path>-<slug of path>``."""

    def _full_path(self, path: str) -> str:
        name = f"{hashlib.md5(path.encode()).hexdigest()}-{slugify(path)}"
        if len(name) > 255:  # the longest file name POSIX filesystems take
            name = name[:33] + name[len(name) - 222:]
        return os.path.join(self.root_path, name)


class CacheFSSpecTarget(FlatFSSpecTarget):
    """A flat target used as an input cache: :meth:`cache_file` copies an input in unless already there."""

    def cache_file(self, fname: str, secrets: dict | None, fsspec_sync_patch: bool = False,
                   **open_kwargs: Any) -> None:
        """Copy the input at ``fname`` (with ``secrets`` in its query string) here, unless a same-size copy is."""
        source = open_input(fname, secrets, fsspec_sync_patch, **open_kwargs)
        if self.exists(fname):
            with source as remote:
                if getattr(remote, "size", None) == self.size(fname):
                    logger.info("%s is cached already", fname)
                    return
        logger.info("caching %s", fname)
        with source as remote, self.open(fname, mode="wb") as local:
            shutil.copyfileobj(remote, local, length=16 * 2**20)


def apply_fsspec_sync_patch() -> None:
    """Read HTTP synchronously when the optional ``httpfs_sync`` package is installed (pangeo-forge's patch).

    Without it, nothing changes: arcoforge's own reader of remote inputs is
    synchronous and retried already, which is what the patch was for. Called
    once per input (cheap: the import is cached, and re-registering is idempotent).
    """
    try:
        from httpfs_sync.core import SyncHTTPFileSystem  # type: ignore[import-not-found]
    except ImportError:
        logger.debug("fsspec_sync_patch: httpfs_sync is not installed; inputs are read as usual")
        return
    SyncHTTPFileSystem.overwrite_async_registration()


def open_input(url: str, secrets: dict | None = None, fsspec_sync_patch: bool = False,
               **open_kwargs: Any) -> fsspec.core.OpenFile:
    """``fsspec.open(url)`` for reading, with ``secrets`` added to its query string."""
    if fsspec_sync_patch:
        apply_fsspec_sync_patch()
    if secrets:
        url = add_query_string_secrets(url, secrets)
    return fsspec.open(url, mode="rb", **open_kwargs)


__all__ = ["CacheFSSpecTarget", "FSSpecTarget", "FlatFSSpecTarget", "MetadataTarget", "StorageConfig"]


class MetadataTarget(FSSpecTarget):
    """pangeo-forge-recipes 0.5–0.8's metadata cache target (accepted; arcoforge keeps its own bake state)."""


@dataclass
class StorageConfig:
    """pangeo-forge-recipes 0.5–0.8's storage of an ``XarrayZarrRecipe``: where the store goes.

    ``target`` is the store itself (its parent folder is the target root, its
    name the store name). ``cache`` and ``metadata`` are accepted; the input
    cache is :class:`~arcoforge.io.InputCache`'s business, and the bake state
    lives in the store.
    """

    target: FSSpecTarget | None = None
    cache: FSSpecTarget | None = None
    metadata: FSSpecTarget | None = None
