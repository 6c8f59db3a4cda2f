"""Zarr store I/O: opening stores, writing a bake's template and chunks, publishing its metadata last.

A bake writes the template's concat-coordinate chunks first (never its
metadata), then every write task's chunks through arrays opened from the
plan's in-memory documents (:func:`planned_array`), and publishes the documents
only once every chunk is written (:func:`publish_bake`): until then readers
find no store rather than fill values standing in for chunks not yet written.
The plan itself is :mod:`arcoforge.store_plan`'s; the documents' bytes are
:mod:`arcoforge.documents`'.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec
import numpy as np
import zarr

from ..documents import ROOT_ORDER, consolidated, grow_documents, is_metadata_key, publication_order
from ..faults import checkpoint
from ..packed_strings import PackedStrings, pack_if_strings
from ..store_plan import ExistingStore, StorePlan
from ..store_template import encode_variable, render_plan
from .state import StoreState

logger = logging.getLogger(__name__)


def open_store(url: str, storage_options: dict | None = None, read_only: bool = False) -> zarr.abc.store.Store:
    """A zarr store for a local path or any fsspec URL (``s3://bucket/prefix/x.zarr``).

    ``storage_options`` are the filesystem's (``endpoint_url``, ``key``/``secret``,
    ``anon``, ``profile``, ...), flat or keyed by protocol; local paths take none.
    Their secrets are kept out of this process's logs.
    """
    from . import options_for, register_secrets, secret_values

    if "://" not in url or url.startswith("file://"):
        path = url[len("file://"):] if url.startswith("file://") else url
        return zarr.storage.LocalStore(path, read_only=read_only)
    options = options_for(url, storage_options)
    if options:
        register_secrets(secret_values(options))
    return zarr.storage.FsspecStore.from_url(url, storage_options=options or None, read_only=read_only)


def read_documents(url: str, names: Iterable[str], zarr_format: int,
                   storage_options: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The metadata documents of the root and of the arrays ``names`` as the store holds them now."""
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    per_array = ("zarr.json",) if zarr_format == 3 else (".zarray", ".zattrs")
    keys = [*ROOT_ORDER[zarr_format], *(f"{name}/{doc}" for name in names for doc in per_array)]
    documents = {}
    for key in keys:
        try:
            documents[key] = fs.cat_file(f"{path}/{key}")
        except FileNotFoundError:
            continue
    return documents


def planned_array(url: str, name: str, documents: Mapping[str, bytes], zarr_format: int,
                  storage_options: dict | None = None, store: Any = None) -> zarr.Array:
    """Array ``name`` of the store at ``url`` as ``documents`` describe it, whatever the store publishes yet.

    ``store`` is an already open zarr store to use instead of ``url``'s (an Icechunk session's).
    """
    from zarr.core.array import AsyncArray
    from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata
    from zarr.storage import StorePath

    if zarr_format == 3:
        metadata: Any = ArrayV3Metadata.from_dict(json.loads(documents[f"{name}/zarr.json"]))
    else:
        attributes = json.loads(documents.get(f"{name}/.zattrs", b"{}"))
        metadata = ArrayV2Metadata.from_dict({**json.loads(documents[f"{name}/.zarray"]), "attributes": attributes})
    store_path = StorePath(store if store is not None else open_store(url, storage_options), name)
    return zarr.Array(AsyncArray(metadata, store_path)).with_config({"write_empty_chunks": True})


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


def with_documents(plan: "StorePlan", existing: "ExistingStore | None" = None) -> "StorePlan":
    """The plan with the metadata documents of the store it leaves (and the inputs the store then holds).

    A bake renders its template; an append grows the store's own documents along its dimension.
    """
    urls = plan.schema.urls  # shared with the schema rather than copied, unless some input has no URL
    present = urls.all_present() if isinstance(urls, PackedStrings) else all(urls)  # (no URL decoded)
    urls = urls if present else pack_if_strings(url for url in urls if url)
    if existing is None:
        rendered = render_plan(plan)
        documents = consolidated({k: v for k, v in rendered.items() if is_metadata_key(k)}, plan.zarr_format)
        return dataclasses.replace(plan, documents=documents, ingested=urls)
    held = read_documents(plan.url, list(plan.schema.variables), plan.zarr_format, plan.storage_options)
    documents = grow_documents(held, existing.append_dim, plan.schema.dims[existing.append_dim], plan.zarr_format)
    return dataclasses.replace(plan, documents=documents, append_origin=existing.length,
                               ingested=pack_if_strings(itertools.chain(existing.ingested, urls)))


