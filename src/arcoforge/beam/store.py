"""StoreToZarr: the bake core (:mod:`arcoforge.core.bake`) wired into a pipeline by small named steps.

``Read input schemas`` -> ``Plan store`` (the lease, the mode) -> ``Write template``;
the inputs -> ``Cut inputs into pieces`` -> ``Group by write task`` -> ``Write tasks``
(after the template) -> ``Stage two`` (a two-stage plan's tasks from its intermediate, once
the others are written; none otherwise) -> ``Count bytes`` -> ``Consolidate`` (publish,
release the lease).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from ..chunking import parse_size
from ..compressed_pickle import Sealed, opened
from ..core.options import construction_problems, raise_problems, store_option_problems
from ..core.bake import (BakePlan, StoreSpec, cut_spilled, finalize, for_workers, keep_variables, plan_with_lease,
                         prepare_store, read_schema, spill_inputs, stage_two_keys, write_spilled_task,
                         write_stage_two)
from ..errors import RecipeError, SchemaError
from ..input_checks import DEFAULT_MAX_ATTR_BYTES
from ..io.lease import DEFAULT_TTL
from ..io.zarr_store import chunk_dimension_coordinates_like_data
from ..patterns import Dimension, Index, check_combine_dims
from ..multistage import DEFAULT_THRESHOLD
from ..rechunk import MAX_PIECES_PER_TASK
from ..runtime.context import BakeContext, RequiredAtRuntimeDefault, resolve_context
from ..runtime.memory import local_data_budget, one_off_allocations
from ..schema_pool import PoolInParts
from ..io.spill import SpillRef
from ..io.state import new_owner
from ..store_plan import DEFAULT_MAX_MEM, store_url
from .common import count


# Inputs wait for the plan in spilled batches of this many (within a bundle): the runner
# handles one small reference per batch, and the shuffle one per (batch, write task).
INPUTS_PER_BATCH = 256


def _coordinates_like_data(url: str, storage_options: dict | None) -> str:
    chunk_dimension_coordinates_like_data(url, storage_options)
    return url


def _read_and_count(element: tuple[Index, Any], spec: StoreSpec) -> Any:
    schema = read_schema(element, spec)
    count("inputs_read")
    return schema


class CombineSchemas(beam.CombineFn):
    """Input schemas into one :class:`~arcoforge.schema_pool.PoolInParts`, as they come (structures kept once).

    A worker holds its accumulator while it reads its inputs: sealed parts of a
    few thousand inputs (~10 B an input) rather than one open pool (~90 B).
    Accumulators cross the shuffle, and the combined parts leave,
    :class:`~arcoforge.compressed_pickle.Sealed`: a worker keeps the last element
    a step with arguments was given, and what it keeps is then compressed. The
    parts are opened into one pool only where the bake is planned.
    """

    def create_accumulator(self) -> PoolInParts:
        return PoolInParts()

    def add_input(self, parts: PoolInParts | Sealed[PoolInParts], schema: Any) -> PoolInParts:
        return opened(parts).add(schema)

    def compact(self, parts: PoolInParts | Sealed[PoolInParts]) -> Sealed[PoolInParts]:
        return parts if isinstance(parts, Sealed) else Sealed.of(parts)

    def merge_accumulators(self, accumulators: Any) -> PoolInParts:
        accumulators = iter(accumulators)
        return (opened(next(accumulators, None)) or PoolInParts()).join(accumulators)

    def extract_output(self, parts: PoolInParts | Sealed[PoolInParts]) -> Sealed[PoolInParts]:
        return self.compact(opened(parts).join(()))


def _plan(parts: Sealed[PoolInParts], spec: StoreSpec) -> Sealed[BakePlan]:
    """The plan, sealed: the steps it passes to keep their last element (see CombineSchemas), and
    planning's memory is handed back to the OS, not kept in this worker's heap through its writes."""
    with one_off_allocations():
        return Sealed.of(plan_with_lease(spec, opened(parts).whole()))


def _prepare(bake: Sealed[BakePlan]) -> str:
    with one_off_allocations():
        return prepare_store(opened(bake))


def _plan_for_workers(bake: Sealed[BakePlan]) -> BakePlan:
    with one_off_allocations():
        return for_workers(opened(bake))


def _finalize(total: int, bake: Sealed[BakePlan]) -> str:
    with one_off_allocations():
        return finalize(total, opened(bake))


def _cut_and_count(batch: SpillRef, bake: BakePlan, spec: StoreSpec) -> list[tuple[tuple, SpillRef]]:
    """A spilled batch of inputs' pieces, spilled again as one section per write task they touch.

    What crosses the shuffle is then one reference per (batch, task), not the
    pieces: Beam's local runner holds and decodes every element it groups. The
    counters let a run check that every input and piece got through.
    """
    sections = cut_spilled(batch, bake, spec)
    count("inputs_cut", batch.count)
    count("pieces_cut", sum(ref.count for _, ref in sections))
    return sections


def _write_and_count(task: tuple, bake: BakePlan, template_url: str, spec: StoreSpec) -> int:
    """Write one task (``template_url``, a side input, only orders it after the template)."""
    nbytes, pieces = write_spilled_task(task, bake, spec)
    count("pieces_written", pieces)
    count("tasks_written")
    count("bytes_written", nbytes)
    return nbytes


def _some_inputs(count: int) -> int:
    if not count:
        raise SchemaError("the pattern produced no inputs")
    return count


@dataclass
class ReadSchemas(beam.PTransform):
    """The schema of every input, combined as they come into compact :class:`~arcoforge.schema_pool.PoolInParts`
    (sealed: :class:`CombineSchemas`).

    Without Beam's default for no inputs: that default passes the combined pool
    through a side input, one more copy in the runner and one more decoding in
    the worker that plans. No inputs is refused by a count of its own.
    """

    spec: StoreSpec

    def expand(self, datasets: beam.PCollection) -> beam.PCollection:
        _ = (datasets
             | "Count inputs" >> beam.combiners.Count.Globally()
             | "Refuse no inputs" >> beam.Map(_some_inputs))
        return (datasets
                | "Read input schema" >> beam.Map(_read_and_count, spec=self.spec)
                | "Collect schemas" >> beam.CombineGlobally(CombineSchemas()).without_defaults())


@dataclass
class PlanBake(beam.PTransform):
    """Take the store's lease and plan the bake (see :func:`~arcoforge.core.bake.plan_bake`)."""

    spec: StoreSpec

    def expand(self, schemas: beam.PCollection) -> beam.PCollection:
        return schemas | "Plan" >> beam.Map(_plan, spec=self.spec)


