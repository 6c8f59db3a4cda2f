"""One bake of an Icechunk repository, as plain functions: plan, prepare (schema), write tasks, commit.

The order is the same as :mod:`arcoforge.core.bake`'s, and so are the plan
(chunks, encodings, write tasks, memory bound) and the values written; only
where the bytes go and how they become visible differ::

    bake = plan_icechunk_bake(spec, [read_schema(i, spec) for i in inputs], branch)
    fork = prepare_icechunk(bake)                 # schema committed on a scratch branch; a pickled fork of it
    forks = [write_icechunk_task(t, bake, fork) for t in tasks_of(cut_pieces(i, bake) for i in inputs)]
    commit_icechunk(forks, bake)                  # merge, commit, move the branch (compare-and-swap)

In a pipeline, inputs and pieces wait for the plan and their write task in the
bake's spill, as StoreToZarr's do (:func:`~arcoforge.core.bake.cut_spilled`,
:func:`write_spilled_icechunk_task`); the commit removes it.

What makes it transactional is Icechunk's: the target branch moves once, to a
snapshot holding the whole bake, and only if it still points where it did
when the bake planned. A bake killed at any step before that leaves the
branch untouched (its scratch branch is replaced by the next attempt), so a
plain rerun completes; none of :mod:`arcoforge.io.state`'s bookkeeping is used.
What arcoforge adds is the plan, the checks and the record in each commit's
metadata of the plan's fingerprint and the inputs the branch then holds, from
which a rerun of a committed bake, or of an append with nothing new, commits nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import itertools
import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..append import describe_existing, extend_schema, inputs_to_append
from ..documents import grow_documents, is_metadata_key
from ..faults import checkpoint
from ..input_checks import check_inputs
from ..io import icechunk_store as ics
from ..io.spill import SpillRef, remove_spills
from ..io.state import fingerprint
from ..io.zarr_store import planned_array, with_documents, write_region
from ..packed_strings import pack_if_strings
from ..patterns import nitems_per_file
from ..rechunk import assemble_task
from ..runtime.memory import limit_netcdf_chunk_cache, release_freed_memory, worker_task_buffer
from ..runtime.progress import record_event
from ..schema import InputSchema, SchemaPool, combine_schemas
from ..stac import provenance, provenance_attrs
from ..store_plan import ExistingStore, StorePlan, plan_description, plan_store
from ..store_template import encode_variable, render_plan
from .bake import StoreSpec, plan_for_workers

logger = logging.getLogger(__name__)


class Mode(enum.Enum):
    """What a bake does to its branch, decided once by :func:`plan_icechunk_bake`."""

    FRESH = "bake"  # replace the branch's content with the bake's store
    APPEND = "append"  # extend the branch's store with inputs it does not hold yet
    NOTHING_NEW = "nothing-new"  # the branch holds this bake already, or every input of the append


@dataclass(frozen=True)
class IcechunkBake:
    """A planned bake of one branch: the store plan, the mode, and what its commit records."""

    plan: StorePlan
    mode: Mode
    branch: str
    base: str | None  # the snapshot the branch pointed to when planned (None: no such branch yet)
    fingerprint: str
    message: str = ""
    record: Mapping[str, Any] = field(default_factory=dict)  # the commit's metadata (under "arcoforge")
    progress_dir: str | None = None
    owner: str = ""  # the bake's id: whose spill the commit removes

    @property
    def url(self) -> str:
        return self.plan.url

    @property
    def scratch(self) -> str:
        return ics.scratch_branch(self.branch, self.fingerprint)


def inputs_hash(urls: Iterable[str]) -> str:
    """A short digest of the inputs' URLs (their order does not matter)."""
    return hashlib.sha256("\n".join(sorted(urls)).encode()).hexdigest()[:16]


def plan_icechunk_bake(spec: StoreSpec, input_schemas: SchemaPool | Iterable[InputSchema],
                       branch: str = "main") -> IcechunkBake:
    """Combine and check the inputs, plan the store, and decide the :class:`Mode` from the branch's head.

    A plan that fails removes the bake's spill: nothing will read it.
    """
    try:
        return dataclasses.replace(_plan(spec, SchemaPool.of(input_schemas), branch), owner=spec.owner)
    except BaseException:
        remove_spills(spec.url, spec.owner, spec.storage_options)
        raise


def for_workers(bake: IcechunkBake) -> IcechunkBake:
    """The bake as cutting and write tasks need it: without the inputs' URLs (the plan and the record hold them)."""
    return dataclasses.replace(bake, plan=plan_for_workers(bake.plan), record={})


