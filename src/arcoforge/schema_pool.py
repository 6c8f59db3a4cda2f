"""Many inputs' schemas, stored by column: a few bytes per input for what differs, shared parts kept once.

A bake of 100,000 inputs must plan in a process whose memory barely grows with
the number of inputs. :class:`SchemaPool` keeps per input only small integers
(ids of its interned variables, global attributes, sizes and index layout, and
its pattern positions, in typed arrays), its URL as UTF-8 in one buffer, and its
concat coordinates' values concatenated per dimension (one array per dtype).
Everything else is kept once per distinct value. The combining code
(:func:`~arcoforge.schema.combine_schemas`, :mod:`arcoforge.input_checks`) reads
these columns directly; :meth:`SchemaPool.schemas` rebuilds
:class:`~arcoforge.schema_parts.InputSchema` objects one at a time, on demand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .errors import describe_input
from .patterns import Index
from .compressed_pickle import Sealed, compressed_reduce, opened
from .packed_strings import PackedStrings, pack_if_strings
from .schema_parts import InputSchema

COMPACT_EVERY = 1024  # small arrays gathered before they are concatenated into one
ROWS_PER_PART = 4096  # inputs a PoolInParts gathers before it seals them


def _numpy(values: array, dtype: str) -> np.ndarray:
    """A numpy copy of a typed array (a view would stop the array from growing)."""
    return np.frombuffer(values, dtype=dtype).copy() if len(values) else np.empty(0, dtype=dtype)


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The flat indices of the slices ``[start, start + length)``, one after the other."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if not total:
        return np.empty(0, dtype=np.int64)
    before = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - before, lengths) + np.arange(total)


class _Interned:
    """Distinct values, each kept once and named by a small id (by key: a digest or the value itself)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.ids: dict[Any, int] = {}

    def id_of(self, key: Any, value: Any) -> int:
        found = self.ids.get(key)
        if found is None:
            found = self.ids[key] = len(self.values)
            self.values.append(value)
        return found

    def remap(self, other: _Interned) -> np.ndarray:
        """Ids here of ``other``'s values (added here when new)."""
        keys = [None] * len(other.values)
        for key, i in other.ids.items():
            keys[i] = key
        return np.array([self.id_of(key, value) for key, value in zip(keys, other.values)], dtype=np.int32)


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(pickle.dumps(value, protocol=5), digest_size=16).digest()


