"""Rechunking with bounded memory: write tasks, and the input pieces each one pulls.

Each variable of the store is tiled into *write tasks*: regions made of whole
write units (chunks, or shards when sharding) that one worker assembles and
writes. A task is sized so that its buffer, the encoded copy and the pieces
being read fit in ``max_mem`` (see :data:`MEMORY_FACTOR`); when a whole
write unit cannot, planning fails with a clear error rather than a worker
running out of memory.

What travels through the shuffle is not array data: each input contributes,
to every task it overlaps, a *piece* — its global start and a lazily indexed
:class:`xarray.Variable` of the overlap. The task's worker reads the pieces
(each input byte is read once when tasks span the non-concat dimensions,
which they do whenever the budget allows), places them, encodes and writes.
So no worker holds more than one task, and the runner's shuffle holds only
small references.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import xarray as xr

from .chunking import chunks_overlapping
from .errors import RecipeError, SchemaError, describe_input
from .patterns import Index

# A task holds its assembled buffer, the CF-encoded copy, and transient read pieces.
MEMORY_FACTOR = 3
# Tasks grow along concat dimensions up to this size, to keep per-task overhead small.
TASK_TARGET_BYTES = 128 * 2**20

TaskKey = tuple[str, tuple[int, ...]]
Piece = tuple[tuple[int, ...], xr.Variable]


@dataclass(frozen=True)
class TaskGrid:
    """A regular tiling of one variable into write tasks."""

    shape: tuple[int, ...]
    task_shape: tuple[int, ...]
    unit: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / t) if s else 0 for s, t in zip(self.shape, self.task_shape))

    def __len__(self) -> int:
        return math.prod(self.counts)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return product(*(range(c) for c in self.counts))

    def region(self, task: Sequence[int]) -> tuple[slice, ...]:
        """The slices of the array that task ``task`` covers."""
        return tuple(
            slice(i * t, min((i + 1) * t, s)) for i, t, s in zip(task, self.task_shape, self.shape)
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
    itemsize: int,
    max_mem: int,
) -> TaskGrid:
    """Tile an array of ``shape`` into tasks of whole ``unit`` blocks that fit in ``max_mem``.

    Tasks start as one unit along concat axes and the whole extent along the
    others; the largest other axis is halved until the task fits. A task then
    grows along concat axes up to :data:`TASK_TARGET_BYTES` (fewer, larger
    tasks cost less overhead).

    >>> plan_task_grid("v", (365, 720, 1440), (30, 720, 1440), [0], 4, 2**30).task_shape
    (30, 720, 1440)
    >>> plan_task_grid("v", (20, 3600, 7200), (20, 900, 1800), [0], 4, 2**30).task_shape
    (20, 1800, 1800)
    """
    shape, unit = tuple(int(s) for s in shape), tuple(max(int(u), 1) for u in unit)
    budget = max_mem // MEMORY_FACTOR
    unit_bytes = math.prod(unit) * itemsize
    if unit_bytes > budget:
        raise RecipeError(
            f"variable {name!r}: one write unit {unit} is {unit_bytes / 2**20:.0f} MiB and needs about "
            f"{MEMORY_FACTOR * unit_bytes / 2**20:.0f} MiB to assemble, encode and write, more than "
            f"max_mem={max_mem / 2**20:.0f} MiB; use smaller target_chunks (or target_shards) or raise max_mem"
        )
    units = [1 if axis in concat_axes else max(math.ceil(s / u), 1) for axis, (s, u) in enumerate(zip(shape, unit))]

    def task_bytes() -> int:
        return math.prod(min(n * u, max(s, 1)) for n, u, s in zip(units, unit, shape)) * itemsize

    while task_bytes() > budget:
        splittable = [a for a in range(len(shape)) if a not in concat_axes and units[a] > 1]
        largest = max(splittable, key=lambda a: units[a] * unit[a])
        units[largest] = math.ceil(units[largest] / 2)
    limit = min(budget, TASK_TARGET_BYTES)
    for axis in concat_axes:
        most = max(math.ceil(shape[axis] / unit[axis]), 1)
        while units[axis] < most and task_bytes() * 2 <= limit:
            units[axis] = min(units[axis] * 2, most)
        while units[axis] > 1 and task_bytes() > limit:
            units[axis] -= 1
    task_shape = tuple(min(n * u, max(s, 1)) for n, u, s in zip(units, unit, shape))
    return TaskGrid(shape=shape, task_shape=task_shape, unit=unit)


def input_pieces(
    index: Index,
    ds: xr.Dataset,
    variables: Iterable[str],
    dims_of: dict[str, tuple[str, ...]],
    offsets: dict[str, int],
    grids: dict[str, TaskGrid],
) -> Iterator[tuple[TaskKey, Piece]]:
    """The pieces of one input, keyed by the write task each belongs to.

    Pieces are lazily indexed variables: nothing is read here.
    """
    for name in variables:
        if name not in ds.variables:
            raise SchemaError(
                f"{describe_input(index, ds.encoding.get('source'))} lacks variable {name!r} "
                "that the schema expected (was it dropped by a preprocessor?)"
            )
        variable = ds.variables[name]
        dims = dims_of[name]
        if tuple(variable.dims) != dims:
            variable = variable.transpose(*dims)
        variable = xr.Variable(variable.dims, variable._data, attrs={})  # drop attrs and encoding
        start = tuple(offsets.get(dim, 0) for dim in dims)
        stop = tuple(a + n for a, n in zip(start, variable.shape))
        grid = grids[name]
        for task in grid.tasks_overlapping(start, stop):
            region = grid.region(task)
            lo = tuple(max(r.start, a) for r, a in zip(region, start))
            hi = tuple(min(r.stop, b) for r, b in zip(region, stop))
            local = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
            yield (name, tuple(task)), (lo, variable[local] if variable.ndim else variable)


def assemble_task(
    key: TaskKey, pieces: Iterable[Piece], grid: TaskGrid, dtype: np.dtype
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Read a task's pieces into one array covering its region.

    Raises :class:`SchemaError` if the pieces do not cover the region exactly,
    which means an input is missing or was given twice.
    """
    region = grid.region(key[1])
    shape = tuple(s.stop - s.start for s in region)
    pieces = list(pieces)
    if len(pieces) == 1 and pieces[0][1].shape == shape:
        return region, np.asarray(pieces[0][1].values).astype(dtype, copy=False)
    out = np.empty(shape, dtype=dtype)
    covered = 0
    for start, piece in pieces:
        local = tuple(slice(a - r.start, a - r.start + n) for a, r, n in zip(start, region, piece.shape))
        out[local] = piece.values
        covered += piece.size
    expected = math.prod(shape)
    if covered != expected:
        raise SchemaError(
            f"write task {key[1]} of variable {key[0]!r} received {covered} of its {expected} elements "
            f"from {len(pieces)} pieces; an input is missing or was given twice"
        )
    return region, out
