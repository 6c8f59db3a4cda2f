"""Rechunking: cut inputs into fragments on the target grid, and put chunks back together.

Every input is split into *fragments*: the part of one variable that falls in
one target chunk, as ``(global start, numpy array)``. Fragments are keyed by
``(variable name, chunk index)``; a runner groups them by key, so all the pieces
of one target chunk meet in one worker, which assembles the chunk and writes it.
Two workers therefore never write the same chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import product

import numpy as np
import xarray as xr

from .chunking import chunks_overlapping
from .errors import SchemaError, describe_input
from .patterns import Index
from .schema import DatasetSchema

ChunkKey = tuple[str, tuple[int, ...]]
Fragment = tuple[tuple[int, ...], np.ndarray]


def split_fragments(
    index: Index,
    ds: xr.Dataset,
    schema: DatasetSchema,
    chunks: Mapping[str, tuple[int, ...]],
) -> Iterator[tuple[ChunkKey, Fragment]]:
    """Cut one input into fragments, one per (variable, target chunk) it touches.

    Only the variables this input is responsible for (see
    :meth:`DatasetSchema.writes_variable`) are cut; values are decoded numpy arrays.
    """
    offsets = schema.input_offsets(index)
    for name in schema.variables:
        if not schema.writes_variable(index, name):
            continue
        if name not in ds.variables:
            raise SchemaError(
                f"{describe_input(index, ds.encoding.get('source'))} lacks variable {name!r} "
                "that the schema expected (was it dropped by a preprocessor?)"
            )
        variable = ds.variables[name]
        expected_dims = schema.variables[name].dims
        if tuple(variable.dims) != expected_dims:
            variable = variable.transpose(*expected_dims)
        starts = tuple(offsets.get(dim, 0) for dim in expected_dims)
        shape = variable.shape
        chunk_shape = chunks[name]
        ranges = [
            chunks_overlapping(start, start + size, chunk)
            for start, size, chunk in zip(starts, shape, chunk_shape)
        ]
        for chunk_index in product(*ranges):
            local = []
            global_start = []
            for i, start, size, chunk in zip(chunk_index, starts, shape, chunk_shape):
                lo = max(i * chunk, start)
                hi = min((i + 1) * chunk, start + size)
                local.append(slice(lo - start, hi - start))
                global_start.append(lo)
            data = np.asarray(variable[tuple(local)].values)
            yield (name, tuple(chunk_index)), (tuple(global_start), data)


def chunk_region(
    key: ChunkKey, schema: DatasetSchema, chunks: Mapping[str, tuple[int, ...]]
) -> tuple[slice, ...]:
    """The slices of the store array that a chunk key covers."""
    name, chunk_index = key
    shape = schema.variables[name].shape
    return tuple(
        slice(i * chunk, min((i + 1) * chunk, size))
        for i, chunk, size in zip(chunk_index, chunks[name], shape)
    )


def combine_fragments(
    key: ChunkKey,
    fragments: Iterable[Fragment],
    schema: DatasetSchema,
    chunks: Mapping[str, tuple[int, ...]],
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Assemble the fragments of one target chunk into one array.

    Raises :class:`SchemaError` if the fragments do not cover the chunk exactly
    once, which means an input is missing or appears twice.
    """
    name, _ = key
    region = chunk_region(key, schema, chunks)
    shape = tuple(s.stop - s.start for s in region)
    fragments = list(fragments)
    if len(fragments) == 1 and fragments[0][1].shape == shape:
        return region, fragments[0][1].astype(schema.variables[name].dtype, copy=False)
    out = np.empty(shape, dtype=schema.variables[name].dtype)
    covered = 0
    for start, data in fragments:
        local = tuple(
            slice(s - r.start, s - r.start + n) for s, r, n in zip(start, region, data.shape)
        )
        out[local] = data
        covered += data.size
    expected = int(np.prod(shape, dtype=np.int64))
    if covered != expected:
        raise SchemaError(
            f"chunk {key[1]} of variable {name!r} received {covered} of its {expected} elements "
            f"from {len(fragments)} fragments; an input is missing or was given twice"
        )
    return region, out
