"""Writing Zarr stores: the template first, then chunks, then the metadata documents.

The template holds every array's metadata (dimension names, attributes, CF
encoding, chunking) and the full values of the concat coordinates. Its
metadata documents are rendered in memory and published only once every chunk
is written (see :mod:`arcoforge.documents`); workers write chunks through
arrays opened from those documents. Chunks are CF-encoded here with the same
encoding the template was written with, so every worker writes values the
store's metadata describes, whatever epoch, packing or fill value its own input used.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
from dask.utils import format_bytes
import xarray as xr
import zarr

from .chunking import (
    TargetChunks,
    describe_chunks,
    parse_size,
    resolve_target_chunks,
    resolve_target_shards,
    variable_chunks,
    variable_shards,
)
from .errors import RecipeError
from .features import keep_time_units, store_encoding
from .packing import store_value_encoding
from .zarr_encoding import ZARR_ENCODING_KEYS, split_encoding
from .rechunk import TaskGrid, group_variables, plan_task_grid
from .documents import (
    consolidated,
    grow_documents,
    is_metadata_key,
    planned_array,
    publication_order,
    read_documents,
    render_template,
)
from .faults import checkpoint
from .schema import CF_ENCODING_KEYS, DatasetSchema, VariableSchema, schema_as_dataset
from .state import StoreState, fingerprint

if TYPE_CHECKING:
    from .append import ExistingStore

logger = logging.getLogger(__name__)

def default_compressors(zarr_format: int) -> tuple:
    """Blosc LZ4 with byte shuffle, the default of zarr-python 2 and so of most published stores.

    It compresses about 7x faster than zarr-python 3's default (Zstd level 0)
    at a somewhat lower ratio; recipes choose another codec with
    ``encoding={var: {"compressors": ...}}``.
    """
    if zarr_format == 2:
        import numcodecs

        return (numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),)
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)




DEFAULT_MAX_MEM = "1GB"


@dataclass
class StorePlan:
    """Everything a worker needs to write its part of a store."""

    url: str
    schema: DatasetSchema
    chunks: dict[str, tuple[int, ...]]
    # write-task groups (variables of one shape and unit, written together) and their task grids
    groups: dict[str, list[str]]
    grids: dict[str, TaskGrid]
    shards: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    zarr_format: int = 3
    attrs: dict[str, Any] = field(default_factory=dict)
    zarr_encoding: dict[str, dict[str, Any]] = field(default_factory=dict)
    storage_options: dict | None = None
    max_mem: int = 0
    # Resuming: write tasks already done by an earlier attempt of the same plan (their ids).
    done: frozenset[str] = frozenset()
    resume: bool = False
    # Appending along this dimension to a complete store (None: a fresh bake).
    append_dim: str | None = None
    # Nothing to do: an append whose inputs the store already holds.
    nothing_new: bool = False
    # Every metadata document of the store as this plan leaves it (consolidated), by key.
    documents: dict[str, bytes] = field(default_factory=dict)
    # Appending: the store's length along append_dim before the append.
    append_origin: int = 0
    # The inputs the store holds once this plan is done (those held before an append, and the new).
    ingested: tuple[str, ...] = ()

    @property
    def n_tasks(self) -> int:
        return sum(len(grid) for grid in self.grids.values())

    @property
    def nbytes(self) -> int:
        """Bytes of decoded array data the bake writes (concat coordinates excluded)."""
        return sum(
            math.prod(s.stop - s.start for s in self.grids[group].region(task)) * self.schema.variables[name].dtype.itemsize
            for group, names in self.groups.items()
            for task in self.grids[group]
            for name in names
        )


def plan_store(
    schema: DatasetSchema,
    url: str,
    target_chunks: TargetChunks = None,
    attrs: Mapping[str, Any] | None = None,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    zarr_format: int = 3,
    storage_options: dict | None = None,
    target_shards: Mapping[str, int] | None = None,
    max_mem: int | str = DEFAULT_MAX_MEM,
    dynamic_chunking_fn: Callable[..., Mapping[str, int]] | None = None,
    dynamic_chunking_fn_kwargs: Mapping[str, Any] | None = None,
    append_to: "ExistingStore | None" = None,
) -> StorePlan:
    """Resolve chunks, shards and write tasks, and apply encoding overrides, for a combined schema.

    ``encoding`` maps variable names to CF keys (``units``, ``calendar``,
    ``dtype``, ``_FillValue``, ``scale_factor``, ``add_offset``) and Zarr keys
    (``compressors`` or ``compressor``, ``filters``, ``serializer``; see
    :mod:`arcoforge.zarr_encoding`). ``max_mem`` bounds the array
    data one worker holds while writing (see :mod:`arcoforge.rechunk`). With
    ``append_to`` (the store being extended, see :mod:`arcoforge.append`) the
    store's own chunks and shards are kept and tasks cover only the new region.
    """
    if zarr_format not in (2, 3):
        raise RecipeError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if target_shards and zarr_format != 3:
        raise RecipeError("target_shards needs zarr_format=3: Zarr v2 has no shards")
    max_mem_bytes = parse_size(max_mem, "max_mem")
    # The plan changes encodings only: copying the concat coordinates too (cftime objects) took 0.1 s a store.
    schema = dataclasses.replace(schema, variables={
        name: dataclasses.replace(v, attrs=copy.deepcopy(v.attrs), encoding=copy.deepcopy(v.encoding))
        for name, v in schema.variables.items()})
    cf_overrides, zarr_encoding = split_encoding(encoding, schema.variables, zarr_format)
    if append_to is None:  # an append writes with the store's own encoding (see arcoforge.append)
        for name, variable in schema.variables.items():
            variable.encoding = store_value_encoding(name, variable.dtype, variable.encoding,
                                                     cf_overrides.get(name))
    for variable in schema.variables.values():
        if variable.dtype.kind == "M" and "units" not in variable.encoding:
            # Without fixed units each chunk would pick its own epoch.
            variable.encoding.update(units="seconds since 1970-01-01", calendar="standard", dtype="<f8")
    if dynamic_chunking_fn is not None:
        if target_chunks:
            raise RecipeError("pass either target_chunks or dynamic_chunking_fn, not both")
        target_chunks = dynamic_chunking_fn(schema_as_dataset(schema), **dict(dynamic_chunking_fn_kwargs or {}))
    dim_chunks = resolve_target_chunks(schema, target_chunks)
    chunks = variable_chunks(schema, dim_chunks)
    shards = variable_shards(schema, chunks, resolve_target_shards(schema, dim_chunks, target_shards))
    origin: dict[str, int] = {}
    if append_to is not None:
        chunks, shards = dict(append_to.chunks), dict(append_to.shards)
        origin = {append_to.append_dim: append_to.length}
    else:
        for name in schema.concat_coords:  # room to append without changing the chunk readers use
            chunks[name] = (coordinate_capacity(schema.variables[name].shape[0]),)
    # Variables of a group must also come from the same inputs (the same merge position).
    groups = group_variables({
        name: (variable.dims, variable.shape, shards[name] or chunks[name], schema.merge_sources[name])
        for name, variable in schema.variables.items()
        if name not in schema.concat_coords  # written whole with the template
        and (not origin or set(origin) & set(variable.dims))  # an append rewrites only what grows
    })
    grids = {}
    for group, names in list(groups.items()):
        variable = schema.variables[names[0]]

        def grid_for(members: list[str]) -> TaskGrid:
            grid = plan_task_grid(
                "+".join(members),
                variable.shape,
                shards[group] or chunks[group],
                [axis for axis, dim in enumerate(variable.dims) if dim in schema.concat_dims],
                # a task writes its variables one after another
                max(working_bytes_per_element(schema.variables[name]) for name in members),
                max_mem_bytes,
            )
            if origin:
                start = tuple(origin.get(dim, 0) for dim in variable.dims)
                grid = TaskGrid(grid.shape, grid.task_shape, grid.unit, origin=start)
            return grid

        grids[group] = grid_for(names)
    logger.info(
        "plan for %s: chunks %s%s; %d write tasks within max_mem=%s",
        url, describe_chunks(dim_chunks),
        f", shards {describe_chunks(resolve_target_shards(schema, dim_chunks, target_shards) or {})}"
        if target_shards else "",
        sum(len(g) for g in grids.values()), format_bytes(max_mem_bytes),
    )
    return StorePlan(
        url=url,
        schema=schema,
        chunks=chunks,
        groups=groups,
        grids=grids,
        shards=shards,
        zarr_format=zarr_format,
        attrs=dict(attrs or {}),
        zarr_encoding=zarr_encoding,
        storage_options=storage_options,
        max_mem=max_mem_bytes,
        append_dim=append_to.append_dim if append_to is not None else None,
    )


def coordinate_capacity(length: int) -> int:
    """The chunk length of a concat coordinate: twice its length, rounded up to a power of two.

    Appends write their values into the spare room of that one chunk (or into
    new chunks beyond it), never changing the chunk shape old readers decode with.

    >>> coordinate_capacity(365), coordinate_capacity(1)
    (1024, 2)
    """
    return 1 << max(2 * int(length) - 1, 1).bit_length()


def working_bytes_per_element(variable: VariableSchema) -> int:
    """Memory a write task needs per element of a variable it writes.

    The assembled (decoded) buffer, plus what encoding and compression allocate:
    packing into integers or changing the dtype makes a float temporary and the
    encoded copy; compressing one chunk took about 0.75x its bytes (measured).
    Object arrays (cftime) get a generous guess.
    """
    itemsize = variable.dtype.itemsize if variable.dtype.kind != "O" else 64
    encoding = variable.encoding
    converts = "scale_factor" in encoding or "add_offset" in encoding or (
        "dtype" in encoding and np.dtype(encoding["dtype"]) != variable.dtype
    )
    return itemsize * (3 if converts else 2)


def store_url(target_root: str, store_name: str) -> str:
    """The URL of a store named ``store_name`` under ``target_root``.

    >>> store_url("/data/out/", "sst.zarr")
    '/data/out/sst.zarr'
    >>> store_url("s3://bucket/prefix", "sst.zarr")
    's3://bucket/prefix/sst.zarr'

    A name that would leave ``target_root`` (``../x.zarr``, ``/x.zarr``...) is a
    :class:`RecipeError` naming ``store_name`` (see :mod:`arcoforge.names`).
    """
    from .names import join_under

    return join_under(target_root, store_name, "store_name")


def open_store(url: str, storage_options: dict | None = None, read_only: bool = False) -> zarr.abc.store.Store:
    """A zarr store for a local path or any fsspec URL (``s3://bucket/prefix/x.zarr``).

    ``storage_options`` are the filesystem's (``endpoint_url``, ``key``/``secret``,
    ``anon``, ``profile``, ...), flat or keyed by protocol; local paths take none.
    Their secrets are kept out of this process's logs.
    """
    from .io import options_for, register_secrets, secret_values

    if "://" not in url or url.startswith("file://"):
        path = url[len("file://"):] if url.startswith("file://") else url
        return zarr.storage.LocalStore(path, read_only=read_only)
    options = options_for(url, storage_options)
    if options:
        register_secrets(secret_values(options))
    return zarr.storage.FsspecStore.from_url(url, storage_options=options or None, read_only=read_only)


def encode_variable(name: str, data: Any, variable: VariableSchema) -> xr.Variable:
    """CF-encode decoded values of a variable with the store's encoding for it (see :mod:`arcoforge.features`)."""
    encoding, extra_attrs = store_encoding(variable.encoding, variable.dtype)
    decoded = xr.Variable(variable.dims, data, encoding=encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=xr.SerializationWarning)
        encoded = xr.conventions.encode_cf_variable(decoded, name=name)
    encoded.attrs.update(extra_attrs)
    keep_time_units(encoded.attrs, encoding)
    return encoded


