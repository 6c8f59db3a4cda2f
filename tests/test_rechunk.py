from __future__ import annotations

import math
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from arcoforge import ConcatDim, FilePattern, RecipeError, SchemaError
from arcoforge.rechunk import TaskGrid, assemble_task, input_pieces, plan_task_grid
from arcoforge.schema import combine_schemas, input_schema


@st.composite
def arrays_and_units(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 40), min_size=ndim, max_size=ndim)))
    unit = tuple(draw(st.integers(1, s)) for s in shape)
    concat_axes = draw(st.lists(st.integers(0, ndim - 1), max_size=1, unique=True))
    itemsize = draw(st.sampled_from([1, 2, 4, 8]))
    unit_bytes = math.prod(unit) * itemsize
    max_mem = draw(st.integers(unit_bytes, unit_bytes * 50))
    return shape, unit, concat_axes, itemsize, max_mem


@settings(max_examples=200, deadline=None)
@given(arrays_and_units())
def test_every_plan_covers_each_element_once_in_whole_units_within_budget(case):
    shape, unit, concat_axes, itemsize, max_mem = case
    grid = plan_task_grid("v", shape, unit, concat_axes, itemsize, max_mem)
    covered = np.zeros(shape, dtype=int)
    for task in grid:
        region = grid.region(task)
        covered[region] += 1
        size = math.prod(s.stop - s.start for s in region)
        assert size * itemsize <= max_mem
        for s, u, n in zip(region, unit, shape):
            assert s.start % u == 0, "a task starts inside a write unit"
            assert s.stop % u == 0 or s.stop == n, "a task ends inside a write unit"
    assert (covered == 1).all()
    assert len(grid) == len(list(grid))


def test_a_write_unit_larger_than_the_budget_is_refused_with_sizes():
    with pytest.raises(RecipeError, match=r"variable 'sst': one write unit \(30, 720, 1440\) needs about 237 MiB.*max_mem=100 MiB"):
        plan_task_grid("sst", (365, 720, 1440), (30, 720, 1440), [0], 8, 100 * 2**20)


def test_tasks_span_non_concat_dims_when_they_fit_so_each_input_is_read_once():
    grid = plan_task_grid("v", (365, 720, 1440), (30, 360, 720), [0], 4, 2**30)
    assert grid.task_shape == (30, 720, 1440)
    assert len(list(grid.tasks_overlapping((17, 0, 0), (18, 720, 1440)))) == 1


def test_small_units_grow_along_concat_dims():
    grid = plan_task_grid("v", (1000, 4), (10, 4), [0], 4, 2**30)
    assert grid.task_shape == (1000, 4)


def build(lengths, nlat):
    pattern = FilePattern(lambda time: f"f{time}.nc", ConcatDim("time", list(range(len(lengths)))))
    total = sum(lengths)
    full = np.arange(total * nlat, dtype="float64").reshape(total, nlat)
    datasets, start = [], 0
    for n in lengths:
        datasets.append(xr.Dataset({"v": (("time", "lat"), full[start:start + n])},
                                   coords={"time": np.arange(start, start + n), "lat": np.arange(nlat)}))
        start += n
    schemas = [input_schema(ds, index, ["time"]) for index, ds in zip(pattern, datasets)]
    return pattern, datasets, combine_schemas(schemas, pattern.combine_dim_keys), full


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    nlat=st.integers(1, 7),
    task_time=st.integers(1, 12),
    task_lat=st.integers(1, 8),
)
def test_pieces_reassemble_every_element_exactly_once(lengths, nlat, task_time, task_lat):
    pattern, datasets, schema, full = build(lengths, nlat)
    grid = TaskGrid(shape=full.shape, task_shape=(task_time, min(task_lat, nlat)), unit=(1, 1))
    groups: dict = {}
    for index, ds in zip(pattern, datasets):
        for key, piece in input_pieces(index, ds, {"v": ["v"]}, {"v": ("time", "lat")},
                                       schema.input_offsets(index), {"v": grid}):
            groups.setdefault(key, []).append(piece)
    assert len(groups) == len(grid)
    rebuilt = np.full_like(full, np.nan)
    for key, pieces in groups.items():
        for name, region, values in assemble_task(key, pieces, grid, {"v": np.dtype("float64")}):
            rebuilt[region] = values
    np.testing.assert_array_equal(rebuilt, full)


