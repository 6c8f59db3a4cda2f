"""Many strings, such as every input's URL, kept as one UTF-8 buffer and an offsets array.

A plan lists every input's URL, and each process that decodes it holds them:
as Python ``str`` objects ~120 bytes per URL, packed ~8 bytes plus the URL's
own. :class:`PackedStrings` is an immutable sequence that compares equal to a
list or tuple of the same strings; ``None`` (an input without a URL) is kept.

>>> urls = pack_strings(["s3://a/1.nc", None, "s3://a/é.nc"])
>>> len(urls), urls[2], urls[1], list(urls[:2])
(3, 's3://a/é.nc', None, ['s3://a/1.nc', None])
>>> urls == ("s3://a/1.nc", None, "s3://a/é.nc")
True
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np


class PackedStrings(Sequence):
    """Strings (or ``None``) packed in one buffer; build with :func:`pack_strings`."""

    __slots__ = ("_buffer", "_ends", "_missing")

    def __init__(self, buffer: bytes | bytearray, ends: np.ndarray, missing: np.ndarray | None = None) -> None:
        self._buffer = buffer  # (a bytearray filled in place is kept as it is, not copied; never changed here)
        self._ends = ends  # int64: where each string ends in the buffer
        self._missing = missing  # bool per string (None: no string is missing)

    def __len__(self) -> int:
        return len(self._ends)

    def _decode(self, i: int) -> str | None:
        if self._missing is not None and self._missing[i]:
            return None
        start = int(self._ends[i - 1]) if i else 0
        return self._buffer[start:int(self._ends[i])].decode("utf-8", "surrogatepass")

    @overload
    def __getitem__(self, i: int) -> str | None: ...
    @overload
    def __getitem__(self, i: slice) -> PackedStrings: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return pack_strings(self._decode(j) for j in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("PackedStrings index out of range")
        return self._decode(i)

    def __iter__(self) -> Iterator[str | None]:
        return (self._decode(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedStrings):
            return (self._buffer == other._buffer and np.array_equal(self._ends, other._ends)
                    and np.array_equal(self._missing_mask(), other._missing_mask()))
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash((bytes(self._buffer), self._ends.tobytes(), self._missing_mask().tobytes()))

    def all_present(self) -> bool:
        """``all(self)`` without decoding a string: none is ``None`` and none is empty.

        >>> pack_strings(["a.nc", "b.nc"]).all_present(), pack_strings(["a.nc", ""]).all_present()
        (True, False)
        """
        lengths = np.diff(self._ends, prepend=0)
        return bool((lengths > 0).all()) and not self._missing_mask().any()

    def _missing_mask(self) -> np.ndarray:
        return self._missing if self._missing is not None else np.zeros(len(self), dtype=bool)

    def __repr__(self) -> str:
        shown = ", ".join(repr(s) for s in self[:3])
        return f"PackedStrings([{shown}{', ...' if len(self) > 3 else ''}], {len(self)} strings)"

    def __reduce__(self) -> tuple:
        return PackedStrings, (self._buffer, self._ends, self._missing)


def pack_strings(values: Iterable[str | None]) -> PackedStrings:
    """``values`` packed; each must be a ``str`` or ``None``."""
    packed = pack_if_strings(values)
    if not isinstance(packed, PackedStrings):
        odd = next(value for value in packed if value is not None and not isinstance(value, str))
        raise TypeError(f"pack_strings takes str or None, not {type(odd).__name__}")
    return packed


def pack_if_strings(values: Iterable[Any]) -> Sequence[Any]:
    """``values`` packed if each is a ``str`` or ``None``, else as a tuple (an input's odd "source").

    >>> pack_if_strings(["a.nc", ("b.nc", "c.nc")])
    ('a.nc', ('b.nc', 'c.nc'))
    """
    buffer, ends, missing = bytearray(), array("q"), array("b")
    values = iter(values)
    for value in values:
        if value is None:
            missing.append(1)
        elif isinstance(value, str):
            buffer += value.encode("utf-8", "surrogatepass")
            missing.append(0)
        else:
            return (*_packed(buffer, ends, missing), value, *values)
        ends.append(len(buffer))
    return _packed(buffer, ends, missing)


def _packed(buffer: bytearray, ends: array, missing: array) -> PackedStrings:
    mask = np.frombuffer(missing, dtype=np.int8).astype(bool) if len(missing) else np.zeros(0, bool)
    return PackedStrings(bytes(buffer), np.frombuffer(ends, dtype=np.int64).copy() if len(ends) else
                         np.zeros(0, np.int64), mask if mask.any() else None)
