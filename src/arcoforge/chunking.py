"""Chunk arithmetic: the target chunk (and shard) grid of a store.

Target chunks may be given per dimension as a length, ``-1`` (the whole
dimension) or a byte size (``"100MB"``: the length that makes a chunk about
that big), or as one byte size for the whole chunk.

>>> chunk_bounds(10, 4)
[(0, 4), (4, 8), (8, 10)]
>>> list(chunks_overlapping(3, 9, 4))
[0, 1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.utils import parse_bytes

from .errors import RecipeError

if TYPE_CHECKING:
    from .schema import DatasetSchema

TargetChunks = Mapping[str, int | str | None] | str | None


def chunk_bounds(size: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of every chunk of a dimension of ``size`` cut every ``chunk``."""
    return [(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def chunks_overlapping(start: int, stop: int, chunk: int) -> range:
    """Indices of the chunks that ``[start, stop)`` touches."""
    if stop <= start:
        return range(0)
    return range(start // chunk, (stop - 1) // chunk + 1)


def parse_size(value: int | str, what: str) -> int:
    """A byte count from ``"100MB"``, ``"1GiB"`` or an int, with an error naming ``what``.

    >>> parse_size("100MB", "max_mem")
    100000000
    """
    if isinstance(value, str) and value.strip().isdigit():
        raise RecipeError(f"{what} {value!r} has no unit: write e.g. '{value}MB', or pass an int")
    try:
        size = parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise RecipeError(f"{what} must be a byte size like '100MB' or '2GiB', got {value!r}") from None
    if size <= 0:
        raise RecipeError(f"{what} must be positive, got {value!r}")
    return size


def stored_itemsize(schema: "DatasetSchema", dim: str | None = None) -> int:
    """Bytes per element of the widest data variable (spanning ``dim``, if given), as stored."""
    sizes = [
        np.dtype(variable.encoding.get("dtype", variable.dtype)).itemsize
        for variable in schema.variables.values()
        if not variable.is_coord and (dim is None or dim in variable.dims) and variable.dtype.kind != "O"
    ]
    return max(sizes, default=8)


def _largest_variable(schema: "DatasetSchema") -> tuple[tuple[str, ...], int]:
    """Dimensions and stored itemsize of the data variable with the most bytes.

    A byte size for chunks is measured on this variable.
    """
    data = [v for v in schema.variables.values() if not v.is_coord and v.dims and v.dtype.kind != "O"]
    if not data:
        return tuple(schema.dims), 8

    def itemsize(v) -> int:
        return np.dtype(v.encoding.get("dtype", v.dtype)).itemsize

    largest = max(data, key=lambda v: math.prod(v.shape) * itemsize(v))
    return largest.dims, itemsize(largest)


def _largest_dims(schema: "DatasetSchema") -> tuple[str, ...]:
    return _largest_variable(schema)[0]


def _chunks_for_total_size(schema: "DatasetSchema", size: int) -> dict[str, int]:
    """Chunks of about ``size`` bytes: whole along other dimensions, as long along concat ones as fits."""
    dims, itemsize = _largest_variable(schema)
    chunks = {dim: (1 if dim in schema.concat_dims else schema.dims[dim]) for dim in dims}
    # Halve the largest non-concat dimension until one step fits.
    while math.prod(chunks.values()) * itemsize > size:
        splittable = [d for d in dims if d not in schema.concat_dims and chunks[d] > 1]
        if not splittable:
            break
        largest = max(splittable, key=lambda d: chunks[d])
        chunks[largest] = math.ceil(chunks[largest] / 2)
    step_bytes = math.prod(chunks.values()) * itemsize
    for dim in dims:
        if dim in schema.concat_dims:
            chunks[dim] = max(1, min(schema.dims[dim], size // max(step_bytes, 1)))
            step_bytes *= chunks[dim]
    return chunks


def resolve_target_chunks(schema: "DatasetSchema", target_chunks: TargetChunks) -> dict[str, int]:
    """The chunk length of every dimension of the store.

    A dimension named in ``target_chunks`` gets that length (``-1`` or ``None``:
    the whole dimension; a byte size: the length that makes the chunk that big).
    Otherwise a concat dimension is cut at each input's length (the length of
    the first input), and any other dimension is one chunk.
    """
    if isinstance(target_chunks, str):
        by_size = _chunks_for_total_size(schema, parse_size(target_chunks, "target_chunks"))
        return resolve_target_chunks(schema, by_size)
    target_chunks = dict(target_chunks or {})
    unknown = sorted(set(target_chunks) - set(schema.dims))
    if unknown:
        raise RecipeError(
            f"target_chunks names dimensions {unknown} that the dataset does not have; "
            f"its dimensions are {sorted(schema.dims)}"
        )
    chunks: dict[str, int] = {}
    sized: dict[str, int] = {}
    for dim, size in schema.dims.items():
        requested = target_chunks.get(dim)
        if isinstance(requested, str):
            sized[dim] = parse_size(requested, f"target_chunks[{dim!r}]")
            continue
        if requested is None or requested == -1:
            if dim in target_chunks or dim not in schema.concat_dims:
                chunks[dim] = max(size, 1)
            else:
                chunks[dim] = max(min(int(schema.lengths[dim][0]), size), 1)
            continue
        if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 1:
            raise RecipeError(
                f"target_chunks[{dim!r}] must be a positive integer, -1 or a byte size like '100MB', "
                f"got {requested!r}"
            )
        chunks[dim] = min(int(requested), max(size, 1))
    for dim, nbytes in sized.items():
        # The chunk of the widest variable spanning ``dim`` should be about ``nbytes``.
        dims = [d for d in _largest_dims(schema) if d != dim]
        others = math.prod(chunks.get(d, schema.dims[d]) for d in dims)
        length = nbytes // max(others * stored_itemsize(schema, dim), 1)
        chunks[dim] = max(1, min(int(length), schema.dims[dim]))
    return chunks


def resolve_target_shards(
    schema: "DatasetSchema", dim_chunks: Mapping[str, int], target_shards: Mapping[str, int] | None
) -> dict[str, int] | None:
    """The shard length of every dimension (Zarr v3), or ``None`` when not sharding.

    A dimension not named keeps one chunk per shard; each length must be a
    multiple of the dimension's chunk length (or the whole dimension).
    """
    if not target_shards:
        return None
    unknown = sorted(set(target_shards) - set(schema.dims))
    if unknown:
        raise RecipeError(f"target_shards names dimensions {unknown} that the dataset does not have")
    shards = {}
    for dim, chunk in dim_chunks.items():
        requested = target_shards.get(dim, chunk)
        if requested == -1:
            requested = math.ceil(schema.dims[dim] / chunk) * chunk
        if not isinstance(requested, (int, np.integer)) or requested < chunk or requested % chunk:
            raise RecipeError(
                f"target_shards[{dim!r}] must be a multiple of its chunk length {chunk}, got {requested!r}"
            )
        shards[dim] = int(requested)
    return shards


def variable_chunks(schema: "DatasetSchema", dim_chunks: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """The chunk shape of every variable; 1-D coordinates are kept in a single chunk."""
    result = {}
    for name, variable in schema.variables.items():
        if variable.is_coord and len(variable.dims) == 1:
            result[name] = (max(schema.dims[variable.dims[0]], 1),)
        else:
            result[name] = tuple(dim_chunks[dim] for dim in variable.dims)
    return result


def variable_shards(
    schema: "DatasetSchema", chunks: Mapping[str, tuple[int, ...]], dim_shards: Mapping[str, int] | None
) -> dict[str, tuple[int, ...] | None]:
    """The shard shape of every variable (``None``: not sharded), aligned with its chunks."""
    result: dict[str, tuple[int, ...] | None] = {}
    for name, variable in schema.variables.items():
        if dim_shards is None or not variable.dims or (variable.is_coord and len(variable.dims) == 1):
            result[name] = None
            continue
        shard = tuple(
            max(chunk, min(dim_shards[dim], math.ceil(schema.dims[dim] / chunk) * chunk))
            for dim, chunk in zip(variable.dims, chunks[name])
        )
        result[name] = None if shard == tuple(chunks[name]) else shard
    return result


def describe_chunks(chunks: Mapping[str, Any]) -> str:
    """A short text of a chunk mapping for log lines: ``time=30, lat=720``."""
    return ", ".join(f"{dim}={length}" for dim, length in chunks.items())
