"""The bake core: what StoreToZarr does, as plain functions testable without Beam.

One bake of one store is :func:`~arcoforge.core.bake.plan_bake` (deciding its
:class:`~arcoforge.core.bake.Mode` once), :func:`~arcoforge.core.bake.prepare_store`,
:func:`~arcoforge.core.bake.write_task` for every write task, then
:func:`~arcoforge.core.bake.finalize`. The Beam shell (:mod:`arcoforge.beam`) only wires them.
"""

from .bake import (BakePlan, Mode, StoreSpec, cut_pieces, finalize, plan_bake, plan_with_lease, prepare_store,
                   read_schema, store_state, write_task)

__all__ = ["BakePlan", "Mode", "StoreSpec", "cut_pieces", "finalize", "plan_bake", "plan_with_lease",
           "prepare_store", "read_schema", "store_state", "write_task"]
