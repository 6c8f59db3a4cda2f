"""Consolidation steps pangeo-forge recipes chain after StoreToZarr (which already does both).

After StoreToIcechunk they pass the repository on unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from ..runtime.context import BakeContext, resolve_context
from ..io.icechunk_store import is_repository
from ..io.zarr_store import consolidate_dimension_coordinates, consolidate_metadata
from .common import store_url_of


def consolidate_coordinates_of(store: Any, storage_options: dict | None) -> str:
    """Rewrite a store's 1-D dimension coordinates as single chunks (then its consolidated metadata)."""
    url = store_url_of(store)
    if is_repository(url, storage_options):  # StoreToIcechunk's: one chunk already, no consolidated metadata
        return url
    if consolidate_dimension_coordinates(url, storage_options):
        consolidate_metadata(url, storage_options)  # the rewrite made it stale
    return url


def consolidate_metadata_of(store: Any, storage_options: dict | None) -> str:
    """Write a store's consolidated metadata."""
    url = store_url_of(store)
    if not is_repository(url, storage_options):  # Icechunk keeps its metadata in its snapshots
        consolidate_metadata(url, storage_options)
    return url


@dataclass
class ConsolidateDimensionCoordinates(beam.PTransform):
    """Rewrite 1-D dimension coordinates of each store as single chunks (StoreToZarr already does)."""

    storage_options: dict | None = None
    context: BakeContext | None = None

    def expand(self, stores: beam.PCollection) -> beam.PCollection:
        storage_options = resolve_context(self.context).choose("storage_options", self.storage_options)
        return stores | "Consolidate dimension coordinates" >> beam.Map(
            consolidate_coordinates_of, storage_options=storage_options)


@dataclass
class ConsolidateMetadata(beam.PTransform):
    """Write consolidated metadata for each store (StoreToZarr already does)."""

    storage_options: dict | None = None
    context: BakeContext | None = None

    def expand(self, stores: beam.PCollection) -> beam.PCollection:
        storage_options = resolve_context(self.context).choose("storage_options", self.storage_options)
        return stores | "Consolidate metadata" >> beam.Map(consolidate_metadata_of, storage_options=storage_options)