def _plan(spec: StoreSpec, input_schemas: SchemaPool, branch: str) -> IcechunkBake:
    url, append_dim, combine_dims = spec.url, spec.append_dim, list(spec.combine_dims)
    repo = ics.open_repository(url, spec.storage_options)
    base = ics.branch_head(repo, branch)
    ics.drop_merged_scratches(repo, branch, base)  # left by a bake killed after it moved the branch
    held = ics.head_metadata(repo, base)
    existing = None
    if append_dim and held.get("kind") in ("bake", "append"):
        store = repo.readonly_session(snapshot_id=base).store
        existing = describe_existing(url, store, append_dim, held.get("ingested", []))
    fresh = inputs_to_append(input_schemas, existing) if existing is not None else input_schemas
    check_inputs(fresh, combine_dims, dict(spec.encoding))
    nitems = nitems_per_file(combine_dims)
    if existing is not None and not len(fresh):
        logger.info("nothing to append to %s@%s: it holds all %d inputs", url, branch, len(input_schemas))
        schema = combine_schemas(input_schemas, combine_dims, nitems)
        plan = StorePlan(url, schema, {}, {}, {}, storage_options=spec.storage_options, append_dim=append_dim,
                         nothing_new=True)
        return IcechunkBake(plan, Mode.NOTHING_NEW, branch, base, held.get("fingerprint", ""))
    if existing is not None:
        first = {append_dim: int(fresh.positions(append_dim).min())}
        schema = extend_schema(existing, combine_schemas(fresh, combine_dims, nitems, first_positions=first))
    else:
        schema = combine_schemas(input_schemas, combine_dims, nitems)
    record = {**provenance(n_inputs=schema.n_inputs), **spec.provenance}
    # One pass: a transaction's writes are its session's, with no state folder for an intermediate.
    kwargs = {**spec.plan_kwargs(provenance_attrs(record)), "multistage_threshold": None}
    plan = plan_store(schema, url, **kwargs, append_to=existing)
    if existing is None:
        plan = with_documents(plan)
    else:
        plan = _grown(plan, existing, repo.readonly_session(snapshot_id=base).store)
    print_ = fingerprint(plan_description(plan))
    if existing is None and held.get("fingerprint") == print_:
        logger.info("%s@%s holds this bake already (snapshot %s): nothing to commit", url, branch, base)
        return IcechunkBake(dataclasses.replace(plan, groups={}, grids={}, nothing_new=True), Mode.NOTHING_NEW,
                            branch, base, print_)
    mode = Mode.APPEND if existing is not None else Mode.FRESH
    message, commit_record = _commit_record(mode, plan, print_, [url for url in fresh.urls() if url], record)
    record_event(spec.progress_dir, "plan", store=url, n_inputs=schema.n_inputs, n_tasks=plan.n_tasks,
                 nbytes=plan.nbytes)
    checkpoint("icechunk.plan")
    return IcechunkBake(plan, mode, branch, base, print_, message, commit_record, spec.progress_dir)


def _grown(plan: StorePlan, existing: ExistingStore, store: Any) -> StorePlan:
    """An append's plan with the branch's metadata documents grown along the append dimension."""
    dim = plan.append_dim
    documents = ics.get_keys(store, ["zarr.json", *(f"{name}/zarr.json" for name in plan.schema.variables)])
    return dataclasses.replace(
        plan, documents=grow_documents(documents, dim, plan.schema.dims[dim], plan.zarr_format),
        append_origin=existing.length,
        ingested=pack_if_strings(itertools.chain(existing.ingested, (u for u in plan.schema.urls if u))))


