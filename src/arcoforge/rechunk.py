"""Rechunking with bounded memory: write tasks, and the input pieces each one pulls.

Each variable of the store is tiled into *write tasks*: regions made of whole
write units (chunks, or shards when sharding) that one worker assembles and
writes. A task is sized so that its working memory — the assembled buffer and
the copies encoding makes, counted by the caller as bytes per element — fits
in ``max_mem``; when a whole write unit cannot, planning fails with a clear
error rather than a worker running out of memory.

What travels through the shuffle is not array data: each input contributes,
to every task it overlaps, a *piece* — its global start and a lazily indexed
:class:`xarray.Variable` of the overlap. The task's worker reads the pieces
(each input byte is read once when tasks span the non-concat dimensions,
which they do whenever the budget allows), places them, encodes and writes.
So no worker holds more than one task, and the runner's shuffle holds only
small references.

Only the arithmetic and the reading of pieces live here; how a worker process
manages its memory around the tasks (glibc, netCDF-C's chunk cache, the one
:class:`TaskBuffer` it keeps) is :mod:`arcoforge.runtime.memory`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from itertools import product

import numpy as np
import xarray as xr

from .chunking import chunks_overlapping
from .errors import InputError, RecipeError, SchemaError, describe_input
from .patterns import Index

# Tasks grow along concat dimensions up to this size, to keep per-task overhead small.
TASK_TARGET_BYTES = 128 * 2**20
# ... and up to about this many pieces (inputs), so that a variable of many small inputs is many
# tasks rather than one hot key: a piece costs ~1 ms to read and ~4 kB held until its task ends.
MAX_PIECES_PER_TASK = 4096


class TaskBuffer:
    """The array a worker assembles its tasks in, kept for the next task of the same shape and dtype.

    A fresh array of a task's size is new memory, each page of it faulted in
    as pieces are copied in (measured: 45 ms to fill a new 124 MB buffer, 8 ms
    a reused one). Only one is kept; it is part of the task's working memory
    that the plan budgets for. A worker's own is
    :func:`arcoforge.runtime.memory.worker_task_buffer`.
    """

    def __init__(self) -> None:
        self._array: np.ndarray | None = None

    def get(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if self._array is None or self._array.shape != shape or self._array.dtype != dtype:
            self._array = None  # the old one goes before the new one is allocated
            self._array = np.empty(shape, dtype=dtype)
        return self._array


TaskKey = tuple[str, tuple[int, ...]]
# (global start, {variable: lazily indexed Variable}, the input's name for messages)
Piece = tuple[tuple[int, ...], dict[str, xr.Variable], str]


@dataclass(frozen=True)
class TaskGrid:
    """A regular tiling of one variable into write tasks."""

    shape: tuple[int, ...]
    task_shape: tuple[int, ...]
    unit: tuple[int, ...]
    # Appending: tasks cover only ``[origin, shape)``; the first may start inside a unit.
    origin: tuple[int, ...] | None = None

    def _ranges(self) -> list[range]:
        origin = self.origin or (0,) * len(self.shape)
        return [range(o // t, math.ceil(s / t) if s else 0) for o, s, t in zip(origin, self.shape, self.task_shape)]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(r) for r in self._ranges())

    def __len__(self) -> int:
        return math.prod(self.counts)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return product(*self._ranges())

    def region(self, task: Sequence[int]) -> tuple[slice, ...]:
        """The slices of the array that task ``task`` covers."""
        origin = self.origin or (0,) * len(self.shape)
        return tuple(
            slice(max(i * t, o), min((i + 1) * t, s))
            for i, t, s, o in zip(task, self.task_shape, self.shape, origin)
        )

    def tasks_overlapping(self, start: Sequence[int], stop: Sequence[int]) -> Iterator[tuple[int, ...]]:
        """Tasks that the box ``[start, stop)`` touches."""
        ranges = [chunks_overlapping(a, b, t) for a, b, t in zip(start, stop, self.task_shape)]
        return product(*ranges)


def plan_task_grid(
    name: str,
    shape: Sequence[int],
    unit: Sequence[int],
    concat_axes: Sequence[int],
    bytes_per_element: int,
    max_mem: int,
    input_lengths: dict[int, int] | None = None,
    max_pieces: int = MAX_PIECES_PER_TASK,
) -> TaskGrid:
    """Tile an array of ``shape`` into tasks of whole ``unit`` blocks that fit in ``max_mem``.

    ``bytes_per_element`` is the working memory a task needs per element of its
    region (all variables it writes, with their encoding copies).

    Tasks start as one unit along concat axes and the whole extent along the
    others; the largest other axis is halved until the task fits. A task then
    grows along concat axes up to :data:`TASK_TARGET_BYTES` (fewer, larger
    tasks cost less overhead), and while it would gather at most ``max_pieces``
    pieces: ``input_lengths`` maps a concat axis to its shortest input's length,
    so a task spanning ``n`` elements along it takes up to ``ceil(n / length) + 1``
    inputs' pieces. One unit is never split, however many pieces it takes.

    >>> plan_task_grid("v", (100_000, 4, 8), (1000, 4, 8), [0], 8, 2**30, {0: 1}, 4096).task_shape
    (4000, 4, 8)

    >>> plan_task_grid("v", (365, 720, 1440), (30, 720, 1440), [0], 8, 2**30).task_shape
    (30, 720, 1440)
    >>> plan_task_grid("v", (20, 3600, 7200), (20, 900, 1800), [0], 8, 2**30).task_shape
    (20, 1800, 3600)
    """
    shape, unit = tuple(int(s) for s in shape), tuple(max(int(u), 1) for u in unit)
    budget = max_mem
    unit_bytes = math.prod(unit) * bytes_per_element
    if unit_bytes > budget:
        raise RecipeError(
            f"variable {name!r}: one write unit {unit} needs about {unit_bytes / 2**20:.0f} MiB to assemble, "
            f"encode and write, more than max_mem={max_mem / 2**20:.0f} MiB; "
            "use smaller target_chunks (or target_shards) or raise max_mem"
        )
    units = [1 if axis in concat_axes else max(math.ceil(s / u), 1) for axis, (s, u) in enumerate(zip(shape, unit))]

    def task_bytes() -> int:
        return math.prod(min(n * u, max(s, 1)) for n, u, s in zip(units, unit, shape)) * bytes_per_element

    while task_bytes() > budget:
        splittable = [a for a in range(len(shape)) if a not in concat_axes and units[a] > 1]
        largest = max(splittable, key=lambda a: units[a] * unit[a])
        units[largest] = math.ceil(units[largest] / 2)
    limit = min(budget, TASK_TARGET_BYTES)
    lengths = {axis: max(int(n), 1) for axis, n in (input_lengths or {}).items()}

    def pieces() -> int:
        return math.prod(math.ceil(min(units[a] * unit[a], max(shape[a], 1)) / lengths[a]) + (lengths[a] > 1)
                         for a in lengths)

    for axis in concat_axes:
        most = max(math.ceil(shape[axis] / unit[axis]), 1)
        while units[axis] < most and task_bytes() * 2 <= limit:
            units[axis] = min(units[axis] * 2, most)
        if lengths and pieces() > max_pieces:  # close in at once (a million one-step inputs), then step
            units[axis] = max(units[axis] * max_pieces // pieces(), 1)
        while units[axis] > 1 and (task_bytes() > limit or pieces() > max_pieces):
            units[axis] -= 1
    task_shape = tuple(min(n * u, max(s, 1)) for n, u, s in zip(units, unit, shape))
    return TaskGrid(shape=shape, task_shape=task_shape, unit=unit)


def group_variables(layouts: dict[str, tuple]) -> dict[str, list[str]]:
    """Group variables that share dimensions, shape and write unit, so one task writes them all.

    Reading an input then opens it once per task rather than once per variable.
    Groups are named after their first variable.

    >>> group_variables({"a": (("t",), (4,), (2,)), "b": (("t",), (4,), (2,)), "c": (("x",), (3,), (3,))})
    {'a': ['a', 'b'], 'c': ['c']}
    """
    groups: dict[tuple, list[str]] = {}
    for name, layout in layouts.items():
        groups.setdefault(layout, []).append(name)
    return {names[0]: names for names in groups.values()}


def _uncached(data: object) -> object:
    """The lazily indexed array under xarray's in-memory cache, if there is one.

    A piece read through the cache would keep its values for as long as the
    piece lives — all pieces of a task, held by the runner until the task ends:
    twice the task's memory (measured: ~250 MB a worker on the benchmark).
    """
    from xarray.core.indexing import MemoryCachedArray

    return data.array if isinstance(data, MemoryCachedArray) else data


@dataclass(frozen=True)
class LazyInput:
    """What cutting an input into pieces needs of it: the variables it writes, lazily indexed, and its name.

    It stands in for the opened Dataset between the stage that opens inputs and
    the one that cuts them (once the plan is known), so that the runner holds
    this rather than whole Datasets: one-step netCDF inputs pickle to ~2.4 kB as
    Datasets (coordinates, indexes, attributes, encodings), ~1.1 kB as this.
    It has the two attributes :func:`input_pieces` reads of a Dataset.
    """

    source: str | None
    variables: dict[str, xr.Variable]

    @property
    def encoding(self) -> dict[str, str | None]:
        return {"source": self.source}


def lazy_input(ds: xr.Dataset, keep: Iterable[str]) -> LazyInput:
    """The variables ``keep`` of an opened input, without attributes, encodings or xarray's in-memory cache."""
    return LazyInput(ds.encoding.get("source"),
                     {name: xr.Variable(ds.variables[name].dims, _uncached(ds.variables[name]._data))
                      for name in keep})