def publish_bake(state: StoreState, plan: "StorePlan", plan_fingerprint: str) -> None:
    """Publish a bake whose chunks are all written: arrays' documents, then the root (the commit point).

    ``plan_fingerprint`` is the fingerprint the bake computed once when it planned.
    """
    checkpoint("bake.chunks")
    arrays, roots = publication_order(plan.documents, plan.zarr_format)
    state.publish(arrays)
    checkpoint("bake.arrays")
    state.publish(roots)  # readers now find the whole store
    checkpoint("bake.commit")
    if consolidate_dimension_coordinates(plan.url, plan.storage_options):  # (not for stores planned here)
        consolidate_metadata(plan.url, plan.storage_options)
    state.mark_complete({
        "fingerprint": plan_fingerprint,
        "lengths": {dim: plan.schema.dims[dim] for dim in plan.schema.concat_dims},
        "n_tasks": plan.n_tasks,
        "ingested": plan.ingested,  # packed, and streamed as it is written: no list of every URL
    })
    checkpoint("bake.complete")


def write_region(plan: "StorePlan", name: str, region: tuple[slice, ...], values: np.ndarray,
                 store: Any = None) -> int:
    """Encode an assembled region of whole chunks (or shards) and write it; returns bytes written.

    The array is opened from the plan's metadata documents, not from the store,
    whose published metadata still describes the old store (or none).
    ``store`` is an open zarr store to write to instead of the plan's URL (an Icechunk session's).
    """
    encoded = encode_variable(name, values, plan.schema.variables[name])
    # Every chunk is written, even one of fill values only: no scan for emptiness (it cost
    # a tenth of a bake), and a chunk that is missing always means it was never written.
    array = planned_array(plan.url, name, plan.documents, plan.zarr_format, plan.storage_options, store)
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
        # A unit that is a strided view (a task wider than its chunks) is copied whole first:
        # zarr encodes a contiguous array at about twice the speed (measured on 365x30x30 float32
        # chunks of a 365x180x360 region: 0.16 s against 0.29 s of CPU for the region's 72 chunks).
        unit_values = data[local]
        # (np.ascontiguousarray would turn a 0-d variable into a 1-element 1-d array.)
        array[part] = unit_values if unit_values.flags.c_contiguous else unit_values.copy(order="C")
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


def chunk_dimension_coordinates_like_data(url: str, storage_options: dict | None = None) -> list[str]:
    """Rewrite each 1-D dimension coordinate in chunks as long as the data's along its dimension.

    The inverse of :func:`consolidate_dimension_coordinates`: the layout
    pangeo-forge-recipes 0.10 writes when a recipe does not chain
    ``ConsolidateDimensionCoordinates`` (``StoreToZarr(consolidate_dimension_coordinates=False)``).
    Returns the names rewritten; consolidated metadata is rewritten when any is.
    """
    group = zarr.open_group(store=open_store(url, storage_options), mode="r+")
    arrays = dict(group.arrays())
    data_chunks: dict[str, int] = {}
    for array in arrays.values():
        for dim, chunk in zip(_dimension_names(array) or (), array.chunks):
            if array.ndim > 1:
                data_chunks.setdefault(dim, chunk)
    rewritten = []
    for name, array in arrays.items():
        chunk = data_chunks.get(name)
        if array.ndim != 1 or _dimension_names(array) != (name,) or chunk is None or array.chunks[0] == chunk:
            continue
        values = array[:]
        kwargs: dict[str, Any] = dict(name=name, shape=array.shape, chunks=(chunk,), dtype=array.dtype,
                                      fill_value=array.fill_value, compressors=array.compressors,
                                      filters=array.filters, attributes=dict(array.attrs), overwrite=True)
        if array.metadata.zarr_format == 3:
            kwargs["dimension_names"] = (name,)
        group.create_array(**kwargs)[:] = values
        rewritten.append(name)
    if rewritten:
        consolidate_metadata(url, storage_options)
        logger.info("rewrote dimension coordinates in chunks like the data's: %s", rewritten)
    return rewritten