def _commit_record(mode: Mode, plan: StorePlan, print_: str, added: list[str],
                   provenance_record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The commit's message (recipe, inputs' hash, arcoforge's version) and the metadata it records."""
    from .. import __version__

    recipe = provenance_record.get("recipe_id") or plan.url.rstrip("/").rsplit("/", 1)[-1]
    digest = inputs_hash(added)
    message = (f"arcoforge {__version__}: {mode.value} of recipe {recipe}, {len(added)} inputs "
               f"(inputs sha256 {digest})")
    return message, {"kind": mode.value, "recipe": recipe, "inputs_sha256": digest, "n_inputs": len(added),
                     "arcoforge_version": __version__, "fingerprint": print_, "ingested": list(plan.ingested),
                     "pattern_sha256": provenance_record.get("pattern_sha256")}


def prepare_icechunk(bake: IcechunkBake) -> bytes:
    """Commit the store's schema (or its grown schema) on the scratch branch; returns a pickled fork to write in."""
    if bake.mode is Mode.NOTHING_NEW:
        return b""
    plan = bake.plan
    repo = ics.open_repository(plan.url, plan.storage_options)
    session = ics.start_scratch(repo, bake.branch, bake.fingerprint, bake.base)
    if bake.mode is Mode.FRESH:
        ics.clear(session.store)  # a bake replaces whatever the branch held
        ics.put_keys(session.store, render_plan(plan))  # metadata and the concat coordinates' chunks
    else:
        ics.put_keys(session.store, {k: v for k, v in plan.documents.items() if "/" in k and is_metadata_key(k)})
        _write_new_coordinates(plan, session.store)
    session.commit(f"arcoforge schema of {bake.record.get('recipe')} (data follows)",
                   metadata={ics.METADATA_KEY: {"kind": "schema", "fingerprint": bake.fingerprint}})
    checkpoint("icechunk.schema")
    return pickle.dumps(repo.writable_session(bake.scratch).fork())


def _write_new_coordinates(plan: StorePlan, store: Any) -> None:
    """An append's new values of its concat coordinate, encoded as the store encodes them."""
    import numpy as np

    dim, old, new = plan.append_dim, plan.append_origin, plan.schema.dims[plan.append_dim]
    if dim not in plan.schema.concat_coords:
        return
    array = planned_array(plan.url, dim, plan.documents, plan.zarr_format, store=store)
    encoded = np.asarray(encode_variable(dim, plan.schema.concat_coords[dim][old:new],
                                         plan.schema.variables[dim]).values)
    array[old:new] = encoded.astype(array.dtype)


def write_icechunk_task(task: tuple[tuple, Iterable[Any]], bake: IcechunkBake, fork: bytes) -> bytes:
    """Assemble one write task's regions and write them into a fork of the scratch session; returns the fork."""
    return _write_task(*task, bake, fork)[0]


def write_spilled_icechunk_task(task: tuple[tuple, Iterable[SpillRef]], bake: IcechunkBake, fork: bytes,
                                spec: StoreSpec) -> tuple[bytes, int, int]:
    """Write a task whose pieces are in spilled sections; returns the fork, the bytes written and the pieces read."""
    key, refs = task
    pieces = spec.spill.objects(refs)  # read section by section, once per variable: not all held at once
    written, nbytes = _write_task(key, pieces, bake, fork)
    return written, nbytes, len(pieces)


def _write_task(key: tuple, pieces: Iterable[Any], bake: IcechunkBake, fork: bytes) -> tuple[bytes, int]:
    limit_netcdf_chunk_cache()
    plan = bake.plan
    session = pickle.loads(fork)  # a fresh copy per task: tasks of one worker never share a fork
    variables = {name: plan.schema.variables[name] for name in plan.groups[key[0]]}
    dtypes = {name: variable.dtype for name, variable in variables.items()}
    nbytes = 0
    for name, region, values in assemble_task(key, pieces, plan.grids[key[0]], dtypes, worker_task_buffer()):
        nbytes += write_region(plan, name, region, values, store=session.store)
        del values
        release_freed_memory()
    checkpoint("icechunk.task")
    record_event(bake.progress_dir, "task", store=plan.url, variables=sorted(variables), nbytes=nbytes)
    return pickle.dumps(session), nbytes


def commit_icechunk(forks: Iterable[bytes], bake: IcechunkBake) -> str:
    """Merge the workers' forks, commit on the scratch branch and move the branch there; returns the snapshot id.

    Nothing new: the branch's head, unchanged. Either way the bake's spill is
    removed last, with those of killed bakes (see :func:`~arcoforge.io.spill.remove_spills`).
    """
    if bake.mode is Mode.NOTHING_NEW:
        remove_spills(bake.url, bake.owner, bake.plan.storage_options)
        return bake.base or ""
    repo = ics.open_repository(bake.url, bake.plan.storage_options)
    session = repo.writable_session(bake.scratch)
    session.merge(*(pickle.loads(fork) for fork in forks if fork))
    snapshot = session.commit(bake.message, metadata={ics.METADATA_KEY: dict(bake.record)})
    checkpoint("icechunk.commit")
    ics.move_branch(repo, bake.branch, snapshot, bake.base)  # readers of the branch now see the whole bake
    checkpoint("icechunk.moved")
    repo.delete_branch(bake.scratch)
    remove_spills(bake.url, bake.owner, bake.plan.storage_options)
    logger.info("committed %s to %s@%s (snapshot %s)", bake.mode.value, bake.url, bake.branch, snapshot)
    return snapshot
