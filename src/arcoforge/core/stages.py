"""Two-stage bakes: the intermediate array of a staged group, its stage-1 tasks and the stage-2 tasks.

A group the plan stages (``plan.stages``, see :mod:`arcoforge.multistage`) is
baked in two steps. Stage 1: inputs are cut into the pieces of *stage-1 tasks*
(keyed ``(STAGE_ONE + group, task)``), each spanning whole inputs and written
as decoded values, compressed with a fast codec (LZ4), into an
intermediate array per variable, in the store's hidden state folder
(``<root>/.arcoforge/<store>/stage1/``), so readers never see it. Stage 2: every
write task of the plan reads its region of the intermediate, once, and is
written to the store as a one-pass task would be. Both stages mark their tasks
done in the store's state, so a rerun of the same plan resumes either; the
intermediate goes once the store is published.

The intermediate keeps the decoded values exactly (same dtype, no CF
encoding), so the store's bytes are those of the one-pass bake.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

from ..io.state import state_url, task_id
from ..io.zarr_store import open_store
from ..rechunk import Piece, TaskGrid

if TYPE_CHECKING:
    from ..store_plan import StorePlan

logger = logging.getLogger(__name__)

# Stage-1 task keys are ``(STAGE_ONE + group, task)``: their done markers sit in a folder no
# variable can name (a Zarr name has no "/").
STAGE_ONE = ".stage1/"
INTERMEDIATE = "stage1"  # the intermediate's folder in the store's state folder


def intermediate_url(plan: "StorePlan") -> str:
    """Where the intermediate arrays of a staged bake live: in the store's state folder.

    >>> from arcoforge.store_plan import StorePlan
    >>> intermediate_url(StorePlan("s3://b/out/sst.zarr", None, {}, {}, {}))
    's3://b/out/.arcoforge/sst.zarr/stage1'
    """
    return f"{state_url(plan.url)}/{INTERMEDIATE}"


def is_stage_one(key: tuple) -> bool:
    return str(key[0]).startswith(STAGE_ONE)


def cutting_grids(plan: "StorePlan") -> dict[str, TaskGrid]:
    """The grid inputs are cut by, per group: stage 1's for a staged group, else the plan's own."""
    grids = dict(plan.grids)
    for group, stage in plan.stages.items():
        grids[group] = TaskGrid(plan.grids[group].shape, stage.stage1_task, stage.intermediate)
    return grids


def stage_one_key(group: str, task: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    return STAGE_ONE + group, task


def stage_one_needed(plan: "StorePlan", group: str) -> bool:
    """Whether a staged group still has stage-2 tasks to write (else its stage 1 is skipped)."""
    return any(task_id(group, task) not in plan.done for task in plan.grids[group])


def intermediate_codec(dtype: np.dtype) -> zarr.codecs.BloscCodec:
    """How intermediate chunks are compressed: LZ4 after a byte shuffle (Blosc, the target's default codec).

    The intermediate is written once and read once, so speed beats ratio. On
    the benchmark's fields (one-step 720x1440 float32) it keeps 0.5-0.75x of
    the bytes at about the cost of no compression at all (the page-cache copies
    saved pay for it), where Zstandard level 1 kept 0.4-0.6x at over twice the
    CPU: stage 1 spent most of its time compressing (see docs/scaling.md).
    """
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=np.dtype(dtype).itemsize)


def prepare_intermediate(plan: "StorePlan") -> None:
    """Create the intermediate arrays of a fresh staged bake (any earlier ones go first)."""
    if not plan.stages:
        return
    store = open_store(intermediate_url(plan), plan.storage_options)
    root = zarr.open_group(store, mode="w", zarr_format=3)
    for group, stage in plan.stages.items():
        for name in plan.groups[group]:
            dtype = plan.schema.variables[name].dtype
            root.create_array(name, shape=stage.shape, chunks=stage.intermediate, dtype=dtype,
                              fill_value=np.zeros((), dtype)[()],
                              compressors=intermediate_codec(dtype), overwrite=True)
    logger.info("staged bake of %s: intermediate arrays for %s", plan.url, sorted(plan.stages))


def _intermediate_array(plan: "StorePlan", name: str, mode: str = "r+") -> zarr.Array:
    store = open_store(intermediate_url(plan), plan.storage_options)
    # Every chunk is written: no pass over each one to compare it with the fill value.
    return zarr.open_array(store, path=name, mode=mode, zarr_format=3).with_config({"write_empty_chunks": True})


def write_stage_one(name: str, region: tuple[slice, ...], values: np.ndarray, plan: "StorePlan") -> None:
    """Write one variable's assembled stage-1 region (whole intermediate chunks) as it is.

    One chunk at a time, as :func:`arcoforge.io.zarr_store.write_region` does: zarr
    compresses the chunks of one assignment concurrently, each with its own copies.
    """
    array = _intermediate_array(plan, name)
    starts = [range(s.start, s.stop, c) for s, c in zip(region, array.chunks)]
    for corner in itertools.product(*starts):
        part = tuple(slice(c, min(c + n, s.stop)) for c, n, s in zip(corner, array.chunks, region))
        local = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part, region))
        array[part] = np.ascontiguousarray(values[local])  # zarr encodes a strided view slower


class _Region:
    """A region of an intermediate array, read when its ``values`` are asked for (as a piece's are)."""

    def __init__(self, plan: "StorePlan", name: str, region: tuple[slice, ...]):
        self.plan, self.name, self.region = plan, name, region
        self.shape = tuple(s.stop - s.start for s in region)
        self.size = int(np.prod(self.shape))

    @property
    def values(self) -> np.ndarray:
        return _intermediate_array(self.plan, self.name, mode="r")[self.region]

    def read_into(self, out: np.ndarray) -> None:
        """Decode the region into ``out`` (the worker's task buffer): no fresh array of the task's size,
        whose every page would be faulted in as chunks are copied there."""
        array = _intermediate_array(self.plan, self.name, mode="r")
        array.get_basic_selection(self.region, out=default_buffer_prototype().nd_buffer.from_numpy_array(out))


def stage_two_tasks(plan: "StorePlan") -> Iterator[tuple[str, tuple[int, ...]]]:
    """The write tasks of staged groups still to be written, once stage 1 is done."""
    for group in plan.stages:
        for task in plan.grids[group]:
            if task_id(group, task) not in plan.done:
                yield group, tuple(task)


def stage_two_pieces(key: tuple[str, tuple[int, ...]], plan: "StorePlan") -> list[Piece]:
    """A stage-2 task's one piece: its whole region of the intermediate, read lazily per variable."""
    region = plan.grids[key[0]].region(key[1])
    variables: dict[str, Any] = {name: _Region(plan, name, region) for name in plan.groups[key[0]]}
    return [(tuple(s.start for s in region), variables, f"the intermediate of {plan.url}")]


def stage_one_work(plan: "StorePlan") -> tuple[int, int]:
    """What stage 1 adds to a plan's progress: ``(tasks, bytes)`` still to write.

    The tasks count is a correction to ``plan.n_tasks - len(plan.done)``: the
    stage-1 tasks still to write, plus those done (counted in ``plan.done``).
    """
    done_here = sum(1 for done in plan.done if done.startswith(STAGE_ONE))
    tasks = nbytes = 0
    grids = cutting_grids(plan)
    for group in plan.stages:
        if not stage_one_needed(plan, group):
            continue
        tasks += sum(1 for task in grids[group] if task_id(*stage_one_key(group, tuple(task))) not in plan.done)
        nbytes += sum(int(np.prod(plan.schema.variables[name].shape)) * plan.schema.variables[name].dtype.itemsize
                      for name in plan.groups[group])
    return tasks + done_here, nbytes