def input_pieces(
    index: Index,
    ds: xr.Dataset | LazyInput,
    groups: dict[str, list[str]],
    dims_of: dict[str, tuple[str, ...]],
    offsets: dict[str, int],
    grids: dict[str, TaskGrid],
) -> Iterator[tuple[TaskKey, Piece]]:
    """The pieces of one input, keyed by the write task each belongs to.

    ``groups`` maps a task group to its variables (all of one shape). A piece is
    ``(global start, {variable: lazily indexed Variable})``: nothing is read here.
    """
    for group, names in groups.items():
        variables = {}
        for name in names:
            if name not in ds.variables:
                raise SchemaError(
                    f"{describe_input(index, ds.encoding.get('source'))} lacks variable {name!r} "
                    "that the schema expected (was it dropped by a preprocessor?)"
                )
            variable = ds.variables[name]
            if tuple(variable.dims) != dims_of[name]:
                variable = variable.transpose(*dims_of[name])
            variables[name] = xr.Variable(variable.dims, _uncached(variable._data))  # no attrs, no encoding
        first = variables[names[0]]
        start = tuple(offsets.get(dim, 0) for dim in first.dims)
        stop = tuple(a + n for a, n in zip(start, first.shape))
        grid = grids[group]
        for task in grid.tasks_overlapping(start, stop):
            region = grid.region(task)
            lo = tuple(max(r.start, a) for r, a in zip(region, start))
            hi = tuple(min(r.stop, b) for r, b in zip(region, stop))
            local = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
            pieces = {n: (v[local] if v.ndim else v) for n, v in variables.items()}
            yield (group, tuple(task)), (lo, pieces, describe_input(index, ds.encoding.get("source")))


