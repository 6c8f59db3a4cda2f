"""Opening inputs: a URL becomes a readable source, a source becomes an xarray Dataset.

Local files are passed on as plain paths (the netCDF libraries read them
fastest that way); local NetCDF-4 files open with netCDF-C and have their
deflated chunks inflated by libdeflate (:mod:`arcoforge.hdf5_chunks`).
:func:`prepare_input` turns any other URL (HTTP, S3, a compressed file) into
a source that is fetched once into a verified cache, with retries (see
:mod:`arcoforge.io`):

- a :class:`CachedPath` when the cache is a folder every worker sees (a local
  run, or a shared mount): opened by path, like a local file;
- a :class:`~arcoforge.io.RemoteInput` otherwise: opened through a file
  object that pickles small and reopens wherever a worker needs it, from that
  machine's cache (fetching again if it lacks the input) or from the network.

:func:`open_url` is pangeo-forge-recipes 0.10's (an :class:`fsspec.core.OpenFile`, or a cached copy).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import fsspec
import xarray as xr

from .compat.storage import CacheFSSpecTarget, FSSpecTarget, open_input
from .errors import InputError, RecipeError, describe_input
from .features import check_not_only_groups, explain_open_error
from .patterns import FileType, add_query_string_secrets
from .io import (
    InputCache,
    RemoteInput,
    RetryPolicy,
    check_file_signature,
    infer_compression,
    merge_options,
    options_for,
    public_url as public_name,
    redact,
    register_secrets,
    secret_values,
    split_open_kwargs,
)
from .io.local_copy import LocalCopy, keep_with, new_copy, release

logger = logging.getLogger(__name__)


class LocalPath(str):
    """The path of a local input: a plain ``str`` to the netCDF libraries, and a file like pangeo-forge's.

    pangeo-forge-recipes 0.10 hands on fsspec OpenFiles; code written for it
    reads them with ``with item as f:`` or ``item.open()``, which work here too.
    """

    def open(self) -> Any:
        """The file, opened for reading in binary."""
        return open(self, "rb")

    def __enter__(self) -> Any:
        opened = self.open()
        self.__dict__.setdefault("_opened", []).append(opened)
        return opened

    def __exit__(self, *exc_info: Any) -> None:
        self.__dict__["_opened"].pop().close()

    def __reduce__(self) -> tuple:
        return (LocalPath, (str(self),))


class CachedPath(LocalPath):
    """The local path of a cached input that remembers the URL it was fetched from.

    A plain ``str`` to the netCDF libraries (so they open it by path, fastest);
    ``source_name`` is the input's public URL, which messages and the dataset's
    ``encoding["source"]`` use instead of the cache path.
    """

    source_name: str

    def __new__(cls, path: str, source_name: str) -> "CachedPath":
        self = super().__new__(cls, path)
        self.source_name = source_name
        return self

    def __reduce__(self) -> tuple:
        return (CachedPath, (str(self), self.source_name))


Source = str | fsspec.core.OpenFile | RemoteInput

# Which xarray engine reads each file type from a file object. ``None`` lets xarray guess.
ENGINES: dict[FileType, str | None] = {
    FileType.netcdf4: "h5netcdf",
    FileType.hdf5: "h5netcdf",
    FileType.netcdf3: "scipy",
    FileType.unknown: None,
    FileType.zarr: "zarr",
    FileType.opendap: "netcdf4",
}
# Local NetCDF files open about 3x faster with the netCDF-C library than through h5netcdf
# (5 vs 16 ms a file), which matters when an archive has thousands of them.
LOCAL_ENGINES: dict[FileType, str | None] = {**ENGINES, FileType.netcdf4: "netcdf4", FileType.netcdf3: "netcdf4"}


def choose_engine(file_type: FileType, source: "Source") -> str | None:
    """The xarray engine for a source: netCDF-C for local NetCDF paths (cached ones too), else by file type."""
    if isinstance(source, str):
        return LOCAL_ENGINES.get(file_type)
    return ENGINES.get(file_type)


def local_path(url: str) -> str | None:
    """The filesystem path of ``url`` if it names a local file, else ``None``.

    >>> local_path("file:///tmp/a.nc")
    '/tmp/a.nc'
    >>> local_path("https://host/a.nc") is None
    True
    """
    if "://" not in url:
        return url
    if url.startswith("file://"):
        return url[len("file://"):]
    return None


def open_url(
    url: str,
    cache: "str | CacheFSSpecTarget | None" = None,
    secrets: dict | None = None,
    open_kwargs: dict | None = None,
    fsspec_sync_patch: bool = False,
) -> Any:
    """pangeo-forge-recipes 0.10's ``open_url``: an fsspec file for ``url``, through ``cache`` if given.

    Without ``cache``: an :class:`fsspec.core.OpenFile` (``secrets`` added to the
    query string, ``open_kwargs`` passed to :func:`fsspec.open`). With a
    :class:`~arcoforge.compat.storage.CacheFSSpecTarget` (or its URL): the input
    is copied into it unless a copy of the same size is there, and the cached
    file is returned opened. Both work as ``with open_url(url) as f:``.
    :func:`open_with_xarray` reads either.
    """
    if cache is not None and not isinstance(cache, FSSpecTarget):  # a path or URL
        cache = CacheFSSpecTarget.from_url(os.fspath(cache))
    if cache is None:
        return open_input(url, secrets, fsspec_sync_patch, **(open_kwargs or {}))
    cache.cache_file(url, secrets, fsspec_sync_patch, **(open_kwargs or {}))
    return cache.open_file(url, mode="rb")


def resolve_cache(cache: "str | InputCache | bool | None", storage_options: dict | None = None) -> InputCache | None:
    """The cache a ``cache=`` argument stands for.

    ``None``: this machine's default folder (see :func:`~arcoforge.io.default_cache_root`),
    whose inputs are reopened through file objects that fetch again on other
    machines; ``False``: no cache (remote inputs are read over the network while
    they are used); a path or URL: a cache that every worker sees (remote URLs
    use the options of their protocol from ``storage_options``).
    """
    if cache is False:
        return None
    if cache is None or cache is True:
        return InputCache(root=None, machine_local=True)
    if isinstance(cache, InputCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        root = os.fspath(cache)
        return InputCache(root=root, storage_options=options_for(root, storage_options) or None)
    raise RecipeError(f"cache must be a path or URL, an InputCache, None or False; got {type(cache).__name__}")


def prepare_input(
    url: str,
    index: object = None,
    *,
    cache: str | InputCache | bool | None = None,
    storage_options: dict | None = None,
    open_kwargs: dict | None = None,
    secrets: dict | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int | None = None,
) -> "str | CachedPath | RemoteInput":
    """Turn an input URL into a source for :func:`open_with_xarray`, fetching remote inputs into ``cache``.

    ``cache`` is what :func:`resolve_cache` takes (``None``: this machine's
    default folder; ``False``: none, reads go over the network).
    ``storage_options`` are filesystem options for inputs (flat, or keyed by
    protocol); ``open_kwargs`` (a pattern's ``fsspec_open_kwargs``) override
    them, and may name a ``compression`` (inferred from ``.gz`` and other
    suffixes otherwise). ``secrets`` are added to the URL's query string. Local
    uncompressed files stay plain paths. A failed fetch is an
    :class:`InputError` naming the URL (without its secrets) and ``index``.
    """
    if secrets:
        url = add_query_string_secrets(url, secrets)
    fs_options, file_options, compression = split_open_kwargs(open_kwargs)
    compression = infer_compression(url, compression)
    path = local_path(url)
    if path is not None and compression is None:
        return LocalPath(path)
    options = merge_options(options_for(url, storage_options), fs_options)
    name = public_name(url)
    register_secrets(secret_values(options, [url], (secrets or {}).values()))
    cache = resolve_cache(cache, storage_options)
    if cache is None and compression is not None:
        cache = InputCache(root=None, machine_local=True)  # a compressed stream cannot be read at random
    source = RemoteInput(url=url, name=name, options=options or None, file_options=file_options or None,
                         compression=compression, cache=cache, retry=retry or RetryPolicy(),
                         max_concurrency=max_concurrency, index=index)
    if cache is None:
        return source
    entry = source.fetch()
    if entry.local and not cache.machine_local:
        return CachedPath(entry.path, name)
    return source


def _source_name(source: Source) -> str:
    if isinstance(source, CachedPath):
        return source.source_name
    if isinstance(source, RemoteInput):
        return source.name
    if isinstance(source, fsspec.core.OpenFile):
        return public_name(source.full_name if hasattr(source, "full_name") else source.path)
    if is_file_object(source):
        return public_name(str(getattr(source, "full_name", None) or getattr(source, "path", None)
                               or getattr(source, "name", None) or repr(source)))
    return str(source)


def is_file_object(source: Any) -> bool:
    """Whether ``source`` is an opened, readable file (what ``open_url`` with a cache returns)."""
    return not isinstance(source, str) and callable(getattr(source, "read", None)) and callable(
        getattr(source, "seek", None))


def _local_copy(source: Any) -> tuple[str, LocalCopy | None]:
    """A local path holding the input: its cache entry when local, else a temporary copy (and the copy).

    ``source`` is a :class:`~arcoforge.io.RemoteInput`, an fsspec OpenFile or an
    opened file. A cache entry is the cache's, never removed here; a copy belongs
    to the Dataset opened from it (see :mod:`arcoforge.io.local_copy`).
    """
    if isinstance(source, RemoteInput):
        if source.cache is not None:
            entry = source.fetch()
            if entry.local:
                return entry.path, None
        name = source.name
    elif isinstance(source, fsspec.core.OpenFile):
        name = source.path
    else:
        name = _source_name(source)
    copy = new_copy(source, suffix=os.path.splitext(name.split("?", 1)[0])[1])
    assert copy.path is not None
    return copy.path, copy


def open_with_xarray(
    source: Source,
    file_type: FileType | str = FileType.unknown,
    load: bool = False,
    copy_to_local: bool = False,
    xarray_open_kwargs: dict | None = None,
    index: object = None,
) -> xr.Dataset:
    """Open one input as a lazily loaded :class:`xarray.Dataset`.

    ``xarray_open_kwargs`` go to :func:`xarray.open_dataset` (``group=`` selects a
    group inside an HDF5 file). Any failure becomes an :class:`InputError` that
    names the input and its pattern index. The source URL is kept in
    ``ds.encoding["source"]`` for later messages.
    """
    file_type = FileType(file_type)
    kwargs = dict(xarray_open_kwargs or {})
    engine: Any = kwargs.pop("engine", None) or choose_engine(file_type, source)
    if engine == "netcdf4" and "engine" not in (xarray_open_kwargs or {}) and isinstance(source, str):
        from .hdf5_chunks import NetCDF4DirectEngine

        engine = NetCDF4DirectEngine  # netCDF-C opens and decodes; deflated chunks inflate twice as fast
    if engine == "h5netcdf" and file_type == FileType.hdf5:
        kwargs.setdefault("phony_dims", "sort")
    name = _source_name(source)
    target: Any = None
    copy: LocalCopy | None = None  # a temporary copy no Dataset has taken yet
    opened: xr.Dataset | None = None
    try:
        if isinstance(source, (fsspec.core.OpenFile, RemoteInput)) or is_file_object(source):
            if copy_to_local or engine in ("netcdf4",):
                target, copy = _local_copy(source)
            elif is_file_object(source):
                target = source
            else:
                target = source.open()
                if file_type in (FileType.netcdf4, FileType.netcdf3, FileType.hdf5, FileType.unknown):
                    check_file_signature(target, name, index, file_type)
        else:
            target = str(source)
        ds = opened = xr.open_dataset(target, engine=engine, chunks=None, **kwargs)
        if copy is not None:
            keep_with(ds, copy)  # the copy is removed once the dataset's file manager lets go of it
            copy = None
        check_not_only_groups(ds, target, index, name, kwargs)
        if load:
            ds = ds.load()
            ds.close()
        opened = None
    except InputError:
        raise
    except FileNotFoundError as error:
        raise InputError(redact(f"{describe_input(index, name)} does not exist: {error}")) from error
    except Exception as error:  # the netCDF/HDF5 stacks raise many kinds of errors
        explained = explain_open_error(error, target, engine, kwargs, index, name)
        if explained:
            raise InputError(redact(explained)) from error
        raise InputError(redact(
            f"cannot open {describe_input(index, name)} as {file_type.value} "
            f"(engine {'netcdf4' if engine is not None and not isinstance(engine, str) else engine or 'auto'}): "
            f"{type(error).__name__}: {error}"
        )) from error
    finally:
        if opened is not None:  # opened, then refused
            opened.close()
        if copy is not None:  # copied, then not opened
            release(copy)
    ds.encoding["source"] = name
    return ds