def test_pieces_are_lazy_until_assembled(tmp_path):
    path = tmp_path / "x.nc"
    xr.Dataset({"v": (("time", "lat"), np.ones((4, 3)))}).to_netcdf(path, engine="h5netcdf")
    ds = xr.open_dataset(path, engine="h5netcdf")
    grid = TaskGrid(shape=(4, 3), task_shape=(2, 3), unit=(1, 1))
    pattern = FilePattern(lambda time: str(path), ConcatDim("time", [0]))
    pieces = list(input_pieces(next(iter(pattern)), ds, {"v": ["v"]}, {"v": ("time", "lat")}, {"time": 0}, {"v": grid}))
    assert len(pieces) == 2
    assert all(not isinstance(piece["v"]._data, np.ndarray) for _, (_, piece, _) in pieces)
    assert pieces[0][1][2] == f"{path} (pattern index Index(time=0))"


def test_a_missing_piece_is_reported():
    pattern, datasets, schema, _ = build([3, 3], 2)
    grid = TaskGrid(shape=(6, 2), task_shape=(6, 2), unit=(1, 1))
    key, piece = next(input_pieces(next(iter(pattern)), datasets[0], {"v": ["v"]}, {"v": ("time", "lat")},
                                   {"time": 0}, {"v": grid}))
    with pytest.raises(SchemaError, match=r"received 6 of its 12 elements"):
        list(assemble_task(key, [piece], grid, {"v": np.dtype("float64")}))


def test_an_append_grid_covers_only_the_new_region():
    grid = TaskGrid(shape=(10, 3), task_shape=(4, 3), unit=(4, 3), origin=(6, 0))
    assert [grid.region(t) for t in grid] == [(slice(6, 8), slice(0, 3)), (slice(8, 10), slice(0, 3))]
    assert len(grid) == 2


REPEATED_TASKS = """
import resource, sys
import numpy as np
from arcoforge.runtime.memory import keep_freed_memory_for_reuse, release_freed_memory
if sys.argv[1] == "reuse":
    assert keep_freed_memory_for_reuse()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):  # a task reads 32 pieces of 3 MiB, frees them and trims as after each task
    pieces = [np.ones(3 * 2**18, dtype="f4") for _ in range(32)]
    del pieces
    release_freed_memory()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning is Linux-only")
def test_workers_reuse_the_memory_of_finished_tasks_instead_of_faulting_it_in_again():
    def page_faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", REPEATED_TASKS, mode], capture_output=True, text=True, check=True)
        return int(run.stdout.split()[-1])

    pages_per_task = 96 * 2**20 // resource.getpagesize()
    assert page_faults("default") > 6 * pages_per_task  # every task faults its memory in anew
    assert page_faults("reuse") < 2 * pages_per_task  # the first one does; the rest reuse it


def test_a_task_buffer_is_reused_for_the_same_shape_and_dtype_only():
    from arcoforge.rechunk import TaskBuffer

    buffer = TaskBuffer()
    first = buffer.get((3, 4), np.dtype("f4"))
    assert buffer.get((3, 4), np.dtype("f4")) is first
    assert buffer.get((3, 5), np.dtype("f4")).shape == (3, 5)
    assert buffer.get((3, 5), np.dtype("f8")).dtype == np.float64


def test_assembling_in_a_kept_buffer_gives_each_variable_its_own_values():
    from arcoforge.rechunk import TaskBuffer

    grid = plan_task_grid("v", (4, 3), (2, 3), [0], 8, 2**20)
    key = ("g", (0, 0))
    pieces = [((t, 0), {"a": xr.Variable(("t", "x"), np.full((1, 3), t, "f8")),
                        "b": xr.Variable(("t", "x"), np.full((1, 3), 10 + t, "f8"))}, f"input {t}")
              for t in range(4)]
    seen = {}
    for name, region, values in assemble_task(key, pieces, grid, {"a": np.dtype("f8"), "b": np.dtype("f8")},
                                              TaskBuffer()):
        seen[name] = values.copy()  # valid until the next variable is asked for
    np.testing.assert_array_equal(seen["a"][:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(seen["b"][:, 0], [10, 11, 12, 13])


# Scripts run in a process of their own: what glibc hands back to the OS, in MiB, seen in its RSS.
_ALLOCATOR_PRELUDE = """
import ctypes, sys, time
from arcoforge.runtime.memory import limit_coordinator_heaps, trim_freed_memory_every

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
"""


def _returned_mib(script: str, mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _ALLOCATOR_PRELUDE + script, mode], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
    return int(done.stdout)


FREED_INSIDE_THE_HEAP = """blocks = [libc.malloc(64 * 2**10) for _ in range(3200)]  # 200 MiB, each below glibc's mmap threshold
for block in blocks:
    ctypes.memset(block, 1, 64 * 2**10)