class PrepareStore(beam.PTransform):
    """Write the template (or the append journal); outputs the store's URL once it is there."""

    def expand(self, plan: beam.PCollection) -> beam.PCollection:
        return plan | "Prepare" >> beam.Map(_prepare)


@dataclass
class SpillInputs(beam.PTransform):
    """What each opened input will write, spilled in batches until the plan is known; outputs the references."""

    spec: StoreSpec

    def expand(self, datasets: beam.PCollection) -> beam.PCollection:
        return (datasets
                | "Keep lazy variables" >> beam.Map(keep_variables, spec=self.spec)
                | "Batch inputs" >> beam.BatchElements(min_batch_size=INPUTS_PER_BATCH,
                                                       max_batch_size=INPUTS_PER_BATCH)
                | "Spill" >> beam.Map(spill_inputs, spec=self.spec))


@dataclass
class CutPieces(beam.PTransform):
    """Each spilled batch of inputs cut into pieces, spilled per write task; keyed by the task."""

    plan: Any  # the planned bake, as a singleton side input
    spec: StoreSpec

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Cut" >> beam.FlatMap(_cut_and_count, bake=self.plan, spec=self.spec)


def spilled_tasks(datasets: beam.PCollection, plan: Any, spec: StoreSpec) -> beam.PCollection:
    """The opened inputs as write tasks: ``(task, [SpillRef, ...])``, the references to the task's pieces.

    Keep, batch and spill the inputs (fused with opening), cut each spilled batch
    once ``plan`` (a singleton side input) is known and group the sections by
    task: what waits in the runner and crosses the shuffle are references, not
    Datasets or pieces. StoreToZarr and StoreToIcechunk apply these steps in
    their own scope (a helper rather than a PTransform keeps the step names,
    such as ``StoreToZarr/Group by write task``, as they were).
    """
    return (datasets
            | "Spill inputs" >> SpillInputs(spec)
            | "Cut inputs into pieces" >> CutPieces(plan, spec)
            | "Group by write task" >> beam.GroupByKey())


@dataclass
class WriteTasks(beam.PTransform):
    """Write every task's regions, once the template is written; outputs the bytes each wrote."""

    plan: Any  # the planned bake, as a singleton side input
    template: Any  # the store's URL once prepared, as a singleton side input
    spec: StoreSpec

    def expand(self, tasks: beam.PCollection) -> beam.PCollection:
        return tasks | "Write" >> beam.Map(_write_and_count, bake=self.plan, template_url=self.template,
                                           spec=self.spec)


def _stage_two_keyed(_written: int, bake: BakePlan) -> list[tuple[tuple, None]]:
    return [(key, None) for key in stage_two_keys(bake)]


def _stage_two_and_count(element: tuple, bake: BakePlan) -> int:
    nbytes = write_stage_two(element[0], bake)
    count("tasks_written")
    count("bytes_written", nbytes)
    return nbytes


