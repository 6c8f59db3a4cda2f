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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import xarray as xr
from apache_beam.metrics import Metrics

from .errors import ArcoforgeError, InputError, RecipeError, describe_input
from .openers import open_url, open_with_xarray
from .patterns import Dimension, FileType, Index, add_query_string_secrets
from .chunking import parse_size
from .progress import record_event
from .rechunk import assemble_task, input_pieces
from .runners import runtime_defaults
from .schema import combine_schemas, input_schema
from .stac import link_collection, provenance, provenance_attrs, write_store_collection
from .writers import (
    DEFAULT_MAX_MEM,
    StorePlan,
    consolidate_dimension_coordinates,
    consolidate_metadata,
    plan_store,
    store_url,
    template_dataset,
    write_region,
    write_template,
)

logger = logging.getLogger(__name__)
NAMESPACE = "arcoforge"


def _store_url_of(element: Any) -> str:
    return element.url if isinstance(element, StorePlan) else str(element)


@dataclass
class OpenURLWithFSSpec(beam.PTransform):
    """Turn each ``(index, url)`` into ``(index, source)`` that OpenWithXarray reads.

    ``secrets`` are added to each URL's query string; ``open_kwargs`` go to
    :func:`fsspec.open` (a pattern's ``fsspec_open_kwargs``).
    """

    secrets: dict | None = None
    open_kwargs: dict | None = None

    def _open(self, index: Index, url: str) -> tuple[Index, Any]:
        if self.secrets:
            url = add_query_string_secrets(url, self.secrets)
        Metrics.counter(NAMESPACE, "inputs_found").inc()
        return index, open_url(url, self.open_kwargs)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Open URLs" >> beam.MapTuple(self._open)


@dataclass
class OpenWithXarray(beam.PTransform):
    """Open each ``(index, source)`` as ``(index, xarray.Dataset)``, lazily unless ``load``."""

    file_type: FileType | str = FileType.unknown
    load: bool = False
    copy_to_local: bool = False
    xarray_open_kwargs: dict | None = field(default_factory=dict)

    def _open(self, index: Index, source: Any) -> tuple[Index, xr.Dataset]:
        ds = open_with_xarray(
            source,
            file_type=self.file_type,
            load=self.load,
            copy_to_local=self.copy_to_local,
            xarray_open_kwargs=self.xarray_open_kwargs,
            index=index,
        )
        Metrics.counter(NAMESPACE, "inputs_opened").inc()
        return index, ds

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Open with xarray" >> beam.MapTuple(self._open)


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


def _read_schema(element: tuple[Index, xr.Dataset], concat_dims: list[str], progress_dir: str | None):
    index, ds = element
    schema = input_schema(ds, index, concat_dims)
    Metrics.counter(NAMESPACE, "inputs_read").inc()
    record_event(progress_dir, "input", index=repr(index))
    return schema


def _pieces(element: tuple[Index, xr.Dataset], plan: StorePlan):
    index, ds = element
    schema = plan.schema
    groups = {group: names for group, names in plan.groups.items() if schema.writes_variable(index, group)}
    dims_of = {name: schema.variables[name].dims for names in groups.values() for name in names}
    yield from input_pieces(index, ds, groups, dims_of, schema.input_offsets(index), plan.grids)


def _write_task(task: tuple, plan: StorePlan, template_url: str, progress_dir: str | None) -> int:
    key, pieces = task
    variables = {name: plan.schema.variables[name] for name in plan.groups[key[0]]}
    region, arrays = assemble_task(key, pieces, plan.grids[key[0]], {n: v.dtype for n, v in variables.items()})
    nbytes = 0
    for name, values in arrays.items():
        write_region(plan.url, name, region, values, variables[name], plan.storage_options)
        nbytes += values.nbytes
    Metrics.counter(NAMESPACE, "tasks_written").inc()
    Metrics.counter(NAMESPACE, "bytes_written").inc(nbytes)
    record_event(progress_dir, "task", store=plan.url, variables=sorted(arrays), nbytes=nbytes)
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
        max_mem = parse_size(runtime.max_mem or self.max_mem, "max_mem") // max(runtime.num_workers, 1)
        plan_kwargs = dict(
            target_chunks=self.target_chunks, attrs=dict(self.attrs), encoding=dict(self.encoding),
            zarr_format=self.zarr_format, storage_options=storage_options, target_shards=self.target_shards,
            max_mem=max_mem, dynamic_chunking_fn=self.dynamic_chunking_fn,
            dynamic_chunking_fn_kwargs=dict(self.dynamic_chunking_fn_kwargs),
        )

        known_provenance = dict(runtime.provenance or {})

        def make_plan(input_schemas: list) -> StorePlan:
            schema = combine_schemas(input_schemas, combine_dims)
            record = {**provenance(n_inputs=schema.n_inputs), **known_provenance}
            kwargs = {**plan_kwargs, "attrs": {**plan_kwargs["attrs"], **provenance_attrs(record)}}
            plan = plan_store(schema, url, **kwargs)
            record_event(progress_dir, "plan", store=url, n_inputs=plan.schema.n_inputs,
                         n_tasks=plan.n_tasks, nbytes=plan.nbytes)
            return plan

        def write_store_template(plan: StorePlan) -> str:
            template = template_dataset(plan.schema, plan.chunks, plan.attrs, plan.zarr_encoding,
                                        plan.zarr_format, plan.shards)
            write_template(plan.url, template, plan.zarr_format, plan.storage_options)
            return plan.url

        def finish(_total: int, plan: StorePlan) -> str:
            consolidate_dimension_coordinates(plan.url, plan.storage_options)
            consolidate_metadata(plan.url, plan.storage_options)
            return plan.url

        plan = (
            datasets
            | "Read input schemas" >> beam.Map(_read_schema, concat_dims=concat_dims, progress_dir=progress_dir)
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
    quicklook, validates it when a schema folder is given (or named by
    ``$ARCOFORGE_STAC_SCHEMAS``), then links every collection from the root
    catalog in one worker, so concurrent collections never race on it.
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