for block in blocks[:-1]:  # the last block keeps the top of the heap: nothing is trimmed on its own
    libc.free(block)
before = rss()
if sys.argv[1] == "trim":
    assert trim_freed_memory_every(0.05)
    assert trim_freed_memory_every(0.05)  # started once
time.sleep(0.5)
print((before - rss()) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_the_coordinating_process_hands_memory_freed_inside_its_heap_back():
    assert _returned_mib(FREED_INSIDE_THE_HEAP, "keep") < 20
    assert _returned_mib(FREED_INSIDE_THE_HEAP, "trim") > 150


FREED_AFTER_A_LARGER_BLOCK = """if sys.argv[1] == "limit":
    assert limit_coordinator_heaps()
libc.free(libc.malloc(24 * 2**20))  # glibc raises its mmap threshold to the size of this freed block
blocks = [libc.malloc(2 * 2**20) for _ in range(40)]  # a stage output or a side input of a few MB
for block in blocks:
    ctypes.memset(block, 1, 2 * 2**20)
keep = libc.malloc(2 * 2**20)  # one more, kept: on a heap, nothing below it is trimmed from the top
ctypes.memset(keep, 1, 2 * 2**20)
before = rss()
for block in blocks:
    libc.free(block)
print((before - rss()) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_the_coordinating_process_returns_blocks_of_megabytes_when_they_are_freed():
    """Side inputs and stage outputs of a few MB must not fragment the runner's heaps (issue 16)."""
    assert _returned_mib(FREED_AFTER_A_LARGER_BLOCK, "default") < 10
    assert _returned_mib(FREED_AFTER_A_LARGER_BLOCK, "limit") > 70


FREED_BY_A_ONE_OFF_STEP = """import contextlib
from arcoforge.runtime.memory import keep_freed_memory_for_reuse, one_off_allocations
assert keep_freed_memory_for_reuse()  # a worker: freed memory is kept for the next task

def step_then_free(step) -> int:
    with step:  # a plan's per-input arrays, and one small block allocated after them that outlives the step
        blocks = [libc.malloc(2**20) for _ in range(160)]
        for block in blocks:
            ctypes.memset(block, 1, 2**20)
        kept = libc.malloc(64 * 2**10)
        ctypes.memset(kept, 1, 64 * 2**10)
        before = rss()
        for block in blocks:
            libc.free(block)
    return (before - rss()) // 2**20

first = step_then_free(one_off_allocations() if sys.argv[1] == "one-off" else contextlib.nullcontext())
again = step_then_free(contextlib.nullcontext())  # after the step: the worker's own settings again
print(first * 1000 + again)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_a_worker_hands_back_what_a_one_off_step_freed_and_keeps_its_tasks_memory():
    """What planning freed must not stay in the planning worker's heap through its write tasks (issue 16)."""
    plain, one_off = _returned_mib(FREED_BY_A_ONE_OFF_STEP, "plain"), _returned_mib(FREED_BY_A_ONE_OFF_STEP, "one-off")
    assert plain // 1000 < 10 and plain % 1000 < 10
    assert one_off // 1000 > 120 and one_off % 1000 < 10
