"""The Beam pipeline an XarrayZarrRecipe (:mod:`arcoforge.compat.xarray_zarr`) stands for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from ..beam.consolidate import ConsolidateMetadata
from ..beam.open import OpenURLWithFSSpec, OpenWithXarray
from ..beam.store import StoreToZarr
from .xarray_zarr_steps import chunk_key, combine_chunk, process_one_input, split_input


@dataclass
class XarrayZarrPipeline(beam.PTransform):
    """``Create(pattern.items())`` through ``StoreToZarr``, wired from an XarrayZarrRecipe's arguments."""

    recipe: Any  # XarrayZarrRecipe
    store_name: str
    target_root: str | None = None

    def expand(self, root: beam.pvalue.PBegin) -> beam.PCollection:
        r = self.recipe
        pattern, concat_dim, per_chunk = r.file_pattern, r.concat_dim, int(r.inputs_per_chunk)
        store = StoreToZarr(combine_dims=r.combine_dims(), store_name=self.store_name, target_root=self.target_root,
                            target_chunks=r.store_target_chunks(), zarr_format=r.zarr_format,
                            consolidate_dimension_coordinates=r.consolidate_dimension_coordinates)
        inputs = (
            root
            | "Create" >> beam.Create(list(pattern.items()))
            | OpenURLWithFSSpec(cache=True if r.cache_inputs else None, secrets=pattern.query_string_secrets or None,
                                open_kwargs=pattern.fsspec_open_kwargs or None)
            | OpenWithXarray(file_type=pattern.file_type, copy_to_local=r.copy_input_to_local_file,
                             xarray_open_kwargs=dict(r.xarray_open_kwargs))
            | "Process inputs" >> beam.Map(lambda item: process_one_input(*item, r.delete_input_encoding,
                                                                          r.process_input))
            | "Subset inputs" >> beam.FlatMap(lambda item: split_input(*item, concat_dim, r._pieces()))
        )
        chunks = (
            inputs
            | "Key by chunk" >> beam.Map(lambda item: (chunk_key(item, concat_dim, per_chunk), item))
            | "Group chunks" >> beam.GroupByKey()
            | "Combine chunks" >> beam.MapTuple(
                lambda _, items: combine_chunk(list(items), concat_dim, per_chunk, dict(r.xarray_concat_kwargs),
                                               r.process_chunk))
        )
        stored = chunks | store
        return stored | ConsolidateMetadata() if r.consolidate_zarr else stored
