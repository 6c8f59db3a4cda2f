"""Remote inputs: what travels from URL to opener, and a file object that survives pickling and flaky networks.

:class:`RemoteInput` holds everything a worker needs to fetch, verify and open
one input (URL with its query-string secrets, filesystem options, cache, retry
policy, concurrency limit) and is shown only by its public name.
:class:`InputFile` is the seekable file object xarray reads it through: it
reopens at the same position after a transient failure, and pickles small.
Concurrent remote opens are capped per process (:func:`concurrency_slots`), and
two threads never download the same input at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import InputError, RecipeError, describe_input
from .cache import CacheEntry, InputCache, cached_file_name, download
from .filesystems import filesystem
from .redaction import redact, secret_values
from .retries import RetryPolicy, call_with_retries, describe_failure, is_transient

logger = logging.getLogger(__name__)

T = TypeVar("T")

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


_FETCH_LOCKS: dict[str, threading.Lock] = {}


def _fetch_lock(folder: str) -> threading.Lock:
    """One lock per cache entry, so threads of a process never download the same input twice."""
    with _SLOTS_LOCK:
        return _FETCH_LOCKS.setdefault(folder, threading.Lock())


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
        try:
            entry = self.cache.commit(self.name, self.compression, local,
                                      cached_file_name(self.url, self.compression), manifest)
        finally:  # moved into a local cache; uploaded to another, or failed: not needed any more
            with contextlib.suppress(FileNotFoundError):
                os.remove(local)
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

    def __enter__(self) -> "InputFile":
        """``with source as f:`` reads the input, as with pangeo-forge's fsspec OpenFile."""
        opened = self.open()
        self.__dict__.setdefault("_opened", []).append(opened)
        return opened

    def __exit__(self, *exc_info: Any) -> None:
        self.__dict__["_opened"].pop().close()


class InputFile(io.RawIOBase):
    """A read-only file object over a :class:`RemoteInput` that survives pickling and flaky networks.

    It opens lazily; a read that fails transiently reopens the input at the same
    position and tries again. Pickled (as Beam does with lazily opened datasets),
    it carries the input and its position, and reopens where it is unpickled:
    from the cache there, fetching the input again if that machine lacks it.
    It is an :class:`io.RawIOBase`, so xarray can sniff which engine reads it.
    """

    def __init__(self, source: RemoteInput, position: int = 0):
        super().__init__()
        self.source = source
        self._position = position
        self._file: Any = None
        self._size: int | None = None

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

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
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
        super().close()

