"""Objects that grow with the inputs pickle compressed: what crosses the runner and waits in it is ~8x smaller.

:class:`Sealed` keeps such an object pickled in the process that holds it: a
Beam worker keeps the last element each step with arguments was given (its
invoker's cached arguments) until the step runs again, perhaps never; a sealed
schema pool held there is ~1 MB at 100,000 inputs rather than ~9 MB.

Beam's local runner keeps every element and side input it passes between
stages, and each worker decodes its own copy. A schema pool or a bake plan of
100,000 inputs pickles to 7–9 MB, mostly URLs and per-input integers, which
gzip (zlib's deflate) at level 1 shrinks about 8x in ~35 ms (~15 ms to restore).

>>> import pickle, types
>>> urls = types.SimpleNamespace(values=[f"s3://archive/sst/{i:07d}.nc" for i in range(10_000)])
>>> restore, args = compressed_reduce(urls, vars(urls))
>>> len(args[1]) < len(pickle.dumps(urls)) / 5, restore(*args).values[-1]
(True, 's3://archive/sst/0009999.nc')
"""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")

LEVEL = 1  # zlib's fastest: the data is repetitive, higher levels gain little


def compressed_reduce(obj: Any, state: Mapping[str, Any]) -> tuple[Any, tuple[type, bytes]]:
    """A ``__reduce__`` value for ``obj``: its class and ``state`` (its ``__dict__``'s items), compressed.

    Pickled into the compressor as it goes (gzip's stream: zlib with a small header), and
    restored from it, so the uncompressed pickle is never held whole.
    """
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=LEVEL, mtime=0) as stream:
        pickle.dump(dict(state), stream, protocol=5)
    return _restore, (type(obj), compressed.getvalue())


def _restore(cls: type, blob: bytes) -> Any:
    obj = cls.__new__(cls)
    with gzip.GzipFile(fileobj=io.BytesIO(blob), mode="rb") as stream:
        obj.__dict__.update(pickle.load(stream))  # (also for frozen dataclasses: no __setattr__)
    return obj


class Sealed(Generic[T]):
    """An object held as its pickle until :meth:`open` restores a copy of it (which the seal does not keep).

    >>> sealed = Sealed.of({"urls": ["a.nc", "b.nc"]})
    >>> sealed.open()["urls"], opened(sealed) == opened(sealed.open())
    (['a.nc', 'b.nc'], True)
    """

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    @classmethod
    def of(cls, obj: T) -> Sealed[T]:
        return cls(pickle.dumps(obj, protocol=5))

    def open(self) -> T:
        return pickle.loads(self.blob)

    def __reduce__(self) -> tuple[type, tuple[bytes]]:
        return Sealed, (self.blob,)

    def __repr__(self) -> str:
        return f"Sealed({len(self.blob):,} bytes)"


def opened(value: Sealed[T] | T) -> T:
    """``value`` restored if it is sealed, else ``value`` itself."""
    return value.open() if isinstance(value, Sealed) else value