def _sample_value(variable: VariableSchema) -> Any:
    """A value of the variable's decoded type, to learn its encoded dtype and attributes."""
    if variable.dtype.kind == "M":
        return np.array(["2000-01-01"], dtype=variable.dtype)
    if variable.dtype.kind == "m":
        return np.array([0], dtype=variable.dtype)
    if variable.is_time_like:
        import cftime

        return np.array([cftime.datetime(2000, 1, 1, calendar=variable.encoding["calendar"])], dtype=object)
    if variable.dtype.kind in "OUS":
        return np.array(["a"], dtype=variable.dtype if variable.dtype.kind != "O" else object)
    return np.zeros(1, dtype=variable.dtype)


def template_dataset(
    schema: DatasetSchema,
    chunks: Mapping[str, tuple[int, ...]],
    attrs: Mapping[str, Any] | None = None,
    zarr_encoding: Mapping[str, Mapping[str, Any]] | None = None,
    zarr_format: int = 3,
    shards: Mapping[str, tuple[int, ...] | None] | None = None,
) -> xr.Dataset:
    """A lazy, already CF-encoded Dataset with the store's structure.

    Data variables are lazy zeros (never computed); concat coordinates carry
    their real values, so they are written with the template.
    """
    import dask.array  # here, not at the top: 0.2 s to import, and only the worker writing the template needs it

    zarr_encoding = dict(zarr_encoding or {})
    variables: dict[str, xr.Variable] = {}
    coord_names = []
    for name, variable in schema.variables.items():
        if name in schema.concat_coords:
            encoded = encode_variable(name, schema.concat_coords[name], variable)
            data: Any = np.asarray(encoded.values)
        else:
            sample_shape = (1,) * len(variable.dims)
            sample = _sample_value(variable).reshape(sample_shape)  # 0-d too: a numpy scalar would lose S/U widths
            encoded = encode_variable(name, sample, variable)
            lazy_chunks = (shards or {}).get(name) or chunks[name] or ()
            data = dask.array.zeros(variable.shape, dtype=encoded.dtype, chunks=lazy_chunks)
        var_attrs = dict(encoded.attrs)
        for key, value in variable.attrs.items():
            var_attrs.setdefault(key, value)
        encoding: dict[str, Any] = {"chunks": chunks[name]}
        if shards and shards.get(name):
            encoding["shards"] = shards[name]
        if "_FillValue" in var_attrs:
            encoding["_FillValue"] = var_attrs.pop("_FillValue")
            if zarr_format == 3:
                # Let chunks never written read as missing rather than as zeros.
                encoding["fill_value"] = encoding["_FillValue"]
        elif encoded.dtype.kind in "fc" and not variable.is_coord:
            encoding["_FillValue"] = np.nan
        else:
            encoding["_FillValue"] = None
        if encoded.dtype.kind in "biufcmM":
            encoding["compressors"] = default_compressors(zarr_format)
        encoding.update({k: v for k, v in zarr_encoding.get(name, {}).items() if k in ZARR_ENCODING_KEYS})
        variables[name] = xr.Variable(variable.dims, data, attrs=var_attrs, encoding=encoding)
        if variable.is_coord:
            coord_names.append(name)
    ds = xr.Dataset(variables, attrs={**schema.attrs, **dict(attrs or {})})
    return ds.set_coords(coord_names)


