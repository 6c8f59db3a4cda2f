"""StoreToIcechunk: the Icechunk bake (:mod:`arcoforge.core.icechunk_bake`) wired into a pipeline.

``Read input schemas`` -> ``Plan commit`` -> ``Commit schema`` (a fork to write in);
the inputs -> ``Spill inputs`` -> ``Cut inputs into pieces`` -> ``Group by write task``
(StoreToZarr's steps, :func:`~arcoforge.beam.store.spilled_tasks`: inputs and pieces
wait in the bake's spill, only references to them in the runner) -> ``Write tasks``
(each into its own fork) -> ``Gather forks`` -> ``Commit`` (merge, commit, move the
branch, remove the spill). Only forks' change lists travel to the last step, never array data.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from ..compressed_pickle import Sealed, opened
from ..core.bake import StoreSpec
from ..errors import RecipeError, require_package
from ..core.icechunk_bake import (IcechunkBake, commit_icechunk, for_workers, plan_icechunk_bake, prepare_icechunk,
                                  write_spilled_icechunk_task)
from ..io.icechunk_store import quiet_icechunk_logs
from ..runtime.context import resolve_context
from ..runtime.memory import one_off_allocations
from .common import count
from ..schema_pool import PoolInParts
from .store import ReadSchemas, StoreToZarr, spilled_tasks


def _plan(parts: Sealed[PoolInParts], spec: StoreSpec, branch: str) -> IcechunkBake:
    quiet_icechunk_logs()
    with one_off_allocations():  # (see StoreToZarr's plan)
        return plan_icechunk_bake(spec, opened(parts).whole(), branch)


def _write_and_count(task: tuple, bake: IcechunkBake, fork: bytes, spec: StoreSpec) -> bytes:
    """Write one task's spilled pieces into a fork; the counters are StoreToZarr's."""
    quiet_icechunk_logs()
    written, nbytes, pieces = write_spilled_icechunk_task(task, bake, fork, spec)
    count("pieces_written", pieces)
    count("tasks_written")
    count("bytes_written", nbytes)
    return written


def _commit(forks: list[bytes], bake: IcechunkBake) -> str:
    commit_icechunk(forks, bake)
    return bake.url


@dataclass
class StoreToIcechunk(StoreToZarr):
    """Combine ``(index, Dataset)`` inputs into one commit of an Icechunk repository's ``branch``.

    Takes :class:`~arcoforge.beam.store.StoreToZarr`'s arguments (the store is
    Zarr v3) and plans, rechunks, encodes and bounds memory exactly as it does;
    the repository is ``<target_root>/<store_name>``, a local path or
    ``s3://`` URL. Workers write chunks into forks of one Icechunk session and
    the last step merges them and commits: the branch moves once, to the whole
    bake, or (killed, failed) not at all; a rerun starts over. With
    ``append_dim`` new inputs are one more commit; inputs the branch holds
    already (and a bake the branch holds already) commit nothing. Outputs the
    repository's URL, like StoreToZarr (so ``| WriteSTAC()`` follows; the
    collection records the snapshot id). Leases and resume state are not used:
    Icechunk's compare-and-swap on the branch refuses a concurrent writer.
    Inputs and pieces wait for the plan and their write task in the bake's
    spill, as StoreToZarr's do (``.arcoforge/<store_name>/spill/`` beside the
    repository); the commit removes it.
    """

    branch: str = "main"

    def __post_init__(self) -> None:
        require_package("icechunk", "icechunk", f"StoreToIcechunk({self.store_name!r})")
        if self.zarr_format != 3:
            raise RecipeError(f"StoreToIcechunk({self.store_name!r}): Icechunk stores are Zarr v3 only")
        super().__post_init__()

    def expand(self, datasets: beam.PCollection) -> beam.PCollection:
        spec = self.spec(resolve_context(self.context))
        plan = (datasets
                | "Read input schemas" >> ReadSchemas(spec)
                | "Plan commit" >> beam.Map(_plan, spec=spec, branch=self.branch))
        plan_view = beam.pvalue.AsSingleton(plan | "Plan for workers" >> beam.Map(for_workers))
        fork = beam.pvalue.AsSingleton(plan | "Commit schema" >> beam.Map(prepare_icechunk))
        # Spilled as they are opened: opened inputs and their pieces never wait in the runner.
        return (spilled_tasks(datasets, plan_view, spec)
                | "Write tasks" >> beam.Map(_write_and_count, bake=plan_view, fork=fork, spec=spec)
                | "Gather forks" >> beam.combiners.ToList()
                | "Commit" >> beam.Map(_commit, bake=beam.pvalue.AsSingleton(plan)))
