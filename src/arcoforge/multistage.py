"""Read amplification of a rechunk, and a two-stage plan when one pass would inflate inputs many times.

A one-pass bake (:mod:`arcoforge.rechunk`) cuts every input into the pieces of
the write tasks it overlaps. Reading a piece inflates every *source chunk*
(a compressed HDF5 chunk of the input, or the whole input when its chunking is
unknown) that the piece touches, so a source chunk overlapping ``n`` tasks is
inflated ``n`` times. The time-series layout is the worst case: one-step
720x1440 inputs into chunks of time=365, lat=30, lon=30 are written by tasks
spanning all 365 steps but a sixteenth of the map each, so every input chunk is
inflated 16 times (measured: 107.7 s against 8.7 s for time=30).

:func:`read_amplification` measures that: bytes inflated over bytes of data,
computed exactly per axis because both grids are products of per-axis cuts.
:func:`plan_stages` then proposes an *intermediate* chunking (rechunker's idea;
our own arithmetic): stage 1 reads whole source chunks and writes an
intermediate array whose chunks tile the target's write tasks; stage 2 writes
the target from it. Every stage's task stays within ``max_mem``; the plan is
taken only when the one pass would inflate more than ``threshold`` times and
the two stages (one more write and read of the data) cost less.

Everything here is arithmetic on shapes: no Beam, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Above this read amplification, a two-stage rechunk is worth its extra write and read.
DEFAULT_THRESHOLD = 4.0
# Candidate lengths tried per gathering axis (the task's length divided by 1..N, and source multiples).
_MAX_CANDIDATES = 64

AxisChunks = tuple[int, ...]  # the lengths of consecutive chunks along one axis (irregular allowed)


def regular_chunks(size: int, chunk: int) -> AxisChunks:
    """The chunk lengths of an axis of ``size`` cut every ``chunk``.

    >>> regular_chunks(10, 4)
    (4, 4, 2)
    """
    chunk = max(int(chunk), 1)
    return tuple(min(chunk, size - start) for start in range(0, size, chunk))


def source_chunking(
    shape: Sequence[int],
    concat_lengths: Mapping[int, Sequence[int]],
    disk_chunks: Sequence[int | None] | None = None,
) -> tuple[AxisChunks, ...]:
    """The chunks reading inflates, per axis: the inputs along concat axes, cut by their on-disk chunks.

    ``concat_lengths`` maps a concat axis to the inputs' lengths along it;
    ``disk_chunks`` is the inputs' own chunk shape where known (``None`` on an
    axis, or altogether: unknown, so a whole input is taken as one chunk — what
    inflating a compressed field costs, and the safe guess).

    >>> source_chunking((4, 6), {0: [1, 1, 2]}, (1, 4))
    ((1, 1, 1, 1), (4, 2))
    >>> source_chunking((4, 6), {0: [3, 1]})
    ((3, 1), (6,))
    """
    disk = list(disk_chunks) if disk_chunks is not None else [None] * len(shape)
    axes = []
    for axis, size in enumerate(shape):
        chunk = disk[axis]
        if axis in concat_lengths:
            lengths = [int(n) for n in concat_lengths[axis]]
            axes.append(tuple(c for n in lengths for c in regular_chunks(n, chunk or n)))
        else:
            axes.append(regular_chunks(int(size), chunk or int(size)))
    return tuple(axes)


def axis_amplification(chunks: Sequence[int], task: int) -> float:
    """How many times an axis's elements are read when tasks of length ``task`` inflate whole ``chunks``.

    A chunk is inflated once by every task it overlaps.

    >>> axis_amplification((720,), 180)
    4.0
    >>> axis_amplification((1,) * 365, 365)
    1.0
    >>> axis_amplification((5, 5, 5, 5), 7)  # chunks 1 and 2 straddle a task boundary
    1.5
    """
    task = max(int(task), 1)
    lengths = np.asarray(chunks, dtype=np.int64)  # vectorised: a million one-step inputs take ~10 ms
    if not lengths.size or not lengths.sum():
        return 1.0
    stops = np.cumsum(lengths)
    starts = stops - lengths
    inflated = int((lengths * ((stops - 1) // task - starts // task + 1)).sum())
    return inflated / int(stops[-1])


def read_amplification(source: Sequence[Sequence[int]], task_shape: Sequence[int]) -> float:
    """Bytes inflated over bytes of data when tasks of ``task_shape`` read chunks ``source`` (per axis).

    >>> read_amplification(((1,) * 365, (720,), (1440,)), (365, 180, 360))
    16.0
    """
    return math.prod(axis_amplification(chunks, task) for chunks, task in zip(source, task_shape))


@dataclass(frozen=True)
class StagePlan:
    """A two-stage rechunk of one array: source -> intermediate (chunks ``intermediate``) -> target.

    Stage 1 tasks cover ``stage1_task`` elements (whole intermediate chunks);
    stage 2 uses the one-pass plan's tasks, reading the intermediate instead.
    Amplifications are reads over data bytes: ``one_pass`` of the plan it
    replaces, ``stage1`` and ``stage2`` of its stages.
    """

    shape: tuple[int, ...]
    intermediate: tuple[int, ...]
    stage1_task: tuple[int, ...]
    task: tuple[int, ...]
    one_pass: float
    stage1: float
    stage2: float

    @property
    def staged(self) -> float:
        """Data moved by both stages, in passes over the data: both reads and the intermediate write."""
        return self.stage1 + 1.0 + self.stage2

    def describe(self) -> str:
        return (f"two-stage rechunk via chunks {self.intermediate} (stage-1 tasks {self.stage1_task}): "
                f"reads {self.stage1:.1f}x + write 1x + reads {self.stage2:.1f}x "
                f"instead of inflating {self.one_pass:.1f}x in one pass")


def _gather_candidates(size: int, task: int, source_max: int, room: int) -> list[int]:
    """Lengths a stage-1 task may take along an axis where source chunks are shorter than the task.

    Divisors-ish of the task (so intermediate chunks tile it), multiples of
    the source chunk (so stage 1 reads whole chunks), and the longest multiple
    within ``room`` (the most the budget allows along this axis), longest first.
    """
    found = {max(task // d, 1) for d in range(1, _MAX_CANDIDATES + 1)}
    found |= {min(source_max * k, task) for k in range(1, _MAX_CANDIDATES + 1)}
    found.add(max(min(room // source_max * source_max, task), 1))
    return sorted((c for c in found if c <= min(size, room)), reverse=True)


def plan_stages(
    shape: Sequence[int],
    source: Sequence[Sequence[int]],
    task_shape: Sequence[int],
    bytes_per_element: int,
    max_mem: int,
    threshold: float = DEFAULT_THRESHOLD,
    grow_to: int | None = None,
) -> StagePlan | None:
    """A two-stage rechunk of an array of ``shape`` when one pass would inflate it over ``threshold`` times.

    ``source`` is the source chunking per axis (:func:`source_chunking`),
    ``task_shape`` the one-pass write tasks (they become stage 2's), and
    ``bytes_per_element`` the working memory a task needs per element, as for
    :func:`arcoforge.rechunk.plan_task_grid`. Returns ``None`` when one pass is
    good enough, or when no stage-1 task holding whole source chunks fits in
    ``max_mem`` (then nothing is gained: stage 1 would split them too).

    Per axis: where source chunks are longer than the task ("splitting" axes),
    a stage-1 task spans whole source chunks, rounded up to whole task lengths,
    and the intermediate chunk is the task's length, so stage 2 reads each
    intermediate chunk once. Where they are shorter ("gathering" axes, the
    concat dimension of one-step inputs), stage-1 tasks and intermediate chunks
    are one length, the longest that fits the budget (and ``grow_to`` bytes, if
    given: more, smaller stage-1 tasks spread over more workers), preferring
    lengths that read whole source chunks and tile the task.

    >>> p = plan_stages((365, 720, 1440), ((1,) * 365, (720,), (1440,)), (365, 180, 360), 8, 342_713_600)
    >>> p.intermediate, p.stage1_task, p.one_pass, p.staged
    ((41, 180, 360), (41, 720, 1440), 16.0, 3.0)
    >>> plan_stages((365, 720, 1440), ((1,) * 365, (720,), (1440,)), (365, 180, 360), 8, 342_713_600,
    ...             grow_to=128 * 2**20).stage1_task
    (16, 720, 1440)
    """
    shape = tuple(int(s) for s in shape)
    task = tuple(min(max(int(t), 1), max(s, 1)) for t, s in zip(task_shape, shape))
    one_pass = read_amplification(source, task)
    if one_pass <= threshold:
        return None
    longest = [max(chunks, default=1) for chunks in source]
    split = [a for a in range(len(shape)) if longest[a] > task[a]]
    stage1 = [1] * len(shape)
    inter = [1] * len(shape)
    for a in split:
        inter[a] = task[a]
        stage1[a] = min(math.ceil(longest[a] / task[a]) * task[a], shape[a])
    gather = [a for a in range(len(shape)) if a not in split]
    fixed = math.prod(stage1[a] for a in split) * bytes_per_element
    if fixed > max_mem:
        return None
    best: tuple[float, int, tuple[int, ...]] | None = None
    # Gathering axes: the last first (usually one; several are tried jointly, a few candidates each).
    limit = max(min(max_mem, grow_to or max_mem), fixed)
    room = limit // fixed
    options = [_gather_candidates(shape[a], task[a], longest[a], room)[: _MAX_CANDIDATES if len(gather) == 1 else 8]
               for a in gather]
    for choice in _products(options):
        if fixed * math.prod(choice) > limit:
            continue
        for a, length in zip(gather, choice):
            stage1[a] = inter[a] = length
        cost = read_amplification(source, stage1) + read_amplification(
            [regular_chunks(s, i) for s, i in zip(shape, inter)], task)
        key = (cost, -math.prod(choice), tuple(choice))
        if best is None or key < best:
            best = key
    if best is None:
        return None
    for a, length in zip(gather, best[2]):
        stage1[a] = inter[a] = length
    plan = StagePlan(
        shape=shape, intermediate=tuple(inter), stage1_task=tuple(stage1), task=task, one_pass=one_pass,
        stage1=read_amplification(source, stage1),
        stage2=read_amplification([regular_chunks(s, i) for s, i in zip(shape, inter)], task),
    )
    return plan if plan.staged < one_pass else None


def _products(options: list[list[int]]) -> list[tuple[int, ...]]:
    """Every combination of one candidate per axis (one empty combination when there are no axes)."""
    combos: list[tuple[int, ...]] = [()]
    for candidates in options:
        combos = [c + (x,) for c in combos for x in candidates]
    return combos