def write_template(url: str, files: Mapping[str, bytes], storage_options: dict | None = None) -> None:
    """Replace whatever is at ``url`` with the chunks of a rendered template (its concat coordinates).

    Its metadata documents are *not* written: the caller holds them back and
    publishes them once every chunk is written (see :mod:`arcoforge.io.state`).
    Until then readers of ``url`` find nothing, rather than fill values
    standing in for chunks not yet written.
    """
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    if fs.exists(path):
        logger.warning("replacing the store at %s", url)
        fs.rm(path, recursive=True)
    chunks = {f"{path}/{key}": data for key, data in files.items() if not is_metadata_key(key)}
    for parent in sorted({fs._parent(name) for name in chunks}):
        fs.makedirs(parent, exist_ok=True)
    fs.pipe(chunks)
    logger.info("wrote store template %s (%d coordinate chunks)", url, len(chunks))


def render_plan(plan: "StorePlan") -> dict[str, bytes]:
    """Every file of the plan's template: metadata documents and concat coordinate chunks."""
    template = template_dataset(plan.schema, plan.chunks, plan.attrs, plan.zarr_encoding, plan.zarr_format,
                                plan.shards)
    return render_template(template, plan.zarr_format)


def with_documents(plan: "StorePlan", existing: "ExistingStore | None" = None) -> "StorePlan":
    """The plan with the metadata documents of the store it leaves (and the inputs the store then holds).

    A bake renders its template; an append grows the store's own documents along its dimension.
    """
    urls = tuple(url for url in plan.schema.urls if url)
    if existing is None:
        rendered = render_plan(plan)
        documents = consolidated({k: v for k, v in rendered.items() if is_metadata_key(k)}, plan.zarr_format)
        return dataclasses.replace(plan, documents=documents, ingested=urls)
    held = read_documents(plan.url, list(plan.schema.variables), plan.zarr_format, plan.storage_options)
    documents = grow_documents(held, existing.append_dim, plan.schema.dims[existing.append_dim], plan.zarr_format)
    return dataclasses.replace(plan, documents=documents, append_origin=existing.length,
                               ingested=(*existing.ingested, *urls))


