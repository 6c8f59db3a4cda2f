"""The multistage rechunk plan: read amplification measured exactly, and intermediate chunks within max_mem."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from arcoforge.multistage import (
    axis_amplification,
    plan_stages,
    read_amplification,
    regular_chunks,
    source_chunking,
)
from arcoforge.rechunk import plan_task_grid
from arcoforge.runtime.memory import local_data_budget

SHAPE = (365, 720, 1440)
ONE_STEP = source_chunking(SHAPE, {0: [1] * 365})  # one-step inputs, each field one compressed chunk
BPE = 8  # two float32 variables written by one task: the buffer and the encoded copy, 4 bytes each


def _task(target: tuple[int, int, int], budget: int) -> tuple[int, ...]:
    return plan_task_grid("v", SHAPE, target, [0], BPE, budget, {0: 1}).task_shape


def test_deep_rechunk_of_the_issue_inflates_16_times_in_one_pass_and_3_passes_in_two_stages():
    budget = local_data_budget(10**9, 2)  # max_mem=1GB, 2 local workers: the benchmark's
    task = _task((365, 30, 30), budget)
    assert task == (365, 180, 360)  # 16 write tasks
    assert read_amplification(ONE_STEP, task) == 16.0  # ~46 GB inflated for 2.9 GB of data
    plan = plan_stages(SHAPE, ONE_STEP, task, BPE, budget)
    assert plan is not None
    assert plan.intermediate == (41, 180, 360)  # 10.6 MB float32 chunks, tiling the write tasks along lat/lon
    assert plan.stage1_task == (41, 720, 1440)  # 41 whole inputs: each input inflated once
    assert math.prod(plan.stage1_task) * BPE <= budget
    assert (plan.one_pass, plan.stage1, plan.stage2, plan.staged) == (16.0, 1.0, 1.0, 3.0)
    assert "16.0x" in plan.describe()
    # grown only to 128 MiB, as one-pass tasks are along concat axes: 23 stage-1 tasks for 2 workers, not 9
    plan = plan_stages(SHAPE, ONE_STEP, task, BPE, budget, grow_to=128 * 2**20)
    assert plan is not None and plan.intermediate == (16, 180, 360) and plan.staged == 3.0


def test_shallow_rechunk_stays_one_pass():
    budget = local_data_budget(10**9, 2)
    task = _task((30, 720, 1440), budget)
    assert read_amplification(ONE_STEP, task) == 1.0
    assert plan_stages(SHAPE, ONE_STEP, task, BPE, budget) is None


def test_inputs_chunked_on_disk_like_the_target_need_no_stage():
    budget = local_data_budget(10**9, 2)
    task = _task((365, 30, 30), budget)
    tiled = source_chunking(SHAPE, {0: [1] * 365}, (1, 90, 90))
    assert read_amplification(tiled, task) == 1.0
    assert plan_stages(SHAPE, tiled, task, BPE, budget) is None


def test_a_larger_budget_has_fewer_tasks_less_amplification_and_longer_intermediate_chunks():
    budget = 10**9  # one worker
    task = _task((365, 30, 30), budget)
    assert task == (365, 360, 720) and read_amplification(ONE_STEP, task) == 4.0
    assert plan_stages(SHAPE, ONE_STEP, task, BPE, budget) is None  # 4x is not above the default threshold
    plan = plan_stages(SHAPE, ONE_STEP, task, BPE, budget, threshold=3.5)
    assert plan is not None and plan.intermediate == (120, 360, 720) and plan.staged == 3.0
    assert math.prod(plan.stage1_task) * BPE <= budget


def test_no_stage_when_one_source_chunk_does_not_fit_the_budget():
    task = (365, 180, 360)
    assert plan_stages(SHAPE, ONE_STEP, task, BPE, 720 * 1440 * BPE - 1) is None
    plan = plan_stages(SHAPE, ONE_STEP, task, BPE, 720 * 1440 * BPE)  # exactly one input per stage-1 task
    assert plan is not None and plan.stage1_task == (1, 720, 1440) and plan.intermediate == (1, 180, 360)


def test_multi_step_inputs_cut_by_their_disk_chunks():
    source = source_chunking((10, 8), {0: [4, 4, 2]}, (3, None))
    assert source == ((3, 1, 3, 1, 2), (8,))
    # tasks of 5 steps: the chunk [3, 4) and [4, 7) straddle nothing, [4, 7) straddles 5
    assert axis_amplification(source[0], 5) == pytest.approx(13 / 10)
    assert read_amplification(source, (5, 2)) == pytest.approx(13 / 10 * 4)


def _brute_force(source: tuple[tuple[int, ...], ...], task: tuple[int, ...]) -> float:
    """Inflated bytes counted chunk by chunk and task by task."""
    edges = [list(itertools.accumulate((0,) + chunks)) for chunks in source]
    shape = [e[-1] for e in edges]
    inflated = 0
    for chunk in itertools.product(*[range(len(e) - 1) for e in edges]):
        lo = [edges[a][i] for a, i in enumerate(chunk)]
        hi = [edges[a][i + 1] for a, i in enumerate(chunk)]
        tasks = math.prod(len(range(lo[a] // task[a], (hi[a] - 1) // task[a] + 1)) for a in range(len(lo)))
        inflated += tasks * math.prod(h - l for l, h in zip(lo, hi))
    return inflated / math.prod(shape)


def test_amplification_matches_counting_chunk_by_chunk_and_plans_keep_their_promises():
    rng = random.Random(16)
    planned = 0
    for _ in range(300):
        ndim = rng.choice((2, 3))
        lengths = [rng.randint(1, 4) for _ in range(rng.randint(2, 12))]
        shape = (sum(lengths),) + tuple(rng.randint(4, 40) for _ in range(ndim - 1))
        disk = (rng.choice((None, 1, 2)),) + tuple(rng.choice((None, rng.randint(1, s))) for s in shape[1:])
        source = source_chunking(shape, {0: lengths}, disk)
        task = tuple(rng.randint(1, s) for s in shape)
        assert read_amplification(source, task) == pytest.approx(_brute_force(source, task))
        budget = rng.randint(1, math.prod(shape)) * 4
        plan = plan_stages(shape, source, task, 4, budget, threshold=2.0)
        if plan is None:
            continue
        planned += 1
        assert plan.one_pass > 2.0 and plan.staged < plan.one_pass
        assert math.prod(plan.stage1_task) * 4 <= budget
        for size, step, chunk, stage2 in zip(shape, plan.stage1_task, plan.intermediate, plan.task):
            # a stage-1 task writes whole intermediate chunks (or reaches the end of the axis)
            assert step % chunk == 0 or step >= size
            assert chunk <= stage2
        assert plan.stage1 == pytest.approx(_brute_force(source, plan.stage1_task))
        inter = tuple(regular_chunks(s, c) for s, c in zip(shape, plan.intermediate))
        assert plan.stage2 == pytest.approx(_brute_force(inter, plan.task))
    assert planned > 20


@pytest.mark.parametrize("threshold", [0.5, "4", True, float("nan")])
def test_a_threshold_that_is_no_amplification_is_refused_when_the_recipe_is_built(threshold):
    from arcoforge import StoreToZarr, pattern_from_file_sequence
    from arcoforge.core.options import StoreOptionsError
    from arcoforge.runtime.context import BakeContext

    pattern = pattern_from_file_sequence(["a.nc", "b.nc"], "time")
    step = StoreToZarr(store_name="s.zarr", combine_dims=pattern.combine_dim_keys, target_root="/tmp/x",
                       multistage_threshold=threshold)
    with pytest.raises(StoreOptionsError, match="multistage_threshold must be a read amplification of at least 1"):
        step.spec(BakeContext())
