"""Appending to a published store: new inputs along one dimension, checked before anything is written.

A complete store records which inputs it holds and its length along each
concat dimension (``complete.json`` in its state folder, see :mod:`arcoforge.io.state`). An append bake combines only the inputs not yet ingested, checks
them against the store — same variables, dimensions, dtypes and encodings, and
coordinates that continue the store's strictly increasing axis without
overlapping it — and extends the store's schema so that write tasks cover only
the new region. Running the same append again finds nothing new and writes nothing.
How the append is written, as one transaction, is :mod:`arcoforge.append_txn`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from .errors import SchemaError
from .packing import is_packed, store_value_encoding
from .schema import CF_ENCODING_KEYS, DatasetSchema, InputSchema, _cf_encoding, _same
from .schema_pool import SchemaPool
from .io.state import StoreState
from .store_plan import ExistingStore

logger = logging.getLogger(__name__)

# Encoding keys whose change would make old and new chunks mean different things.
VALUE_ENCODING_KEYS = ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value")


class UnfinishedStoreError(SchemaError):
    """The store exists but its bake never completed: only that same bake, resumed, may go on."""


def read_existing(url: str, append_dim: str, storage_options: Mapping[str, Any] | None = None,
                  state: StoreState | None = None) -> ExistingStore | None:
    """The complete store at ``url`` (``None`` if there is none yet: the first bake creates it).

    A store that exists but never completed cannot be appended to
    (:class:`UnfinishedStoreError`): its bake must be run again (it resumes) first.
    ``state`` is the store's state the caller holds already (the planning bake's).
    """
    import fsspec

    from .io.zarr_store import open_store

    state = state or StoreState(url, storage_options)
    complete = state.read_json("complete.json")
    if complete is None:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        # Published (readers see it) but not complete: a bake killed after its commit point.
        # A store whose root is not published yet holds nothing readers use: it is baked over.
        if fs.exists(f"{path}/zarr.json") or fs.exists(f"{path}/.zgroup"):
            raise UnfinishedStoreError(
                f"cannot append to {url}: its bake did not complete; run that bake again (it resumes) first"
            )
        return None
    store = open_store(url, storage_options, read_only=True)
    return describe_existing(url, store, append_dim, state.ingested(), complete.get("lengths", {}).get(append_dim))


def describe_existing(url: str, store: Any, append_dim: str, ingested: Iterable[str],
                      length: int | None = None) -> ExistingStore:
    """What an append needs to know of the complete store open as ``store`` (any zarr store: a path's,
    an Icechunk session's); ``ingested`` are the inputs it holds, ``length`` its length along ``append_dim``
    when it has room beyond it."""
    import zarr

    ds = xr.open_zarr(store, chunks=None, consolidated=False)
    if append_dim not in ds.dims:
        raise SchemaError(f"cannot append along {append_dim!r}: {url} has dimensions {sorted(map(str, ds.dims))}")
    length = int(length if length is not None else ds.sizes[append_dim])
    group = zarr.open_group(store=store, mode="r")
    variables, chunks, shards = {}, {}, {}
    for name, variable in ds.variables.items():
        variables[str(name)] = (tuple(map(str, variable.dims)), variable.dtype, _cf_encoding(variable))
        array = group[str(name)]
        chunks[str(name)] = tuple(array.chunks)
        shards[str(name)] = tuple(array.shards) if array.shards else None
    coordinate = np.asarray(ds[append_dim].values[:length]) if append_dim in ds.variables else None
    return ExistingStore(url, append_dim, length, {str(k): int(v) for k, v in ds.sizes.items()}, variables,
                         chunks, shards, coordinate, list(ingested))


def inputs_to_append(inputs: SchemaPool | Iterable[InputSchema], existing: ExistingStore) -> SchemaPool:
    """The inputs the store does not hold yet (by URL), as a pool of their own."""
    pool = SchemaPool.of(inputs)
    held = set(existing.ingested)
    return pool.take(row for row, url in enumerate(pool.urls()) if url not in held)


def extend_schema(existing: ExistingStore, schema: DatasetSchema) -> DatasetSchema:
    """Check new inputs against the store and return the schema of the store after the append.

    Raises :class:`SchemaError`, before anything is written, when the new inputs
    add or lack variables, change a dimension, dtype or value encoding, or have
    coordinates that overlap the store's or do not increase.
    """
    dim = existing.append_dim
    new, old = set(schema.variables), set(existing.variables)
    if new != old:
        problems = []
        if new - old:
            problems.append(f"have variables {sorted(new - old)} that the store lacks")
        if old - new:
            problems.append(f"lack variables {sorted(old - new)} that the store has")
        raise SchemaError(f"cannot append to {existing.url}: the new inputs " + " and ".join(problems))
    for size_dim, size in schema.dims.items():
        if size_dim != dim and existing.sizes.get(size_dim) != size:
            raise SchemaError(
                f"cannot append to {existing.url}: dimension {size_dim!r} has size {size} in the new inputs, "
                f"{existing.sizes.get(size_dim)} in the store"
            )
    extended = copy.deepcopy(schema)
    for name, variable in extended.variables.items():
        dims, dtype, encoding = existing.variables[name]
        if variable.dims != dims:
            raise SchemaError(f"cannot append to {existing.url}: variable {name!r} has dimensions "
                              f"{variable.dims} in the new inputs, {dims} in the store")
        # A store asked to keep a float32-decoding pack decodes it to float64 (see arcoforge.packing).
        widened = is_packed(encoding) and variable.dtype == np.float32 and dtype == np.float64
        if variable.dtype != dtype and not widened:
            raise SchemaError(f"cannot append to {existing.url}: variable {name!r} has dtype {variable.dtype} "
                              f"in the new inputs, {dtype} in the store")
        if variable.is_time_like:
            calendars = (variable.encoding.get("calendar"), encoding.get("calendar"))
            if calendars[0] != calendars[1]:
                raise SchemaError(f"cannot append to {existing.url}: variable {name!r} uses calendar "
                                  f"{calendars[0]!r} in the new inputs, {calendars[1]!r} in the store")
        else:
            # A pack the bake stored unpacked (see arcoforge.packing) continues the store just as well.
            # What a fresh bake stores (unpacked, or _Unsigned resolved; see arcoforge.packing) continues it too.
            stored = store_value_encoding(name, variable.dtype, variable.encoding)
            if is_packed(variable.encoding) and not is_packed(stored):
                continues = not is_packed(encoding) and np.dtype(encoding.get("dtype", dtype)) == dtype
            else:
                continues = all(_same(stored.get(key), encoding.get(key)) for key in VALUE_ENCODING_KEYS)
            for key in () if continues else VALUE_ENCODING_KEYS:
                if not _same(variable.encoding.get(key), encoding.get(key)):
                    raise SchemaError(
                        f"cannot append to {existing.url}: variable {name!r} changes its encoding: {key} is "
                        f"{variable.encoding.get(key)!r} in the new inputs, {encoding.get(key)!r} in the store"
                    )
        # New values are written with the store's own encoding (time units included).
        variable.encoding = {k: encoding[k] for k in CF_ENCODING_KEYS if k in encoding}
        if dim in variable.dims:
            axis = variable.dims.index(dim)
            variable.shape = tuple(n + existing.length if i == axis else n for i, n in enumerate(variable.shape))
    if dim in schema.concat_coords and existing.coordinate is not None:
        new_values = schema.concat_coords[dim]
        combined = np.concatenate([existing.coordinate, new_values])
        if len(combined) > 1 and not bool(np.all(combined[1:] > combined[:-1])):
            last = existing.coordinate[-1] if len(existing.coordinate) else None
            overlap = [str(v) for v in new_values if last is not None and v <= last][:3]
            detail = (f"values {overlap} overlap the store, which ends at {last}" if overlap
                      else "the new values do not increase")
            raise SchemaError(f"cannot append to {existing.url} along {dim!r}: {detail}; "
                              "the axis must stay strictly increasing")
        extended.concat_coords[dim] = combined
    extended.dims[dim] = existing.length + schema.dims[dim]
    extended.offset_base[dim] = existing.length
    return extended