def publish_bake(state: StoreState, plan: "StorePlan") -> None:
    """Publish a bake whose chunks are all written: arrays' documents, then the root (the commit point)."""
    checkpoint("bake.chunks")
    arrays, roots = publication_order(plan.documents, plan.zarr_format)
    state.publish(arrays)
    checkpoint("bake.arrays")
    state.publish(roots)  # readers now find the whole store
    checkpoint("bake.commit")
    if consolidate_dimension_coordinates(plan.url, plan.storage_options):  # (not for stores planned here)
        consolidate_metadata(plan.url, plan.storage_options)
    state.mark_complete({
        "fingerprint": fingerprint(plan_description(plan)),
        "lengths": {dim: plan.schema.dims[dim] for dim in plan.schema.concat_dims},
        "n_tasks": plan.n_tasks,
        "ingested": list(plan.ingested),
    })
    checkpoint("bake.complete")


def plan_description(plan: "StorePlan") -> dict[str, Any]:
    """What defines a write plan: equal descriptions write equal chunks, so a rerun may resume.

    Provenance attributes (bake time, versions) are left out: they change with
    every run without changing a single chunk.
    """
    schema = plan.schema
    return {
        "url": plan.url,
        "zarr_format": plan.zarr_format,
        "dims": schema.dims,
        "variables": {
            name: {"dims": v.dims, "dtype": v.dtype.str, "encoding": sorted((k, repr(x)) for k, x in v.encoding.items())}
            for name, v in schema.variables.items()
        },
        "chunks": plan.chunks,
        "shards": plan.shards,
        "tasks": {group: grid.task_shape for group, grid in plan.grids.items()},
        "groups": plan.groups,
        "zarr_encoding": repr(sorted(plan.zarr_encoding.items())),
        "inputs": schema.urls,
        "lengths": schema.lengths,
        "attrs": repr(sorted((k, v) for k, v in plan.attrs.items() if not str(k).startswith("arcoforge_"))),
        # a rerun after a skipped input was fixed must write that input, not resume past it
        "skipped": repr(schema.attrs.get("arcoforge_skipped_inputs")),
    }


