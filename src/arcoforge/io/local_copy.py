"""Temporary local copies of inputs (``copy_to_local``) that live exactly as long as a reader needs them.

Some inputs must be read from a local file: the netCDF-C library reads no file
objects, and pangeo-forge recipes ask for ``copy_to_local``. Such a copy is a
:func:`~arcoforge.scratch.scratch_file` (``arcoforge-copy-…``), and it is
owned by the xarray *file manager* that opens it, not by the Dataset: the
Dataset is dropped long before its lazily indexed variables, which are pickled
into the spill and read by the write tasks, maybe in other processes.

:func:`keep_with` swaps the Dataset's :class:`~xarray.backends.CachingFileManager`
for a :class:`CopyFileManager` that

- opens the copy, making it again (from the input) if it was removed;
- removes it when the file is closed (``Dataset.close()``) and when the last
  manager of it in this process is garbage collected;
- pickles the *input* instead of the copy's path, so that where it is unpickled
  it makes its own copy, only once something is read, and removes it when done.

Managers of one file in one process (the one that opened it, and copies of it
unpickled there) share one copy. A process killed before it could remove its
copies leaves them to :func:`~arcoforge.scratch.remove_stale`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from typing import Any

import fsspec
import xarray as xr
from xarray.backends.file_manager import CachingFileManager

from ..scratch import scratch_file
from .remote import RemoteInput

logger = logging.getLogger(__name__)

COPY_BLOCK = 16 * 2**20
# Re-entrant: a garbage collection that runs a manager's __del__ may start while a thread holds it.
_LOCK = threading.RLock()
_COPIES: dict[str, "LocalCopy"] = {}  # this process's copies, by the id of the file manager reading them


def reopenable(source: Any) -> Any:
    """What a copy of ``source`` can be made from again, in any process.

    A :class:`RemoteInput` or an fsspec OpenFile as it is; an opened fsspec file
    (or a local file) as an OpenFile of its path; other file objects as they are.
    """
    if isinstance(source, (RemoteInput, fsspec.core.OpenFile)):
        return source
    fs, path = getattr(source, "fs", None), getattr(source, "path", None)
    if isinstance(fs, fsspec.AbstractFileSystem) and isinstance(path, str):
        return fsspec.core.OpenFile(fs, path, mode="rb")
    name = getattr(source, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return fsspec.core.OpenFile(fsspec.filesystem("file"), name, mode="rb")
    return source


@contextlib.contextmanager
def _reading(source: Any):
    if isinstance(source, RemoteInput):
        with source.open() as opened:
            yield opened
    elif isinstance(source, fsspec.core.OpenFile):
        with source as opened:
            yield opened
    else:  # an opened file: read from its start, leave it open for its owner
        source.seek(0)
        yield source


def write_copy(source: Any, suffix: str = "") -> str:
    """A new scratch file holding all of ``source``; removed again if the copy fails."""
    handle, path = scratch_file("copy", suffix)
    try:
        with os.fdopen(handle, "wb") as out, _reading(source) as remote:
            shutil.copyfileobj(remote, out, length=COPY_BLOCK)
    except BaseException:
        _remove(path)
        raise
    return path


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("could not remove the temporary copy %s: %s", path, error)


class LocalCopy:
    """One input's local copy in this process, shared by the file managers that read it."""

    def __init__(self, key: str, source: Any, suffix: str, path: str | None = None):
        self.key = key
        self.source = source
        self.suffix = suffix
        self.path = path  # the copy, while there is one
        self.users = 0
        self._lock = threading.RLock()

    def ensure(self) -> str:
        """The copy's path, copying the input (again) if there is no copy."""
        with self._lock:
            if self.path is None or not os.path.exists(self.path):
                self.path = write_copy(self.source, self.suffix)
            return self.path

    def discard(self) -> None:
        """Remove the copy, if there is one (:meth:`ensure` makes a new one)."""
        with self._lock:
            path, self.path = self.path, None
        if path is not None:
            _remove(path)


