"""One bake of one store, as plain functions: plan (deciding the mode once), prepare, write tasks, finalize.

The order is always::

    bake = plan_bake(spec, [read_schema(i, spec) for i in inputs])   # or plan_with_lease
    prepare_store(bake)                                               # template, or append journal
    for task in tasks_of(cut_pieces(i, bake) for i in inputs):
        write_task(task, bake)
    finalize(total_bytes, bake)                                       # publish, release the lease

:func:`plan_bake` reads the store's state once and decides the bake's
:class:`Mode` — a fresh bake, the resumption of an interrupted one, an append,
the resumption of an interrupted append, or nothing new to append — and
computes the plan's fingerprint once; every later step follows that decision.
Nothing here imports Beam: :mod:`arcoforge.beam.store` wires these functions
into a pipeline, and tests drive them directly.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from .. import append_txn
from ..append import UnfinishedStoreError, extend_schema, inputs_to_append, read_existing
from ..compressed_pickle import Sealed, compressed_reduce, opened
from ..faults import checkpoint
from ..features import check_storable
from ..input_checks import DEFAULT_MAX_ATTR_BYTES, check_inputs, drop_large_attrs
from ..io.lease import DEFAULT_TTL, LeaseKeeper
from ..io.spill import Spill, SpillRef, new_spill_key, remove_spills
from ..multistage import DEFAULT_THRESHOLD
from ..patterns import Dimension, Index, nitems_per_file
from ..rechunk import MAX_PIECES_PER_TASK, LazyInput, assemble_task, input_pieces, lazy_input
from ..runtime.memory import limit_netcdf_chunk_cache, release_freed_memory, worker_task_buffer
from ..runtime.progress import record_event
from ..schema import InputSchema, SchemaPool, combine_schemas, input_schema
from ..stac import provenance, provenance_attrs
from ..io.state import StoreState, fingerprint, new_owner, task_id
from ..io.zarr_store import publish_bake, with_documents, write_region, write_template
from ..store_plan import StorePlan, plan_description, plan_store, recorded_description
from ..store_template import render_plan
from .stages import (INTERMEDIATE, STAGE_ONE, cutting_grids, is_stage_one, prepare_intermediate, stage_one_key,
                     stage_one_needed, stage_one_work, stage_two_pieces, stage_two_tasks, write_stage_one)

logger = logging.getLogger(__name__)


class Mode(enum.Enum):
    """What a bake does to its store, decided once by :func:`plan_bake`."""

    FRESH = "fresh"  # write the store from scratch (replacing whatever unfinished store is there)
    RESUME = "resume"  # the same plan was started (or completed) before: write only the tasks not done
    APPEND = "append"  # extend a complete store with inputs it does not hold yet
    RESUME_APPEND = "resume-append"  # the same append was interrupted before its commit point
    NOTHING_NEW = "nothing-new"  # an append whose inputs the store holds already: write nothing


@dataclass(frozen=True)
class StoreSpec:
    """Everything StoreToZarr resolves when the pipeline is built: where, how, and who bakes one store."""

    url: str
    combine_dims: tuple[Dimension, ...]
    target_chunks: Any = None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    encoding: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    zarr_format: int = 3
    target_shards: Mapping[str, int] | None = None
    max_mem: int | str = "1GB"  # the data budget of this process, local workers already accounted for
    dynamic_chunking_fn: Callable[..., Mapping[str, int]] | None = None
    dynamic_chunking_fn_kwargs: Mapping[str, Any] = field(default_factory=dict)
    storage_options: dict | None = None
    owner: str = field(default_factory=new_owner)  # the lease owner of this bake
    lease_ttl: float = DEFAULT_TTL
    break_lease: bool = False
    append_dim: str | None = None
    progress_dir: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)  # what the runner knows of the recipe
    max_attr_bytes: int | None = DEFAULT_MAX_ATTR_BYTES
    max_pieces_per_task: int = MAX_PIECES_PER_TASK
    multistage_threshold: float | None = DEFAULT_THRESHOLD  # None: never two stages (see arcoforge.multistage)
    # The key of this bake's spill (arcoforge.io.spill): it lives in the pipeline only, never in a file.
    spill_key: bytes = field(default_factory=new_spill_key, repr=False)

    @property
    def spill(self) -> Spill:
        """This bake's spill folder, where inputs and pieces wait for the plan and their write task."""
        return Spill(self.url, self.owner, self.spill_key, self.storage_options)

    @property
    def concat_dims(self) -> list[str]:
        return [d.name for d in self.combine_dims if d.operation.name == "CONCAT"]

    def plan_kwargs(self, extra_attrs: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :func:`~arcoforge.store_plan.plan_store` (``extra_attrs`` added to attrs)."""
        return dict(target_chunks=self.target_chunks, attrs={**self.attrs, **extra_attrs},
                    encoding=dict(self.encoding), zarr_format=self.zarr_format,
                    storage_options=self.storage_options, target_shards=self.target_shards, max_mem=self.max_mem,
                    dynamic_chunking_fn=self.dynamic_chunking_fn,
                    dynamic_chunking_fn_kwargs=dict(self.dynamic_chunking_fn_kwargs),
                    max_pieces_per_task=self.max_pieces_per_task,
                    multistage_threshold=self.multistage_threshold)


@dataclass(frozen=True)
class BakePlan:
    """A planned bake: the store plan, the mode decided for it, and its fingerprint (computed once).

    It travels to the workers as an element, so it holds plain data only (not the spec's functions).
    """

    plan: StorePlan
    mode: Mode
    fingerprint: str | None  # None when there is nothing new to write
    description: Mapping[str, Any] = field(default_factory=dict)  # what the fingerprint is of, as recorded
    owner: str = ""  # the lease owner, who releases the lease once the store is published
    progress_dir: str | None = None

    def __reduce__(self) -> tuple:
        # Compressed: the plan is a side input, kept by the runner and decoded by every bundle that reads it.
        return compressed_reduce(self, self.__dict__)

    @property
    def url(self) -> str:
        return self.plan.url

    @property
    def resumes(self) -> bool:
        return self.mode in (Mode.RESUME, Mode.RESUME_APPEND)


# One StoreState per store (and storage options) per process: a cache, not configuration.
_STATES: dict[tuple[str, str, int], StoreState] = {}


def store_state(url: str, storage_options: Mapping[str, Any] | None = None) -> StoreState:
    """The one :class:`~arcoforge.io.state.StoreState` of a store in this process (per storage options)."""
    key = (url.rstrip("/"), json.dumps(storage_options or {}, sort_keys=True, default=repr), os.getpid())
    state = _STATES.get(key)
    if state is None:
        if len(_STATES) >= 64:  # many stores in one long-lived process: start over rather than grow
            _STATES.clear()
        state = _STATES[key] = StoreState(url, storage_options)
    return state


def read_schema(element: tuple[Index, xr.Dataset], spec: StoreSpec) -> InputSchema:
    """The schema of one opened input (large attributes dropped), checked to be storable."""
    index, ds = element
    check_storable(ds, index)  # here rather than on opening, so that a Preprocess may drop what cannot be stored
    schema = drop_large_attrs(input_schema(ds, index, spec.concat_dims), spec.max_attr_bytes)
    record_event(spec.progress_dir, "input", index=repr(index))
    return schema


def keep_variables(element: tuple[Index, xr.Dataset], spec: StoreSpec) -> tuple[Index, Sealed[LazyInput]]:
    """What :func:`cut_pieces` needs of an opened input, known before the plan: the variables it may write.

    Left out: the concat dimensions' coordinates (written with the template)
    and variables not spanning a concat dimension along which the input is not
    the first (written from the first input only; see ``writes_variable``).

    Sealed: kept as objects, a batch's inputs waiting to be spilled held their
    files open (up to xarray's 128, ~0.6 MB each in netCDF-C and HDF5), and so
    did the last batch, which Beam keeps after the step, until the worker's
    first write task. Sealed, an input's file closes once its Dataset is let go.
    """
    index, ds = element
    concat = spec.concat_dims
    # A dimension the index lacks keeps everything: the plan reports that mismatch.
    later = {dim for dim in concat if index.find_concat_dim(dim) is not None and index.find_position(dim).value}
    keep = [str(name) for name, variable in ds.variables.items()
            if not (name in concat and variable.dims == (name,)) and not (later - set(variable.dims))]
    return index, Sealed.of(lazy_input(ds, keep))


def plan_with_lease(spec: StoreSpec, input_schemas: SchemaPool | Iterable[InputSchema]) -> BakePlan:
    """Take the store's lease (renewed by a heartbeat until released), then :func:`plan_bake`."""
    state = store_state(spec.url, spec.storage_options)
    lease = state.lease()
    try:
        lease.acquire(spec.owner, spec.lease_ttl, spec.break_lease)
    except BaseException:
        remove_spills(spec.url, spec.owner, spec.storage_options, stale_seconds=float("inf"))
        raise
    if lease.taken:  # not held by who runs the pipeline (the CLI): renewed here until released
        LeaseKeeper([lease], spec.owner, spec.lease_ttl).start()
    try:
        return plan_bake(spec, input_schemas, state)
    except BaseException:
        remove_spills(spec.url, spec.owner, spec.storage_options)  # nothing of the store was written
        state.release_lease(spec.owner)  # the store is free again
        raise


def plan_bake(spec: StoreSpec, input_schemas: SchemaPool | Iterable[InputSchema],
              state: StoreState | None = None) -> BakePlan:
    """Combine and check the inputs, plan the store, and decide the bake's :class:`Mode` from its state.

    The inputs are a :class:`~arcoforge.schema_pool.SchemaPool` (read by column, never
    one schema object per input) or any iterable of schemas. An append a crash
    interrupted after its commit point is finished here; one interrupted before
    it is resumed if this plan is the same, else rolled back.
    """
    input_schemas = SchemaPool.of(input_schemas)
    state = state or store_state(spec.url, spec.storage_options)
    url, append_dim, combine_dims = spec.url, spec.append_dim, list(spec.combine_dims)
    nitems = nitems_per_file(combine_dims)
    journal = append_txn.recover(state) if append_dim else None
    unfinished = None
    try:
        existing = read_existing(url, append_dim, spec.storage_options, state) if append_dim else None
    except UnfinishedStoreError as error:  # resumed below if this is that same bake
        existing, unfinished = None, error
    # An append checks only its new inputs here; extend_schema checks that they continue the store.
    fresh = inputs_to_append(input_schemas, existing) if existing is not None else input_schemas
    check_inputs(fresh, combine_dims, dict(spec.encoding))
    if existing is not None and not len(fresh):
        if journal is not None:
            append_txn.roll_back(state, journal, spec.storage_options)
        logger.info("nothing to append to %s: it holds all %d inputs", url, len(input_schemas))
        schema = combine_schemas(input_schemas, combine_dims, nitems)
        plan = StorePlan(url, schema, {}, {}, {}, storage_options=spec.storage_options, append_dim=append_dim,
                         nothing_new=True)
        return BakePlan(plan, Mode.NOTHING_NEW, None, owner=spec.owner, progress_dir=spec.progress_dir)
    if existing is not None:
        first = {append_dim: int(fresh.positions(append_dim).min())}
        schema = extend_schema(existing, combine_schemas(fresh, combine_dims, nitems, first_positions=first))
        logger.info("appending %d inputs to %s along %r (%d -> %d)", len(fresh), url, append_dim,
                    existing.length, schema.dims[append_dim])
    else:
        schema = combine_schemas(input_schemas, combine_dims, nitems)
    record = {**provenance(n_inputs=schema.n_inputs), **spec.provenance}
    plan = plan_store(schema, url, **spec.plan_kwargs(provenance_attrs(record)), append_to=existing)
    plan = with_documents(plan, existing)
    description = plan_description(plan)
    print_ = fingerprint(description)
    mode, plan = _decide(state, plan, print_, existing is not None, journal, unfinished)
    extra_tasks, extra_bytes = stage_one_work(plan)  # (0, 0) unless staged
    record_event(spec.progress_dir, "plan", store=url, n_inputs=plan.schema.n_inputs,
                 n_tasks=plan.n_tasks - len(plan.done) + extra_tasks, nbytes=plan.nbytes + extra_bytes)
    checkpoint("append.plan" if existing is not None else "bake.plan")
    # Kept as plan.json records it: in full it listed every input's length for each process that decodes the plan.
    return BakePlan(plan, mode, print_, recorded_description(description), owner=spec.owner,
                    progress_dir=spec.progress_dir)


def _decide(state: StoreState, plan: StorePlan, print_: str, appending: bool, journal: Mapping | None,
            unfinished: UnfinishedStoreError | None) -> tuple[Mode, StorePlan]:
    """The mode of a planned bake from what the store's state records, and the plan with the tasks done."""
    recorded = state.plan_fingerprint()
    if unfinished is not None and recorded != print_:
        raise unfinished
    if journal is not None:
        if journal["fingerprint"] == print_:  # the same append: resume it
            done = frozenset(state.done_tasks())
            logger.info("resuming the append to %s: %d of %d write tasks already done", plan.url, len(done),
                        plan.n_tasks)
            return Mode.RESUME_APPEND, dataclasses.replace(plan, resume=True, done=done)
        append_txn.roll_back(state, journal, plan.storage_options)
        return (Mode.APPEND if appending else Mode.FRESH), plan
    if appending:
        return Mode.APPEND, plan
    if recorded != print_:
        return Mode.FRESH, plan
    complete = state.is_complete(print_)
    done = frozenset(task_id(group, task) for group, grid in plan.grids.items() for task in grid) \
        if complete else frozenset(state.done_tasks())
    logger.info("resuming %s: %d of %d write tasks already done%s", plan.url, len(done), plan.n_tasks,
                " (complete)" if complete else "")
    return Mode.RESUME, dataclasses.replace(plan, resume=True, done=done)


def prepare_store(bake: BakePlan) -> str:
    """Write the template of a fresh bake, or the journal of an append; a resumption finds them there."""
    plan = bake.plan
    if bake.mode in (Mode.NOTHING_NEW, Mode.RESUME, Mode.RESUME_APPEND):
        return plan.url
    state = store_state(plan.url, plan.storage_options)
    recorded = bake.description
    if bake.mode is Mode.APPEND:
        append_txn.begin(state, plan, bake.fingerprint)
        state.write_json("plan.json", {"fingerprint": bake.fingerprint, "plan": recorded})
        return plan.url
    state.remove("plan.json")  # an attempt killed while the template is written starts over
    write_template(plan.url, render_plan(plan), plan.storage_options)
    prepare_intermediate(plan)  # before plan.json: a rerun resuming a staged bake finds it
    checkpoint("bake.template")
    state.start(bake.fingerprint, recorded, plan.documents)
    checkpoint("bake.recorded")
    return plan.url


# The cutting of the plan a worker holds (its side input), by the plan's identity: a cache, not configuration.
# It refers to the plan weakly: each bundle decodes its own copy of the side input, and a copy
# kept here after its bundle would hold the plan's per-input offsets for nothing.
_CUTTING: dict[int, tuple[weakref.ref, dict[str, Any], frozenset[str]]] = {}


def cutting_of(plan: StorePlan) -> tuple[dict[str, Any], frozenset[str]]:
    """What cutting each input needs of ``plan``, worked out once per plan rather than once per input:
    the grids inputs are cut by, and the staged groups whose stage 1 still has work."""
    hit = _CUTTING.get(id(plan))
    if hit is None or hit[0]() is not plan:
        for key in [key for key, (ref, _, _) in _CUTTING.items() if ref() is None]:
            del _CUTTING[key]
        pending = frozenset(group for group in plan.stages if stage_one_needed(plan, group))
        hit = _CUTTING[id(plan)] = (weakref.ref(plan), cutting_grids(plan), pending)
    return hit[1], hit[2]


def cut_pieces(element: tuple[Index, xr.Dataset | LazyInput], bake: BakePlan) -> Iterator[tuple[tuple, Any]]:
    """The pieces of one input, keyed by the write task they belong to (tasks already done left out).

    The input is its opened Dataset, or what :func:`keep_variables` kept of it.
    Only ``bake.plan`` is read, so an Icechunk bake's plan cuts the same way.
    """
    index, ds = element
    plan = bake.plan
    schema = plan.schema
    grids, staged_pending = cutting_of(plan)
    groups = {group: names for group, names in plan.groups.items() if schema.writes_variable(index, group)
              and (group not in plan.stages or group in staged_pending)}
    if groups:  # else an input the store holds already, or one contributing nothing
        dims_of = {name: schema.variables[name].dims for names in groups.values() for name in names}
        for key, piece in input_pieces(index, ds, groups, dims_of, schema.input_offsets(index), grids):
            if key[0] in plan.stages:  # a staged group's inputs go to its stage-1 tasks
                key = stage_one_key(*key)
            if not plan.done or task_id(*key) not in plan.done:  # done by an earlier attempt
                yield key, piece


def for_workers(bake: BakePlan) -> BakePlan:
    """The plan as cutting and write tasks need it: without the inputs' URLs (held three times in a plan).

    Every worker holds the plan it is given (a side input), once per step that
    reads it; the URLs are for the records written when the store is prepared and
    published, which get the whole plan.
    """
    return dataclasses.replace(bake, plan=plan_for_workers(bake.plan), description={})


def plan_for_workers(plan: StorePlan) -> StorePlan:
    """A store plan without its inputs' URLs nor its concat coordinates' values (see :func:`for_workers`).

    The coordinates are written with the template (or the append journal); cutting only
    asks whether a variable is one, so each keeps its name and dtype, with no values.
    """
    coords = {dim: values[:0].copy() for dim, values in plan.schema.concat_coords.items()}
    return dataclasses.replace(plan, schema=dataclasses.replace(plan.schema, urls=(), concat_coords=coords),
                               ingested=())


def spill_inputs(batch: list[tuple[Index, Sealed[LazyInput]]], spec: StoreSpec) -> SpillRef:
    """Keep a batch of inputs (what :func:`keep_variables` kept) in the spill until the plan is known."""
    return spec.spill.put(batch)


def cut_spilled(ref: SpillRef, bake: BakePlan, spec: StoreSpec) -> list[tuple[tuple, SpillRef]]:
    """Cut a spilled batch of inputs into pieces, spilled as one section per write task; ``(task, section)``."""
    by_task: dict[tuple, list] = {}
    spill = spec.spill
    for index, kept in spill.get(ref):
        for key, piece in cut_pieces((index, opened(kept)), bake):
            by_task.setdefault(key, []).append(piece)
    return list(spill.put_sections(by_task).items()) if by_task else []


def write_spilled_task(task: tuple[tuple, Iterable[SpillRef]], bake: BakePlan, spec: StoreSpec) -> tuple[int, int]:
    """Write a task whose pieces are in spilled sections; returns the bytes written and the pieces read."""
    key, refs = task
    pieces = spec.spill.objects(refs)  # read section by section, once per variable: not all held at once
    return write_task((key, pieces), bake), len(pieces)


def write_task(task: tuple[tuple, Iterable[Any]], bake: BakePlan) -> int:
    """Assemble and write one write task's regions, then mark it done; returns the bytes written."""
    limit_netcdf_chunk_cache()  # the pieces re-open their inputs in this process
    plan = bake.plan
    key, pieces = task
    staged = is_stage_one(key)  # stage 1 of a staged group: into the intermediate, decoded values as they are
    group = key[0][len(STAGE_ONE):] if staged else key[0]
    grid = cutting_of(plan)[0][group] if staged else plan.grids[group]
    variables = {name: plan.schema.variables[name] for name in plan.groups[group]}
    dtypes = {name: variable.dtype for name, variable in variables.items()}
    nbytes = 0
    for name, region, values in assemble_task((group, key[1]), pieces, grid, dtypes, worker_task_buffer()):
        if staged:
            write_stage_one(name, region, values, plan)
        else:
            write_region(plan, name, region, values)
        nbytes += values.nbytes
        del values
        release_freed_memory()
    store_state(plan.url, plan.storage_options).mark_done(task_id(*key))
    checkpoint("bake.stage1" if staged else "append.task" if plan.append_dim else "bake.task")
    record_event(bake.progress_dir, "task", store=plan.url, variables=sorted(variables), nbytes=nbytes)
    return nbytes


def stage_two_keys(bake: BakePlan) -> list[tuple[str, tuple[int, ...]]]:
    """The write tasks of staged groups still to write; asked for once every stage-1 task is written."""
    return list(stage_two_tasks(bake.plan))


def write_stage_two(key: tuple[str, tuple[int, ...]], bake: BakePlan) -> int:
    """Write one task of a staged group from the intermediate, as a one-pass task is written."""
    return write_task((key, stage_two_pieces(key, bake.plan)), bake)


def finalize(total: int, bake: BakePlan) -> str:
    """Publish the store (or commit the append), then release the lease; returns the store's URL."""
    plan, owner = bake.plan, bake.owner
    state = store_state(plan.url, plan.storage_options)
    if bake.mode is not Mode.NOTHING_NEW:
        if bake.resumes:  # writers of the killed attempt may have died mid-write
            state.remove_abandoned_writes()
        if plan.append_dim:
            append_txn.finish(state, plan, state.read_json(append_txn.JOURNAL))
        else:
            publish_bake(state, plan, bake.fingerprint)
        state.remove(INTERMEDIATE)  # a staged bake's intermediate (gone already, or never there: nothing)
    remove_spills(plan.url, owner, plan.storage_options)
    state.release_lease(owner)
    logger.debug("finalized %s (%s, %d bytes written)", plan.url, bake.mode.value, total)
    return plan.url
