"""What an XarrayZarrRecipe does to inputs between opening and storing: plain functions on ``(index, ds)``.

Per input: drop encodings and ``process_input`` (:func:`process_one_input`),
cut into parts (:func:`split_input`); then group parts into chunks
(:func:`chunk_key`) and combine each (:func:`combine_chunk`), as
pangeo-forge-recipes 0.8 did.
"""

from __future__ import annotations

from collections.abc import Callable

import xarray as xr

from ..errors import RecipeError
from ..patterns import CombineOp, Index, Position


def process_one_input(index: Index, ds: xr.Dataset, delete_input_encoding: bool,
                      process_input: Callable[[xr.Dataset, str], xr.Dataset] | None) -> tuple[Index, xr.Dataset]:
    """What 0.8 did to each opened input: drop its variables' encoding, then ``process_input(ds, fname)``."""
    source = ds.encoding.get("source")
    if delete_input_encoding:
        ds = ds.copy()
        for name in ds.variables:
            ds[name].encoding = {}
    if process_input is not None:
        ds = process_input(ds, str(source))
        if not isinstance(ds, xr.Dataset):
            raise RecipeError(f"process_input must return an xarray.Dataset, got {type(ds).__name__}")
    ds.encoding.setdefault("source", source)
    return index, ds


def split_input(index: Index, ds: xr.Dataset, concat_dim: str, pieces: int) -> list[tuple[Index, xr.Dataset]]:
    """``subset_inputs``: an input cut into ``pieces`` consecutive parts along ``concat_dim``.

    Part ``i`` of the input at position ``p`` takes position ``p * pieces + i``;
    parts differ in length by at most one, as 0.8's did.
    """
    if pieces == 1:
        return [(index, ds)]
    length = ds.sizes[concat_dim]
    if length < pieces:
        raise RecipeError(f"subset_inputs: input {ds.encoding.get('source')} has {length} steps along "
                          f"{concat_dim!r}, cannot be cut into {pieces}")
    dim = index.find_concat_dim(concat_dim)
    base, extra = divmod(length, pieces)
    parts, start = [], 0
    for part in range(pieces):
        stop = start + base + (1 if part < extra else 0)
        piece = ds.isel({concat_dim: slice(start, stop)})
        piece.encoding.setdefault("source", ds.encoding.get("source"))
        parts.append((Index({**index, dim: Position(index[dim].value * pieces + part)}), piece))
        start = stop
    return parts


def chunk_key(item: tuple[Index, xr.Dataset], concat_dim: str | None, inputs_per_chunk: int) -> tuple:
    """The chunk an input (or input part) belongs to: its merge positions and ``position // inputs_per_chunk``."""
    index = item[0]
    merge = tuple(sorted((d.name, p.value) for d, p in index.items() if d.operation == CombineOp.MERGE))
    chunk = index.find_position(concat_dim).value // inputs_per_chunk if concat_dim else 0
    return merge, chunk


def combine_chunk(items: list[tuple[Index, xr.Dataset]], concat_dim: str | None, inputs_per_chunk: int,
                  concat_kwargs: dict, process_chunk: Callable[[xr.Dataset], xr.Dataset] | None
                  ) -> tuple[Index, xr.Dataset]:
    """One chunk: its inputs concatenated along ``concat_dim`` (in order), then ``process_chunk``."""
    items = sorted(items, key=lambda item: item[0].sort_key())
    index, first = items[0]
    if concat_dim and (len(items) > 1 or concat_kwargs):
        ds = xr.concat([ds for _, ds in items], dim=concat_dim, **concat_kwargs)
    else:
        ds = first
    if concat_dim:
        dim = index.find_concat_dim(concat_dim)
        index = Index({**index, dim: Position(index[dim].value // inputs_per_chunk)})
    if process_chunk is not None:
        ds = process_chunk(ds)
        if not isinstance(ds, xr.Dataset):
            raise RecipeError(f"process_chunk must return an xarray.Dataset, got {type(ds).__name__}")
    ds.encoding.setdefault("source", first.encoding.get("source"))
    return index, ds