def _read_into(piece: Piece, name: str, out: np.ndarray) -> None:
    """Place the values of one variable of a piece in ``out``: decoded there directly by a piece
    that can (``read_into``: a region of a two-stage bake's intermediate), else read and copied."""
    variable = piece[1][name]
    if hasattr(variable, "read_into"):
        try:
            variable.read_into(out)
        except Exception as error:
            raise InputError(f"reading {name!r} from {piece[2]} failed: {type(error).__name__}: {error}") from error
    else:
        out[...] = _read(piece, name)


def _read(piece: Piece, name: str) -> np.ndarray:
    """The values of one variable of a piece, or an :class:`InputError` naming the input.

    An input whose structure opened fine can still fail here, mid-bake: a data
    chunk truncated or corrupt on disk, or a connection lost.
    """
    try:
        return np.asarray(piece[1][name].values)
    except Exception as error:
        raise InputError(
            f"reading {name!r} from {piece[2]} failed: {type(error).__name__}: {error}; "
            "the chunks written so far are kept, and the bake resumes once the input is fixed"
        ) from error


def assemble_task(
    key: TaskKey, pieces: Iterable[Piece], grid: TaskGrid, dtypes: dict[str, np.dtype],
    buffer: TaskBuffer | None = None,
) -> Iterator[tuple[str, tuple[slice, ...], np.ndarray]]:
    """Read a task's pieces into one array per variable covering its region, one variable at a time.

    Yields ``(variable, region, values)``; the caller writes each before the
    next is read, so a task holds one variable's region at once while every
    input is still opened once per task. With a ``buffer``, every variable is
    assembled in the same array, so each ``values`` is only valid until the
    next is asked for. Raises :class:`SchemaError` if the pieces do not cover
    the region exactly, which means an input is missing or was given twice.

    ``pieces`` is gone over once per variable: a sized collection that reads
    them again each time (:class:`~arcoforge.io.spill.SpilledObjects`) keeps
    only part of them in memory; an iterator is made a list first.
    """
    region = grid.region(key[1])
    shape = tuple(s.stop - s.start for s in region)
    if isinstance(pieces, Iterator) or not isinstance(pieces, Sized):
        pieces = list(pieces)
    expected = math.prod(shape)
    for name, dtype in dtypes.items():
        if len(pieces) == 1:
            (only,) = pieces
            if only[1][name].shape == shape and not hasattr(only[1][name], "read_into"):
                yield name, region, _read(only, name).astype(dtype, copy=False)
                continue
        out = buffer.get(shape, np.dtype(dtype)) if buffer else np.empty(shape, dtype=dtype)
        covered = 0
        for piece in pieces:
            start, variable = piece[0], piece[1][name]
            local = tuple(slice(a - r.start, a - r.start + n) for a, r, n in zip(start, region, variable.shape))
            _read_into(piece, name, out[local])
            covered += variable.size
        if covered != expected:
            raise SchemaError(
                f"write task {key[1]} of {name!r} received {covered} of its {expected} elements "
                f"from {len(pieces)} pieces; an input is missing or was given twice"
            )
        yield name, region, out
        del out
