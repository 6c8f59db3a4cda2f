"""Beam PTransforms: thin wiring around the plain functions of the other modules.

A recipe is a chain of these, applied to ``beam.Create(pattern.items())``::

    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name="sst.zarr", combine_dims=pattern.combine_dim_keys)
    )

The element type between transforms is ``(Index, value)``: the index says where
an input sits in the pattern, the value is its URL, opened source or Dataset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import xarray as xr
from apache_beam.metrics import Metrics

from .features import check_storable
from .errors import ArcoforgeError, InputError, RecipeError, describe_input
from .openers import open_with_xarray, prepare_input, resolve_cache
from .skipping import (
    SkippedInput,
    check_on_error,
    gap_layout,
    outline,
    placeholder_dataset,
    report_skipped,
    skipped_inputs_attrs,
)
from .io import InputCache, RetryPolicy, concurrency_slots, with_deadline, public_url as public_name, redact, register_secrets, secret_values
from .patterns import Dimension, FileType, Index, check_combine_dims, nitems_per_file
from .zarr_encoding import check_encoding
from .input_checks import DEFAULT_MAX_ATTR_BYTES, check_inputs, drop_large_attrs
from .chunking import parse_size
from .rechunk import assemble_task, input_pieces
from .runtime.memory import limit_netcdf_chunk_cache, local_data_budget, release_freed_memory, worker_task_buffer
from .runtime.progress import record_event
from .runtime.context import current_context as runtime_defaults
from .schema import combine_schemas, input_schema
from .stac import link_collection, provenance, provenance_attrs, write_store_collection
from . import append_txn
from .append import UnfinishedStoreError, extend_schema, inputs_to_append, read_existing
from .faults import checkpoint
from .io.lease import DEFAULT_TTL, LeaseKeeper
from .io.state import StoreState, fingerprint, new_owner, task_id
from .io.zarr_store import (
    consolidate_dimension_coordinates,
    consolidate_metadata,
    publish_bake,
    with_documents,
    write_region,
    write_template,
)
from .store_plan import DEFAULT_MAX_MEM, StorePlan, plan_description, plan_store, store_url
from .store_template import render_plan

logger = logging.getLogger(__name__)
NAMESPACE = "arcoforge"


def _store_url_of(element: Any) -> str:
    return element.url if isinstance(element, StorePlan) else str(element)


def _prepare_or_skip(element: tuple[Index, str], settings: dict[str, Any], skip: bool,
                     progress_dir: str | None) -> tuple[Index, Any]:
    """Fetch one input (see :func:`~arcoforge.openers.prepare_input`); with ``skip``, a failure is a record."""
    index, url = element
    Metrics.counter(NAMESPACE, "inputs_found").inc()
    try:
        return index, prepare_input(url, index, **settings)
    except InputError as error:
        if not skip:
            raise
        record = SkippedInput(index, public_name(url), redact(str(error)), stage="fetch")
        report_skipped(record, progress_dir)
        Metrics.counter(NAMESPACE, "inputs_skipped").inc()
        return index, record


def _open_slot(index: Index, slots: int) -> int:
    """Which of ``slots`` sequential lanes an input is fetched in (stable across processes)."""
    return zlib.crc32(repr(index.sort_key()).encode()) % slots


def _merge_key(index: Index) -> tuple:
    return tuple(p.value for d, p in sorted(index.items()) if d.operation.name == "MERGE")


def _earliest(items: Any) -> Any:
    return min(items, key=lambda item: item[0].sort_key())


@dataclass
class OpenURLWithFSSpec(beam.PTransform):
    """Turn each ``(index, url)`` into ``(index, source)`` that OpenWithXarray reads.

    Remote inputs (``http(s)://``, ``s3://``, any fsspec URL) and compressed ones
    (``.nc.gz``) are fetched once into a cache, checked (size, checksum, not an
    HTML page) and retried on transient failures; local files pass as paths.
    Defaults not given here come from the runner (``arcoforge bake`` options).

    ``cache``: a folder (path or URL) every worker can read, an
    :class:`~arcoforge.io.InputCache`, ``None`` for the runner's
    ``--cache-root`` or else a folder of this machine's own, or ``False`` to read
    remote inputs over the network while they are used. ``secrets`` are added to
    each URL's query string; ``open_kwargs`` (a pattern's ``fsspec_open_kwargs``)
    are filesystem options and ``compression``. ``max_concurrency`` caps the inputs
    fetched at once, over all workers. ``retries`` is a number of tries or a
    :class:`~arcoforge.io.RetryPolicy`. ``on_error="skip"`` goes on without
    inputs that fail (see :mod:`arcoforge.skipping`).
    """

    cache: str | InputCache | bool | None = None
    secrets: dict | None = None
    open_kwargs: dict | None = None
    max_concurrency: int | None = None
    retries: int | RetryPolicy | None = None
    on_error: str | None = None

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        runtime = runtime_defaults()
        # Read here, in the process that builds the pipeline: workers do not share its globals.
        source_options = runtime.source_storage_options
        cache = resolve_cache(self.cache if self.cache is not None else runtime.cache_root, runtime.storage_options)
        max_concurrency = self.max_concurrency or runtime.max_concurrency
        concurrency_slots(max_concurrency)  # checks the value now rather than on a worker
        on_error = check_on_error(self.on_error or runtime.on_error)
        settings = dict(
            cache=cache if cache is not None else False, storage_options=source_options,
            open_kwargs=self.open_kwargs, secrets=self.secrets, max_concurrency=max_concurrency,
            retry=with_deadline(RetryPolicy.of(self.retries if self.retries is not None else runtime.retries),
                                runtime.input_deadline),
        )
        register_secrets(secret_values(source_options, [], (self.secrets or {}).values())
                         | secret_values(self.open_kwargs) | secret_values(runtime.storage_options))
        prepare = dict(settings=settings, skip=on_error == "skip", progress_dir=runtime.progress_dir)
        if max_concurrency:
            sources = (
                pcoll
                | "Assign fetch lanes" >> beam.Map(lambda element: (_open_slot(element[0], max_concurrency), element))
                | "Group by lane" >> beam.GroupByKey()
                | "Open URLs" >> beam.FlatMap(lambda lane: [_prepare_or_skip(e, **prepare) for e in lane[1]])
            )
        else:
            sources = pcoll | "Open URLs" >> beam.Map(_prepare_or_skip, **prepare)
        sources._arcoforge_on_error = on_error  # tells OpenWithXarray to fill the places of skipped inputs
        return sources


@dataclass
class OpenWithXarray(beam.PTransform):
    """Open each ``(index, source)`` as ``(index, xarray.Dataset)``, lazily unless ``load``.

    With ``on_error="skip"`` (here, on OpenURLWithFSSpec, or from the runner) an
    input that fails is replaced by a placeholder of missing values, and every
    dataset records the skipped inputs in its ``arcoforge_skipped_inputs``
    attribute (see :mod:`arcoforge.skipping`). ``nitems_per_file`` (as in
    ``ConcatDim``) tells a skipped input's length when its neighbours cannot.
    """

    file_type: FileType | str = FileType.unknown
    load: bool = False
    copy_to_local: bool = False
    xarray_open_kwargs: dict | None = field(default_factory=dict)
    on_error: str | None = None
    nitems_per_file: dict[str, int | None] | None = None

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        runtime = runtime_defaults()
        upstream = getattr(pcoll, "_arcoforge_on_error", None)
        on_error = check_on_error(self.on_error or (upstream if upstream == "skip" else None) or runtime.on_error)
        skip, progress_dir = on_error == "skip", runtime.progress_dir
        options = dict(file_type=self.file_type, load=self.load, copy_to_local=self.copy_to_local,
                       xarray_open_kwargs=self.xarray_open_kwargs)

        def open_one(index: Index, source: Any) -> tuple[Index, Any]:
            if isinstance(source, SkippedInput):
                if skip:
                    return index, source
                raise InputError(f"{describe_input(index, source.url)}: {source.error}")
            limit_netcdf_chunk_cache()  # before any input is opened in this process (see rechunk)
            try:
                ds = open_with_xarray(source, index=index, **options)
            except InputError as error:
                if not skip:
                    raise
                record = SkippedInput(index, getattr(source, "source_name", None) or str(source),
                                      redact(str(error)), stage="open")
                report_skipped(record, progress_dir)
                Metrics.counter(NAMESPACE, "inputs_skipped").inc()
                return index, record
            Metrics.counter(NAMESPACE, "inputs_opened").inc()
            return index, ds

        opened = pcoll | "Open with xarray" >> beam.MapTuple(open_one)
        if not skip:
            return opened
        nitems_per_file = dict(self.nitems_per_file or {})

        def placeholder(record: SkippedInput, templates: dict, outlines: list, skipped: list) -> tuple[Index, Any]:
            key = _merge_key(record.index)
            if key not in templates:
                raise InputError(f"{describe_input(record.index, record.url)} was to be skipped, but no input "
                                 f"of its merge group {key} could be opened to stand in for its structure")
            layout = gap_layout(record.index, outlines, [r.index for r in skipped], nitems_per_file, record.url)
            logger.info("filling the place of %s with missing values (%s)", describe_input(record.index, record.url),
                        ", ".join(f"{d}={n}" for d, n in layout.lengths.items()))
            return record.index, placeholder_dataset(templates[key][1], record.index, layout, record.url)

        def with_record(element: tuple[Index, xr.Dataset], skipped: list) -> tuple[Index, xr.Dataset]:
            index, ds = element
            ds = ds.copy()
            ds.attrs.update(skipped_inputs_attrs(skipped))
            return index, ds

        good = opened | "Opened" >> beam.Filter(lambda element: not isinstance(element[1], SkippedInput))
        skipped = (opened | "Skipped" >> beam.Filter(lambda element: isinstance(element[1], SkippedInput))
                   | "Skip records" >> beam.Values())
        outlines = good | "Outline inputs" >> beam.MapTuple(outline)
        templates = (good | "Key by merge group" >> beam.MapTuple(lambda i, ds: (_merge_key(i), (i, ds)))
                     | "One input per merge group" >> beam.CombinePerKey(_earliest))
        placeholders = skipped | "Placeholders" >> beam.Map(
            placeholder, templates=beam.pvalue.AsDict(templates), outlines=beam.pvalue.AsList(outlines),
            skipped=beam.pvalue.AsList(skipped))
        return (
            (good, placeholders)
            | "Inputs and placeholders" >> beam.Flatten()
            | "Record skipped inputs" >> beam.Map(with_record, skipped=beam.pvalue.AsList(skipped))
        )


@dataclass
class Preprocess(beam.PTransform):
    """Apply a plain function ``f(index, ds) -> ds`` to every input.

    A failure is re-raised as :class:`InputError` naming the input it failed on.
    """

    function: Callable[[Index, xr.Dataset], xr.Dataset]

    def _apply(self, index: Index, ds: xr.Dataset) -> tuple[Index, xr.Dataset]:
        source = ds.encoding.get("source")
        try:
            result = self.function(index, ds)
        except ArcoforgeError:
            raise
        except Exception as error:
            name = getattr(self.function, "__name__", repr(self.function))
            raise InputError(f"preprocessor {name} failed on {describe_input(index, source)}: {error}") from error
        if not isinstance(result, xr.Dataset):
            raise RecipeError(f"preprocessor must return an xarray.Dataset, got {type(result).__name__}")
        result.encoding.setdefault("source", source)
        return index, result

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Preprocess" >> beam.MapTuple(self._apply)


def _read_schema(element: tuple[Index, xr.Dataset], concat_dims: list[str], progress_dir: str | None,
                 max_attr_bytes: int | None = DEFAULT_MAX_ATTR_BYTES):
    index, ds = element
    check_storable(ds, index)  # here rather than on opening, so that a Preprocess may drop what cannot be stored
    schema = drop_large_attrs(input_schema(ds, index, concat_dims), max_attr_bytes)
    Metrics.counter(NAMESPACE, "inputs_read").inc()
    record_event(progress_dir, "input", index=repr(index))
    return schema


def _pieces(element: tuple[Index, xr.Dataset], plan: StorePlan):
    index, ds = element
    schema = plan.schema
    groups = {group: names for group, names in plan.groups.items() if schema.writes_variable(index, group)}
    if groups:  # else an input the store holds already, or one contributing nothing
        dims_of = {name: schema.variables[name].dims for names in groups.values() for name in names}
        for key, piece in input_pieces(index, ds, groups, dims_of, schema.input_offsets(index), plan.grids):
            if not plan.done or task_id(*key) not in plan.done:  # done by an earlier attempt
                yield key, piece


def _write_task(task: tuple, plan: StorePlan, template_url: str, progress_dir: str | None) -> int:
    limit_netcdf_chunk_cache()  # the pieces re-open their inputs in this process
    key, pieces = task
    variables = {name: plan.schema.variables[name] for name in plan.groups[key[0]]}
    nbytes = 0
    dtypes = {name: variable.dtype for name, variable in variables.items()}
    for name, region, values in assemble_task(key, pieces, plan.grids[key[0]], dtypes, worker_task_buffer()):
        write_region(plan, name, region, values)
        nbytes += values.nbytes
        del values
        release_freed_memory()
    StoreState(plan.url, plan.storage_options).mark_done(task_id(*key))
    checkpoint("append.task" if plan.append_dim else "bake.task")
    Metrics.counter(NAMESPACE, "tasks_written").inc()
    Metrics.counter(NAMESPACE, "bytes_written").inc(nbytes)
    record_event(progress_dir, "task", store=plan.url, variables=sorted(variables), nbytes=nbytes)
    return nbytes


@dataclass
class StoreToZarr(beam.PTransform):
    """Combine ``(index, Dataset)`` inputs into one Zarr store, rechunked on the way.

    The inputs' schemas are combined and checked before anything is written;
    then the template is written; each write task (whole chunks, or whole
    shards) is assembled from the pieces of the inputs it overlaps and written
    by one worker; metadata is consolidated last. Outputs a PCollection
    holding the store URL.

    ``target_root`` may be left out when the recipe is run by ``arcoforge bake
    --target-root``. ``target_chunks`` takes lengths, ``-1`` or byte sizes per
    dimension, or one byte size (``"100MB"``); ``dynamic_chunking_fn(template_ds,
    **dynamic_chunking_fn_kwargs)`` may compute them instead. ``target_shards``
    (Zarr v3) groups chunks into shards, each written whole by one worker.
    ``max_mem`` bounds the array data a bake holds at once (split between local
    worker processes; per worker on distributed runners). ``zarr_format`` is 3
    by default; 2 on request.

    Readers find no store at the URL until it is complete (its root metadata is
    published last). A bake killed and run again resumes: write tasks done
    before are skipped. While a bake runs it holds a lease on the store, renewed
    every few seconds; another bake of the same store fails clearly unless the
    holder's heartbeat is ``lease_ttl`` seconds old (default 60), its process on
    this host is gone, or ``break_lease`` (see :mod:`arcoforge.lease`).

    With ``append_dim`` (or ``arcoforge bake --append``), inputs the complete
    store does not hold yet are appended along that dimension, after checks
    that they continue it (see :mod:`arcoforge.append`); a store that does not
    exist yet is baked whole. Appending what the store holds already does nothing.

    Inputs are checked against each other before anything is written (see
    :mod:`arcoforge.input_checks`): lengths against the pattern's
    ``nitems_per_file``, time-like concat coordinates strictly increasing, one
    dtype per variable. Attributes over ``max_attr_bytes`` are dropped.
    """

    combine_dims: list[Dimension]
    store_name: str
    target_root: str | None = None
    target_chunks: dict[str, int | str] | str = field(default_factory=dict)
    dynamic_chunking_fn: Callable[..., dict[str, int]] | None = None
    dynamic_chunking_fn_kwargs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    encoding: dict[str, dict[str, Any]] = field(default_factory=dict)
    zarr_format: int = 3
    target_shards: dict[str, int] | None = None
    max_mem: int | str = DEFAULT_MAX_MEM
    storage_options: dict | None = None
    lease_ttl: float | None = None
    break_lease: bool = False
    append_dim: str | None = None
    max_attr_bytes: int | None = DEFAULT_MAX_ATTR_BYTES

    def __post_init__(self) -> None:
        self.combine_dims = check_combine_dims(self.combine_dims, f"StoreToZarr({self.store_name!r})")
        check_encoding(self.encoding, self.zarr_format)  # bad keys or codecs fail now, not mid-pipeline

    def _url(self) -> str:
        root = self.target_root or runtime_defaults().target_root
        if not root:
            raise RecipeError(
                f"StoreToZarr({self.store_name!r}) has no target_root: pass target_root=..., "
                "or run the recipe with `arcoforge bake --target-root URL`"
            )
        return store_url(str(root), self.store_name)

    def expand(self, datasets: beam.PCollection) -> beam.PCollection:
        url = self._url()
        runtime = runtime_defaults()
        storage_options = self.storage_options or runtime.storage_options
        progress_dir = runtime.progress_dir
        combine_dims = list(self.combine_dims)
        concat_dims = [d.name for d in combine_dims if d.operation.name == "CONCAT"]
        # A local bake shares one machine's memory between its worker processes.
        max_mem = local_data_budget(parse_size(runtime.max_mem or self.max_mem, "max_mem"), runtime.num_workers)
        plan_kwargs = dict(
            target_chunks=self.target_chunks, attrs=dict(self.attrs), encoding=dict(self.encoding),
            zarr_format=self.zarr_format, storage_options=storage_options, target_shards=self.target_shards,
            max_mem=max_mem, dynamic_chunking_fn=self.dynamic_chunking_fn,
            dynamic_chunking_fn_kwargs=dict(self.dynamic_chunking_fn_kwargs),
        )

        known_provenance = dict(runtime.provenance or {})
        owner = runtime.owner or new_owner()
        lease_ttl = float(self.lease_ttl or runtime.lease_ttl or DEFAULT_TTL)
        break_lease = self.break_lease or runtime.break_lease

        append_dim = self.append_dim or (concat_dims[0] if runtime.append and len(concat_dims) == 1 else None)
        if runtime.append and not append_dim:
            raise RecipeError(f"StoreToZarr({self.store_name!r}): --append needs append_dim, or one concat dim")

        def make_plan(input_schemas: list) -> StorePlan:
            state = StoreState(url, storage_options)
            lease = state.lease()
            lease.acquire(owner, lease_ttl, break_lease)
            if lease.taken:  # not held by who runs the pipeline (the CLI): renewed here until released
                LeaseKeeper([lease], owner, lease_ttl).start()
            try:
                return _make_plan(input_schemas, state)
            except BaseException:
                state.release_lease(owner)  # nothing was written: the store is free again
                raise

        nitems, recipe_encoding = nitems_per_file(combine_dims), dict(self.encoding)

        def _make_plan(input_schemas: list, state: StoreState) -> StorePlan:
            # An append a crash interrupted: finished here if it passed its commit point.
            journal = append_txn.recover(state) if append_dim else None
            unfinished = None
            try:
                existing = read_existing(url, append_dim, storage_options) if append_dim else None
            except UnfinishedStoreError as error:  # resumed below if this is that same bake
                existing, unfinished = None, error
            # An append checks only its new inputs here; extend_schema checks that they continue the store.
            fresh = inputs_to_append(input_schemas, existing) if existing is not None else input_schemas
            check_inputs(fresh, combine_dims, recipe_encoding)
            if existing is not None:
                if not fresh:
                    if journal is not None:
                        append_txn.roll_back(state, journal, storage_options)
                    logger.info("nothing to append to %s: it holds all %d inputs", url, len(input_schemas))
                    schema = combine_schemas(input_schemas, combine_dims, nitems)
                    return StorePlan(url, schema, {}, {}, {}, storage_options=storage_options,
                                     append_dim=append_dim, nothing_new=True)
                first = {append_dim: min(s.index.find_position(append_dim).value for s in fresh)}
                schema = extend_schema(existing, combine_schemas(fresh, combine_dims, nitems, first_positions=first))
                logger.info("appending %d inputs to %s along %r (%d -> %d)", len(fresh), url, append_dim,
                            existing.length, schema.dims[append_dim])
            else:
                schema = combine_schemas(input_schemas, combine_dims, nitems)
            record = {**provenance(n_inputs=schema.n_inputs), **known_provenance}
            kwargs = {**plan_kwargs, "attrs": {**plan_kwargs["attrs"], **provenance_attrs(record)}}
            plan = plan_store(schema, url, **kwargs, append_to=existing)
            plan = with_documents(plan, existing)
            print_ = fingerprint(plan_description(plan))
            if unfinished is not None and state.plan_fingerprint() != print_:
                raise unfinished
            if journal is not None:
                if journal["fingerprint"] == print_:  # the same append: resume it
                    done = frozenset(state.done_tasks())
                    plan = dataclasses.replace(plan, resume=True, done=done)
                    logger.info("resuming the append to %s: %d of %d write tasks already done", url, len(done),
                                plan.n_tasks)
                else:
                    append_txn.roll_back(state, journal, storage_options)
            elif existing is None and state.plan_fingerprint() == print_:
                complete = state.is_complete(print_)
                done = frozenset(
                    task_id(group, task) for group, grid in plan.grids.items() for task in grid
                ) if complete else frozenset(state.done_tasks())
                plan = dataclasses.replace(plan, resume=True, done=done)
                logger.info("resuming %s: %d of %d write tasks already done%s", url, len(done), plan.n_tasks,
                            " (complete)" if complete else "")
            record_event(progress_dir, "plan", store=url, n_inputs=plan.schema.n_inputs,
                         n_tasks=plan.n_tasks - len(plan.done), nbytes=plan.nbytes)
            checkpoint("append.plan" if existing is not None else "bake.plan")
            return plan

        def write_store_template(plan: StorePlan) -> str:
            if plan.nothing_new or plan.resume:  # (resuming: the template of the same plan is there already)
                return plan.url
            state = StoreState(plan.url, plan.storage_options)
            description = plan_description(plan)
            if plan.append_dim:
                append_txn.begin(state, plan, fingerprint(description))
                state.write_json("plan.json", {"fingerprint": fingerprint(description),
                                               "plan": json.loads(json.dumps(description, default=repr))})
                return plan.url
            state.remove("plan.json")  # an attempt killed while the template is written starts over
            write_template(plan.url, render_plan(plan), plan.storage_options)
            checkpoint("bake.template")
            state.start(fingerprint(description), json.loads(json.dumps(description, default=repr)), plan.documents)
            checkpoint("bake.recorded")
            return plan.url

        def finish(_total: int, plan: StorePlan) -> str:
            state = StoreState(plan.url, plan.storage_options)
            if plan.nothing_new:
                state.release_lease(owner)
                return plan.url
            if plan.resume:  # writers of the killed attempt may have died mid-write
                state.remove_abandoned_writes()
            if plan.append_dim:
                append_txn.finish(state, plan, state.read_json(append_txn.JOURNAL))
                state.release_lease(owner)
                return plan.url
            publish_bake(state, plan)
            state.release_lease(owner)
            return plan.url

        plan = (
            datasets
            | "Read input schemas" >> beam.Map(_read_schema, concat_dims=concat_dims, progress_dir=progress_dir,
                                                   max_attr_bytes=self.max_attr_bytes)
            | "Collect schemas" >> beam.combiners.ToList()
            | "Plan store" >> beam.Map(make_plan)
        )
        plan_view = beam.pvalue.AsSingleton(plan)
        template = plan | "Write template" >> beam.Map(write_store_template)
        written = (
            datasets
            | "Cut inputs into pieces" >> beam.FlatMap(_pieces, plan=plan_view)
            | "Group by write task" >> beam.GroupByKey()
            | "Write tasks" >> beam.Map(_write_task, plan=plan_view, progress_dir=progress_dir,
                                        template_url=beam.pvalue.AsSingleton(template))
        )
        return (
            written
            | "Count bytes" >> beam.CombineGlobally(sum)
            | "Consolidate" >> beam.Map(finish, plan=plan_view)
        )


@dataclass
class ConsolidateDimensionCoordinates(beam.PTransform):
    """Rewrite 1-D dimension coordinates of each store as single chunks (StoreToZarr already does)."""

    storage_options: dict | None = None

    def expand(self, stores: beam.PCollection) -> beam.PCollection:
        storage_options = self.storage_options or runtime_defaults().storage_options

        def consolidate(store: Any) -> str:
            url = _store_url_of(store)
            if consolidate_dimension_coordinates(url, storage_options):
                consolidate_metadata(url, storage_options)  # the rewrite made it stale
            return url

        return stores | "Consolidate dimension coordinates" >> beam.Map(consolidate)


@dataclass
class ConsolidateMetadata(beam.PTransform):
    """Write consolidated metadata for each store (StoreToZarr already does)."""

    storage_options: dict | None = None

    def expand(self, stores: beam.PCollection) -> beam.PCollection:
        storage_options = self.storage_options or runtime_defaults().storage_options

        def consolidate(store: Any) -> str:
            url = _store_url_of(store)
            consolidate_metadata(url, storage_options)
            return url

        return stores | "Consolidate metadata" >> beam.Map(consolidate)


@dataclass
class WriteSTAC(beam.PTransform):
    """Describe each store of the input PCollection (e.g. StoreToZarr's output) in STAC.

    Writes ``<output_root>/stac/<collection_id>/collection.json`` with a
    quicklook, validates it offline (against ``schemas_dir``, else
    ``$ARCOFORGE_STAC_SCHEMAS``, else the schemas shipped with arcoforge),
    then links every collection from the root catalog in one worker, so
    concurrent collections never race on it.
    ``metadata`` is a feedstock ``meta.yaml`` dict (title, description,
    license, providers, keywords). Outputs the collection paths.
    """

    collection_id: str | None = None
    output_root: str | None = None  # default: the bake's target root, else each store's parent folder
    metadata: dict | None = None
    storage_options: dict | None = None
    schemas_dir: str | None = None
    quicklook: bool = True

    def expand(self, stores: beam.PCollection) -> beam.PCollection:
        runtime = runtime_defaults()
        # Without one, each store's collection goes beside it, under its parent folder.
        output_root = self.output_root or runtime.target_root
        storage_options = self.storage_options or runtime.storage_options
        record = dict(runtime.provenance or {})
        collection_id, metadata, schemas_dir, quicklook = (
            self.collection_id, self.metadata, self.schemas_dir, self.quicklook,
        )

        def write(store: Any) -> tuple[str, str]:
            url = _store_url_of(store).rstrip("/")
            root = str(output_root or url.rsplit("/", 1)[0])
            return root, write_store_collection(
                url, root, collection_id=collection_id, metadata=metadata,
                storage_options=storage_options, provenance=record, schemas_dir=schemas_dir,
                quicklook=quicklook, update_catalog=False,
            )

        def link_all(written: list[tuple[str, str]]) -> list[str]:
            for root, path in written:
                link_collection(root, path, storage_options)
            return [path for _, path in written]

        return (
            stores
            | "Write collections" >> beam.Map(write)
            | "Gather collections" >> beam.combiners.ToList()
            | "Link from catalog" >> beam.FlatMap(link_all)
        )