class _Coords:
    """One concat dimension's coordinate values of every input: one concatenated array per dtype.

    Per input: its length (-1: no such coordinate) and the id of its dtype; an
    input's values are the next ``length`` values of its dtype's array.
    """

    def __init__(self, n_rows: int = 0) -> None:
        self.lengths = array("q", [-1]) * n_rows
        self.kinds = array("i", [0]) * n_rows
        self.dtypes = _Interned()
        self.chunks: list[list[np.ndarray]] = []  # per dtype id: arrays not yet concatenated
        self.odd: dict[int, np.ndarray] = {}  # inputs whose coordinate is not 1-D (length -2)
        self._starts: np.ndarray | None = None

    def append(self, values: np.ndarray | None) -> None:
        self._starts = None
        if values is None:
            self.lengths.append(-1)
            self.kinds.append(0)
            return
        values = np.array(values)  # a copy: the pool's arrays are made read-only, not the caller's
        if values.ndim != 1:
            self.odd[len(self.lengths)] = values
            self.lengths.append(-2)
            self.kinds.append(0)
            return
        kind = self.dtypes.id_of(values.dtype, values.dtype)
        if kind == len(self.chunks):
            self.chunks.append([])
        self.lengths.append(len(values))
        self.kinds.append(kind)
        pending = self.chunks[kind]
        pending.append(values)
        if len(pending) >= COMPACT_EVERY:
            self.data(kind)

    def data(self, kind: int) -> np.ndarray:
        """Every value of dtype ``kind``, as one read-only array."""
        pending = self.chunks[kind]
        if len(pending) != 1:
            joined = np.concatenate(pending) if pending else np.empty(0, self.dtypes.values[kind])
            pending[:] = [joined]
        pending[0].flags.writeable = False
        return pending[0]

    def starts(self) -> np.ndarray:
        """Where each input's values start in its dtype's array."""
        if self._starts is None:
            lengths = np.maximum(_numpy(self.lengths, "q"), 0)
            kinds = _numpy(self.kinds, "i")
            starts = np.zeros(len(lengths), dtype=np.int64)
            for kind in range(len(self.chunks)):
                mine = kinds == kind
                starts[mine] = np.cumsum(lengths[mine]) - lengths[mine]
            self._starts = starts
        return self._starts

    def values(self, row: int) -> np.ndarray | None:
        length = self.lengths[row]
        if length < 0:
            return self.odd.get(row)
        start = int(self.starts()[row])
        return self.data(self.kinds[row])[start:start + length]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The values of ``rows`` one after the other (as ``np.concatenate`` of each row's values)."""
        lengths = _numpy(self.lengths, "q")[rows]
        kinds = np.unique(_numpy(self.kinds, "i")[rows])
        if len(kinds) == 1 and (lengths >= 0).all():
            return self.data(int(kinds[0]))[_spans(self.starts()[rows], lengths)]
        return np.concatenate([self.values(int(row)) for row in rows])

    def extend(self, other: _Coords) -> None:
        """Append ``other``'s inputs after these."""
        self._starts = None
        shift = len(self.lengths)
        remap = self.dtypes.remap(other.dtypes)
        while len(self.chunks) < len(self.dtypes.values):
            self.chunks.append([])
        for kind in range(len(other.chunks)):
            self.chunks[remap[kind]].append(other.data(kind))
        kinds = _numpy(other.kinds, "i")
        self.kinds.frombytes((remap[kinds] if len(remap) else kinds).astype(np.int32).tobytes())
        self.lengths.extend(other.lengths)
        self.odd.update({row + shift: values for row, values in other.odd.items()})

    def take(self, rows: np.ndarray) -> _Coords:
        taken = _Coords()
        for row in rows:
            taken.append(self.values(int(row)))
        return taken

    def __getstate__(self) -> dict[str, Any]:
        for kind in range(len(self.chunks)):
            self.data(kind)
        return {**self.__dict__, "_starts": None}


class SchemaPool:
    """Input schemas gathered compactly; pools merge in any order (a Beam ``CombineFn`` accumulator).

    Rows are inputs in the order they were added. Variables, global attributes
    and sizes are interned (variables and attributes by a digest of their
    pickled form); what the combining code reads per input is available as
    numpy columns (:meth:`variables_ids`, :meth:`positions`, ...). The objects
    shared by the schemas it rebuilds are read-only. Measured on one-step netCDF
    inputs: ~90 B per input decoded and ~87 B pickled (InputSchema objects: ~2 kB).
    """

    def __init__(self) -> None:
        self._variables = _Interned()
        self._attrs = _Interned()
        self._dims = _Interned()
        self._layouts = _Interned()  # an index's dimensions, and its positions but their value
        self._variables_of = array("i")
        self._attrs_of = array("i")
        self._dims_of = array("i")
        self._layout_of = array("i")
        self._positions = array("q")  # every input's position values, in its layout's order
        self._urls = bytearray()
        self._url_lengths = array("i")  # -1: not a str (kept in _odd_urls)
        self._odd_urls: dict[int, Any] = {}
        self._coords: dict[str, _Coords] = {}
        self._cache: dict[str, Any] = {}

    @classmethod
    def of(cls, schemas: Iterable[InputSchema]) -> SchemaPool:
        """The pool of ``schemas`` (itself if it is a pool already, or the pool a view is of)."""
        if isinstance(schemas, SchemaPool):
            return schemas
        if isinstance(schemas, SchemaView):
            return schemas.pool
        pool = cls()
        for schema in schemas:
            pool.add(schema)
        return pool

    def add(self, schema: InputSchema) -> SchemaPool:
        self._cache.clear()
        row = len(self._layout_of)
        self._variables_of.append(self._variables.id_of(_digest(schema.variables), schema.variables))
        self._attrs_of.append(self._attrs.id_of(_digest(schema.attrs), schema.attrs))
        dims = tuple(schema.dims.items())
        self._dims_of.append(self._dims.id_of(dims, dict(dims)))
        layout = tuple((dim, dim.nitems_per_file, dataclasses.replace(position, value=0))
                       for dim, position in schema.index.items())
        self._layout_of.append(self._layouts.id_of(layout, layout))
        self._positions.extend(position.value for position in schema.index.values())
        if isinstance(schema.url, str):
            encoded = schema.url.encode("utf-8", "surrogatepass")
            self._urls += encoded
            self._url_lengths.append(len(encoded))
        else:
            self._odd_urls[row] = schema.url
            self._url_lengths.append(-1)
        for dim in schema.concat_coords:
            if dim not in self._coords:
                self._coords[dim] = _Coords(row)
        for dim, coords in self._coords.items():
            coords.append(schema.concat_coords.get(dim))
        return self

    def merge(self, other: SchemaPool) -> SchemaPool:
        """Append ``other``'s inputs after these (its interned values mapped onto these)."""
        self._cache.clear()
        shift, added = len(self), len(other)
        for mine, theirs, column in ((self._variables_of, other._variables_of, self._variables.remap(other._variables)),
                                     (self._attrs_of, other._attrs_of, self._attrs.remap(other._attrs)),
                                     (self._dims_of, other._dims_of, self._dims.remap(other._dims)),
                                     (self._layout_of, other._layout_of, self._layouts.remap(other._layouts))):
            ids = _numpy(theirs, "i")
            mine.frombytes((column[ids] if len(column) else ids).astype(np.int32).tobytes())
        self._positions.extend(other._positions)
        self._urls += other._urls
        self._url_lengths.extend(other._url_lengths)
        self._odd_urls.update({row + shift: url for row, url in other._odd_urls.items()})
        for dim in other._coords:
            if dim not in self._coords:
                self._coords[dim] = _Coords(shift)
        for dim, coords in self._coords.items():
            coords.extend(other._coords[dim] if dim in other._coords else _Coords(added))
        return self

    def take(self, rows: Iterable[int]) -> SchemaPool:
        """A pool of the inputs at ``rows`` only, in that order."""
        taken = SchemaPool()
        for row in rows:
            taken.add(self.schema(int(row)))
        return taken

    def __len__(self) -> int:
        return len(self._layout_of)

    def __reduce__(self) -> tuple:
        # Compressed: partial pools are Beam's combine accumulators, and the whole pool passes through the runner.
        return compressed_reduce(self, {**self.__dict__, "_cache": {}})

    # -- one input ---------------------------------------------------------------------------------

    def _cached(self, key: str, compute: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _position_starts(self) -> np.ndarray:
        def compute() -> np.ndarray:
            arity = np.array([len(layout) for layout in self._layouts.values], dtype=np.int64)
            counts = arity[_numpy(self._layout_of, "i")] if len(self) else np.empty(0, np.int64)
            return np.cumsum(counts) - counts
        return self._cached("position_starts", compute)

    def index(self, row: int) -> Index:
        layout = self._layouts.values[self._layout_of[row]]
        start = row * len(layout) if len(self._layouts.values) == 1 else int(self._position_starts()[row])
        return Index({dim: dataclasses.replace(template, value=int(self._positions[start + i]))
                      for i, (dim, _, template) in enumerate(layout)})

    def _url_starts(self) -> np.ndarray:
        def compute() -> np.ndarray:
            lengths = np.maximum(_numpy(self._url_lengths, "i"), 0).astype(np.int64)
            return np.cumsum(lengths) - lengths
        return self._cached("url_starts", compute)

    def url(self, row: int) -> str | None:
        length = self._url_lengths[row]
        if length < 0:
            return self._odd_urls[row]
        start = int(self._url_starts()[row])
        return self._urls[start:start + length].decode("utf-8", "surrogatepass")

    def packed_urls(self, rows: np.ndarray) -> Sequence[str | None]:
        """The URLs of ``rows`` as :class:`~arcoforge.packed_strings.PackedStrings`, their bytes copied as they
        are held (a tuple if one is neither a str nor None: see :func:`~arcoforge.packed_strings.pack_if_strings`).

        Copied into a buffer of the exact size, which the result keeps: planning 100,000
        inputs peaked 10 MB above the pool here when the buffer grew and was then copied.
        """
        rows = np.asarray(rows, dtype=np.int64)
        lengths = _numpy(self._url_lengths, "i")[rows].astype(np.int64)
        missing = lengths < 0
        if any(self._odd_urls[int(row)] is not None for row in rows[missing]):
            return pack_if_strings(self.urls(rows.tolist()))
        lengths[missing] = 0
        ends = np.cumsum(lengths)
        held, starts = memoryview(self._urls), self._url_starts()[rows]
        gathered = bytearray(int(ends[-1]) if len(ends) else 0)
        at = 0
        for first in range(0, len(rows), 4096):  # a block at a time: few int objects alive at once
            block = slice(first, first + 4096)
            for start, length in zip(starts[block].tolist(), lengths[block].tolist()):
                gathered[at:at + length] = held[start:start + length]
                at += length
        return PackedStrings(gathered, ends, missing if missing.any() else None)

    def urls(self, rows: Iterable[int] | None = None) -> Iterator[str | None]:
        """The URLs of ``rows`` (default: every input, in the order added)."""
        return (self.url(int(row)) for row in (range(len(self)) if rows is None else rows))

    def variables(self, row: int) -> dict[str, Any]:
        return self._variables.values[self._variables_of[row]]

    def attrs(self, row: int) -> dict[str, Any]:
        return self._attrs.values[self._attrs_of[row]]

    def dims(self, row: int) -> dict[str, int]:
        return self._dims.values[self._dims_of[row]]

    def concat_coords(self, row: int) -> dict[str, np.ndarray]:
        found = {dim: coords.values(row) for dim, coords in self._coords.items()}
        return {dim: values for dim, values in found.items() if values is not None}

    def name(self, row: int) -> str:
        """How messages name the input at ``row``."""
        return describe_input(self.index(row), self.url(row))

    def schema(self, row: int) -> InputSchema:
        return InputSchema(self.index(row), self.url(row), self.dims(row), self.variables(row), self.attrs(row),
                           self.concat_coords(row))

    def schemas(self) -> SchemaView:
        """Every input's schema, rebuilt one at a time as it is read (the shared parts shared: read-only)."""
        return SchemaView(self)

    # -- columns -----------------------------------------------------------------------------------

    def variables_ids(self) -> np.ndarray:
        return _numpy(self._variables_of, "i")

    def attrs_ids(self) -> np.ndarray:
        return _numpy(self._attrs_of, "i")

    def dims_ids(self) -> np.ndarray:
        return _numpy(self._dims_of, "i")

    def sizes_along(self, dim: str) -> np.ndarray:
        """Every input's size along ``dim`` (-1: it lacks the dimension), from the distinct sizes."""
        table = np.array([sizes.get(dim, -1) for sizes in self._dims.values], dtype=np.int64)
        return table[self.dims_ids()] if len(self) else np.empty(0, np.int64)

    def layout_names(self) -> list[list[str]]:
        """The dimension names of each distinct index layout."""
        return [[dim.name for dim, _, _ in layout] for layout in self._layouts.values]

    def layout_ids(self) -> np.ndarray:
        return _numpy(self._layout_of, "i")

    def positions(self, dim: str) -> np.ndarray:
        """Every input's position along dimension ``dim`` (``KeyError`` if an input's index lacks it)."""
        column = []
        for layout in self._layouts.values:
            names = [d.name for d, _, _ in layout]
            column.append(names.index(dim) if dim in names else -1)
        if len(column) == 1 and column[0] >= 0:  # one layout: the positions are a table
            return _numpy(self._positions, "q").reshape(len(self), -1)[:, column[0]]
        column_of = np.array(column, dtype=np.int64)[self.layout_ids()]
        if (column_of < 0).any():
            raise KeyError(f"index has no dimension named {dim!r}")
        return _numpy(self._positions, "q")[self._position_starts() + column_of]

    def order(self) -> np.ndarray:
        """The rows in the order the pattern enumerates its inputs (inputs with equal indexes: as added)."""
        def compute() -> np.ndarray:
            layouts = self._layouts.values
            if len(layouts) == 1:
                layout = layouts[0]
                values = _numpy(self._positions, "q").reshape(len(self), len(layout))
                by = sorted(range(len(layout)), key=lambda i: layout[i][0])  # Index.sort_key's order
                return np.lexsort([values[:, i] for i in reversed(by)]) if by else np.arange(len(self))
            return np.array(sorted(range(len(self)), key=lambda row: self.index(row).sort_key()), dtype=np.int64)
        return self._cached("order", compute)

    def coordinate_lengths(self, dim: str) -> np.ndarray:
        """Every input's number of values of the coordinate along ``dim`` (-1: none)."""
        coords = self._coords.get(dim)
        return _numpy(coords.lengths, "q") if coords is not None else np.full(len(self), -1, dtype=np.int64)

    def gather_coordinate(self, dim: str, rows: np.ndarray) -> np.ndarray:
        """The values of the coordinate along ``dim`` of ``rows``, one after the other."""
        return self._coords[dim].gather(np.asarray(rows, dtype=np.int64))


class PoolInParts:
    """A :class:`SchemaPool` gathered as inputs arrive, kept as sealed parts of :data:`ROWS_PER_PART` inputs.

    A combine holds its accumulator while a worker reads all its inputs: open,
    ~90 bytes per input; sealed (:class:`~arcoforge.compressed_pickle.Sealed`),
    ~10. Parts from several workers join without being opened; :meth:`whole`
    opens them once, where the bake is planned.

    >>> from arcoforge.patterns import Index
    >>> schema = InputSchema(Index(), "a.nc", {}, {}, {}, {})
    >>> parts = PoolInParts(rows_per_part=2)
    >>> for _ in range(5):
    ...     parts = parts.add(schema)
    >>> len(parts.parts), len(parts), len(parts.join([parts]).whole())
    (2, 5, 10)
    """

    __slots__ = ("parts", "filling", "rows_per_part")

    def __init__(self, parts: Iterable[tuple[int, Sealed[SchemaPool]]] = (), filling: SchemaPool | None = None,
                 rows_per_part: int = ROWS_PER_PART) -> None:
        self.parts = list(parts)  # (inputs, sealed pool of them)
        self.filling = filling if filling is not None else SchemaPool()
        self.rows_per_part = rows_per_part

    def add(self, schema: InputSchema) -> PoolInParts:
        self.filling.add(schema)
        if len(self.filling) >= self.rows_per_part:
            self.parts.append((len(self.filling), Sealed.of(self.filling)))
            self.filling = SchemaPool()
        return self

    def _sealed_parts(self) -> list[tuple[int, Sealed[SchemaPool]]]:
        return self.parts + ([(len(self.filling), Sealed.of(self.filling))] if len(self.filling) else [])

    def join(self, others: Iterable[PoolInParts | Sealed[PoolInParts]]) -> PoolInParts:
        """These parts and ``others``' (each sealed or not), after them; their sealed parts stay sealed."""
        parts = self._sealed_parts()
        for other in others:
            parts += opened(other)._sealed_parts()
        return PoolInParts(parts, rows_per_part=self.rows_per_part)

    def whole(self) -> SchemaPool:
        """One pool of every input: the parts' in the order they were sealed, then the filling's."""
        pool = SchemaPool()
        for _, part in self.parts:
            pool.merge(part.open())
        return pool.merge(self.filling)

    def __len__(self) -> int:
        return sum(rows for rows, _ in self.parts) + len(self.filling)

    def __reduce__(self) -> tuple:
        return PoolInParts, (self.parts, self.filling, self.rows_per_part)


def first_rows(ids: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The first row, in ``order``, of each distinct value of ``ids`` (a column), in that order."""
    _, first = np.unique(ids[order], return_index=True, axis=0)
    return order[np.sort(first)]


class SchemaView(Sequence[InputSchema]):
    """A pool's schemas as a read-only sequence; each one rebuilt when read."""

    def __init__(self, pool: SchemaPool) -> None:
        self.pool = pool

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.pool.schema(row) for row in range(len(self))[i]]
        return self.pool.schema(range(len(self))[i])

    def __iter__(self) -> Iterator[InputSchema]:
        return (self.pool.schema(row) for row in range(len(self)))
