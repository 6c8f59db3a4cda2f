"""Chunk arithmetic: the target chunk grid of a store and where pieces fall on it.

>>> chunk_bounds(10, 4)
[(0, 4), (4, 8), (8, 10)]
>>> list(chunks_overlapping(3, 9, 4))
[0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .errors import RecipeError

if TYPE_CHECKING:
    from .schema import DatasetSchema


def chunk_bounds(size: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of every chunk of a dimension of ``size`` cut every ``chunk``."""
    return [(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def chunks_overlapping(start: int, stop: int, chunk: int) -> range:
    """Indices of the chunks that ``[start, stop)`` touches."""
    if stop <= start:
        return range(0)
    return range(start // chunk, (stop - 1) // chunk + 1)


def resolve_target_chunks(schema: "DatasetSchema", target_chunks: Mapping[str, int] | None) -> dict[str, int]:
    """The chunk length of every dimension of the store.

    A dimension named in ``target_chunks`` gets that length (``-1`` or ``None``:
    the whole dimension). Otherwise a concat dimension is cut at each input's
    length (the length of the first input), and any other dimension is one chunk.
    """
    target_chunks = dict(target_chunks or {})
    unknown = sorted(set(target_chunks) - set(schema.dims))
    if unknown:
        raise RecipeError(
            f"target_chunks names dimensions {unknown} that the dataset does not have; "
            f"its dimensions are {sorted(schema.dims)}"
        )
    chunks: dict[str, int] = {}
    for dim, size in schema.dims.items():
        requested = target_chunks.get(dim)
        if requested is None or requested == -1:
            if dim in target_chunks or dim not in schema.concat_dims:
                chunks[dim] = max(size, 1)
            else:
                chunks[dim] = max(min(schema.lengths[dim][0], size), 1)
            continue
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise RecipeError(
                f"target_chunks[{dim!r}] must be a positive integer or -1, got {requested!r}"
            )
        chunks[dim] = min(requested, max(size, 1))
    return chunks


def variable_chunks(schema: "DatasetSchema", dim_chunks: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """The chunk shape of every variable; 1-D coordinates are kept in a single chunk."""
    result = {}
    for name, variable in schema.variables.items():
        if variable.is_coord and len(variable.dims) == 1:
            result[name] = (max(schema.dims[variable.dims[0]], 1),)
        else:
            result[name] = tuple(dim_chunks[dim] for dim in variable.dims)
    return result