def _attach(key: str, source: Any, suffix: str, path: str | None = None) -> LocalCopy:
    with _LOCK:
        copy = _COPIES.get(key)
        if copy is None:
            copy = _COPIES[key] = LocalCopy(key, source, suffix, path)
        copy.users += 1
        return copy


def _detach(copy: LocalCopy) -> None:
    with _LOCK:
        copy.users -= 1
        if copy.users > 0:
            return
        if _COPIES.get(copy.key) is copy:
            del _COPIES[copy.key]
    copy.discard()


class _CopyOpener:
    """Opens a manager's copy with the backend's opener, making the copy first if needed."""

    def __init__(self, opener: Any, copy: LocalCopy):
        self.opener = opener
        self.copy = copy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.opener(self.copy.ensure(), *args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CopyOpener) and (other.opener, other.copy.key) == (self.opener, self.copy.key)

    def __hash__(self) -> int:
        return hash((self.opener, self.copy.key))

    def __repr__(self) -> str:
        return f"<{getattr(self.opener, '__qualname__', self.opener)} of a local copy>"


class CopyFileManager(CachingFileManager):
    """xarray's file manager over a local copy of an input that it makes, and removes, itself.

    See the module's description. Built by :func:`keep_with` and by unpickling.
    """

    def __init__(self, opener: Any, copy: LocalCopy, mode: Any, kwargs: Any, lock: Any, manager_id: str):
        self._copy = copy  # attached by the caller, detached when this manager goes
        super().__init__(_CopyOpener(opener, copy), mode=mode, kwargs=kwargs, lock=lock, manager_id=manager_id)

    def close(self, needs_lock: bool = True) -> None:
        super().close(needs_lock)
        self._copy.discard()

    def __del__(self) -> None:
        # While the interpreter shuts down, classes and modules may be half torn down already.
        try:
            parent = getattr(super(), "__del__", None)
            if parent is not None:
                parent()
        finally:
            copy = getattr(self, "_copy", None)
            if copy is not None and callable(_detach):
                _detach(copy)

    def __getstate__(self) -> tuple:
        opener, _args, mode, kwargs, lock, manager_id = super().__getstate__()
        return opener.opener, self._copy.source, self._copy.suffix, mode, kwargs, lock, manager_id

    def __setstate__(self, state: tuple) -> None:
        opener, source, suffix, mode, kwargs, lock, manager_id = state
        self.__init__(opener, _attach(manager_id, source, suffix), mode, kwargs, lock, manager_id)


def new_copy(source: Any, suffix: str = "") -> LocalCopy:
    """A local copy of ``source`` (made now), for :func:`keep_with`; release it with :func:`release` if unused."""
    from uuid import uuid4

    return _attach(str(uuid4()), reopenable(source), suffix, write_copy(source, suffix))


def release(copy: LocalCopy) -> None:
    """Give up a copy no Dataset took (opening it failed): it is removed."""
    _detach(copy)


def keep_with(ds: xr.Dataset, copy: LocalCopy) -> None:
    """Hand ``copy``, just opened as ``ds``, to the file manager reading it (see the module's description).

    If the backend did not open it through a file manager (an engine of its
    own), the copy is removed when ``ds`` is closed.
    """
    store = getattr(getattr(ds, "_close", None), "__self__", None)
    manager = getattr(store, "_manager", None)
    if type(manager) is CachingFileManager and manager._args == (os.path.abspath(copy.path or ""),):
        with _LOCK:
            _COPIES[manager._manager_id] = _COPIES.pop(copy.key)
            copy.key = manager._manager_id
        replacement = CopyFileManager(manager._opener, copy, manager._mode, manager._kwargs,
                                      None if manager._use_default_lock else manager._lock, manager._manager_id)
        with contextlib.suppress(KeyError):  # already open: the replacement reads the same file
            replacement._cache[replacement._key] = manager._cache.pop(manager._key)
        store._manager = replacement
        return
    logger.debug("%s was not opened through a file manager; its copy goes when it is closed", type(store).__name__)
    close, released = ds._close, []

    def close_and_release() -> None:
        try:
            if close is not None:
                close()
        finally:
            if not released:
                released.append(True)
                release(copy)

    ds.set_close(close_and_release)
