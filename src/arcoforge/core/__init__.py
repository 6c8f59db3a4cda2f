"""The bake core: what StoreToZarr does, as plain functions testable without Beam.

One bake of one store is :func:`~arcoforge.core.bake.plan_bake` (deciding its
:class:`~arcoforge.core.bake.Mode` once), :func:`~arcoforge.core.bake.prepare_store`,
:func:`~arcoforge.core.bake.write_task` for every write task, then (for a plan
staged in two steps, see :mod:`arcoforge.core.stages`) :func:`~arcoforge.core.bake.write_stage_two`
for every key of :func:`~arcoforge.core.bake.stage_two_keys`, then :func:`~arcoforge.core.bake.finalize`. The Beam shell (:mod:`arcoforge.beam`) only wires them.
"""

from .bake import (BakePlan, Mode, StoreSpec, cut_pieces, finalize, plan_bake, plan_with_lease, prepare_store,
                   read_schema, stage_two_keys, store_state, write_stage_two, write_task)

__all__ = ["BakePlan", "Mode", "StoreSpec", "cut_pieces", "finalize", "plan_bake", "plan_with_lease",
           "prepare_store", "read_schema", "stage_two_keys", "store_state", "write_stage_two", "write_task"]