def write_region(plan: "StorePlan", name: str, region: tuple[slice, ...], values: np.ndarray) -> int:
    """Encode an assembled region of whole chunks (or shards) and write it; returns bytes written.

    The array is opened from the plan's metadata documents, not from the store,
    whose published metadata still describes the old store (or none).
    """
    encoded = encode_variable(name, values, plan.schema.variables[name])
    # Every chunk is written, even one of fill values only: no scan for emptiness (it cost
    # a tenth of a bake), and a chunk that is missing always means it was never written.
    array = planned_array(plan.url, name, plan.documents, plan.zarr_format, plan.storage_options)
    data = np.asarray(encoded.values)
    if data.dtype != array.dtype:
        data = data.astype(array.dtype)
    # One write unit (chunk, or shard) at a time: zarr compresses the units of one
    # assignment concurrently, each with its own copies (measured: 2 chunks at once
    # took 3.5x one chunk's bytes on top of the data).
    unit = array.shards or array.chunks
    starts = [range(s.start, s.stop, u) if u else range(s.start, s.start + 1) for s, u in zip(region, unit)]
    for corner in itertools.product(*starts):
        part = tuple(slice(c, min(c + u, s.stop)) for c, u, s in zip(corner, unit, region))
        local = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part, region))
        array[part] = data[local]
    return int(data.nbytes)


def consolidate_dimension_coordinates(url: str, storage_options: dict | None = None) -> list[str]:
    """Rewrite every 1-D dimension coordinate stored in more than one chunk as one chunk.

    Returns the names rewritten. Stores written by arcoforge already keep them in
    one chunk, so this is usually a no-op; it exists for pangeo-forge recipes that chain it.
    """
    group = zarr.open_group(store=open_store(url, storage_options), mode="r+")
    rewritten = []
    for name, array in group.arrays():
        dims = _dimension_names(array)
        if array.ndim != 1 or dims != (name,) or array.chunks[0] >= array.shape[0]:
            continue
        values = array[:]
        attributes = dict(array.attrs)
        kwargs: dict[str, Any] = dict(
            name=name,
            shape=array.shape,
            chunks=array.shape,
            dtype=array.dtype,
            fill_value=array.fill_value,
            compressors=array.compressors,
            filters=array.filters,
            attributes=attributes,
            overwrite=True,
        )
        if array.metadata.zarr_format == 3:
            kwargs["dimension_names"] = dims
        new = group.create_array(**kwargs)
        new[:] = values
        rewritten.append(name)
    if rewritten:
        logger.info("rewrote dimension coordinates as single chunks: %s", rewritten)
    return rewritten


def _dimension_names(array: zarr.Array) -> tuple[str, ...] | None:
    if array.metadata.zarr_format == 3:
        names = array.metadata.dimension_names
        return tuple(names) if names else None
    names = array.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names else None


def consolidate_metadata(url: str, storage_options: dict | None = None) -> None:
    """Write consolidated metadata, so readers open the store with one request."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(open_store(url, storage_options))
    logger.debug("consolidated metadata of %s", url)