@dataclass
class StageTwo(beam.PTransform):
    """Once every stage-1 task is written, write the tasks of staged groups from the intermediate (or none)."""

    plan: Any  # the planned bake, as a singleton side input

    def expand(self, written: beam.PCollection) -> beam.PCollection:
        return (written
                | "Stage one written" >> beam.CombineGlobally(sum)
                | "Stage two tasks" >> beam.FlatMap(_stage_two_keyed, bake=self.plan)
                | "Spread stage two" >> beam.GroupByKey()
                | "Write stage two" >> beam.Map(_stage_two_and_count, bake=self.plan))


@dataclass
class Finalize(beam.PTransform):
    """Publish the store once every task is written, and release its lease; outputs its URL."""

    plan: Any  # the planned bake, as a singleton side input

    def expand(self, total: beam.PCollection) -> beam.PCollection:
        return total | "Publish" >> beam.Map(_finalize, bake=self.plan)


@dataclass
class StoreToZarr(beam.PTransform):
    """Combine ``(index, Dataset)`` inputs into one Zarr store, rechunked on the way.

    The inputs' schemas are combined and checked before anything is written;
    ``combine_dims`` is ``pattern.combine_dim_keys``. ``target_root`` defaults to
    the bake context's (``arcoforge bake --target-root``). ``target_chunks``
    maps dimensions to a length or a byte size (``"100MB"``), or is one byte size
    for all; ``dynamic_chunking_fn(template_ds, **kwargs)`` may compute them
    instead. ``target_shards`` (Zarr v3) groups chunks into shards, each written
    whole by one worker. ``max_mem`` bounds the array data a bake holds at once
    (split between local worker processes; per worker on distributed runners):
    the recipe's value, else the bake context's (``arcoforge bake --max-mem``),
    else 1GB. ``zarr_format`` is 3 by default; 2 on request. 1-D dimension
    coordinates are stored in one chunk (what pangeo-forge recipes get from
    ``ConsolidateDimensionCoordinates``); ``consolidate_dimension_coordinates=False``
    chunks them like the data instead, as 0.10's StoreToZarr alone does.

    Readers find no store at the URL until it is complete (its root metadata is
    published last). A bake killed and run again resumes: write tasks done
    before are skipped. While a bake runs it holds a lease on the store, renewed
    every few seconds; another bake of the same store fails clearly unless the
    holder's heartbeat is ``lease_ttl`` seconds old (default 60), its process on
    this host is gone, or ``break_lease`` (see :mod:`arcoforge.io.lease`).

    With ``append_dim`` (or ``arcoforge bake --append``), inputs the complete
    store does not hold yet are appended along that dimension, after checks
    that they continue it (see :mod:`arcoforge.append`); a store that does not
    exist yet is baked whole. Appending what the store holds already does nothing.

    Inputs are checked against each other before anything is written (see
    :mod:`arcoforge.input_checks`): lengths against the pattern's
    ``nitems_per_file``, time-like concat coordinates strictly increasing, one
    dtype per variable. Attributes over ``max_attr_bytes`` are dropped.

    A write task gathers the pieces of at most about ``max_pieces_per_task``
    inputs, so a variable of many small inputs is written by many workers.
    Where the write tasks would inflate each input more than
    ``multistage_threshold`` times (a time-series layout of one-step inputs),
    the variable is rechunked in two stages through an intermediate array in
    the store's hidden state folder (see :mod:`arcoforge.multistage`); ``None``
    never does.
    """

    combine_dims: list[Dimension]
    store_name: str
    target_root: str | RequiredAtRuntimeDefault | None = field(default_factory=RequiredAtRuntimeDefault)
    target_chunks: dict[str, int | str] | str = field(default_factory=dict)
    dynamic_chunking_fn: Callable[..., dict[str, int]] | None = None
    dynamic_chunking_fn_kwargs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    encoding: dict[str, dict[str, Any]] = field(default_factory=dict)
    append_dim: str | None = None  # here, after encoding, as in pangeo-forge-recipes 0.10
    zarr_format: int = 3
    target_shards: dict[str, int] | None = None
    max_mem: int | str | None = None  # None: the bake context's, else DEFAULT_MAX_MEM
    storage_options: dict | None = None
    lease_ttl: float | None = None
    break_lease: bool = False
    max_attr_bytes: int | None = DEFAULT_MAX_ATTR_BYTES
    max_pieces_per_task: int = MAX_PIECES_PER_TASK
    multistage_threshold: float | None = DEFAULT_THRESHOLD  # None: never rechunk in two stages
    consolidate_dimension_coordinates: bool = True  # False: 0.10's coordinate chunks without that step
    license: str | None = None  # the STAC collection's licence (SPDX id or URL), for `arcoforge bake`
    quicklook_variable: str | None = None  # the variable of the collection's quicklook (default: the largest)
    context: BakeContext | None = None

    def __post_init__(self) -> None:
        self.combine_dims = check_combine_dims(self.combine_dims, self.where)
        raise_problems(self.where, construction_problems(**self._options(sizes=False)))

    @property
    def where(self) -> str:
        return f"StoreToZarr({self.store_name!r})"

    def _options(self, sizes: bool = True) -> dict[str, Any]:
        """The options :mod:`arcoforge.core.options` checks (and ``lint`` too)."""
        options = dict(store_name=self.store_name, combine_dims=self.combine_dims, target_chunks=self.target_chunks,
                       zarr_format=self.zarr_format, dynamic_chunking_fn=self.dynamic_chunking_fn,
                       append_dim=self.append_dim, encoding=self.encoding)
        return {**options, "target_shards": self.target_shards, "max_mem": self.max_mem,
                "multistage_threshold": self.multistage_threshold} if sizes else options

    def option_problems(self) -> list[str]:
        """Every problem of this step's options, as ``lint`` reports them and a build raises them."""
        return store_option_problems(**self._options())

    def _url(self, context: BakeContext | None = None) -> str:
        root = resolve_context(context or self.context).choose("target_root", self.target_root)
        if not root:
            raise RecipeError(
                f"{self.where} has no target_root: pass target_root=..., "
                "or run the recipe with `arcoforge bake --target-root URL`"
            )
        return store_url(str(root), self.store_name)

    def spec(self, context: BakeContext) -> StoreSpec:
        """Everything this step resolves when the pipeline is built: the recipe's values win over the context's."""
        raise_problems(self.where, self.option_problems())
        concat_dims = [d.name for d in self.combine_dims if d.operation.name == "CONCAT"]
        append_dim = self.append_dim or (concat_dims[0] if context.append and len(concat_dims) == 1 else None)
        if context.append and not append_dim:
            raise RecipeError(f"{self.where}: --append needs append_dim, or one concat dim")
        max_mem = context.choose("max_mem", self.max_mem, DEFAULT_MAX_MEM)
        return StoreSpec(
            url=self._url(context), combine_dims=tuple(self.combine_dims), target_chunks=self.target_chunks,
            attrs=dict(self.attrs), encoding=dict(self.encoding), zarr_format=self.zarr_format,
            target_shards=self.target_shards, dynamic_chunking_fn=self.dynamic_chunking_fn,
            dynamic_chunking_fn_kwargs=dict(self.dynamic_chunking_fn_kwargs),
            # A local bake shares one machine's memory between its worker processes.
            max_mem=local_data_budget(parse_size(max_mem, "max_mem"), context.num_workers),
            # An FSSpecTarget as target_root brings the options of its filesystem.
            storage_options=context.choose("storage_options", self.storage_options
                                           or getattr(self.target_root, "fsspec_kwargs", None) or None),
            owner=context.owner or new_owner(), lease_ttl=float(context.choose("lease_ttl", self.lease_ttl, DEFAULT_TTL)),
            break_lease=self.break_lease or context.break_lease, append_dim=append_dim,
            progress_dir=context.progress_dir, provenance=dict(context.provenance or {}),
            max_attr_bytes=self.max_attr_bytes, max_pieces_per_task=self.max_pieces_per_task,
            multistage_threshold=self.multistage_threshold,
        )

    def expand(self, datasets: beam.PCollection) -> beam.PCollection:
        spec = self.spec(resolve_context(self.context))
        plan = (datasets
                | "Read input schemas" >> ReadSchemas(spec)
                | "Plan store" >> PlanBake(spec))
        plan_view = beam.pvalue.AsSingleton(plan | "Plan for workers" >> beam.Map(_plan_for_workers))
        template = plan | "Write template" >> PrepareStore()
        # Spilled as they are opened, like reading schemas: opened inputs never wait in the runner for the plan.
        written = (spilled_tasks(datasets, plan_view, spec)
                   | "Write tasks" >> WriteTasks(plan_view, beam.pvalue.AsSingleton(template), spec))
        # A plan staged in two steps (arcoforge.multistage): the tasks above were stage 1's.
        second = written | "Stage two" >> StageTwo(plan_view)
        stored = (
            (written, second)
            | "Both stages" >> beam.Flatten()
            | "Count bytes" >> beam.CombineGlobally(sum)
            | "Consolidate" >> Finalize(beam.pvalue.AsSingleton(plan))
        )
        if self.consolidate_dimension_coordinates:
            return stored
        return stored | "Chunk coordinates like data" >> beam.Map(_coordinates_like_data, spec.storage_options)
