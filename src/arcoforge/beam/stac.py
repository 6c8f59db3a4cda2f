"""WriteSTAC: a STAC collection for each store a pipeline writes, linked from one root catalog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from ..runtime.context import BakeContext, resolve_context
from ..stac import link_collection, write_store_collection
from .common import store_url_of


def write_collection(store: Any, output_root: str | None, **options: Any) -> tuple[str, str]:
    """Write the collection of one store; returns (the root it goes under, its path).

    Without an ``output_root`` the collection goes beside the store, under its parent folder.
    """
    url = store_url_of(store).rstrip("/")
    root = str(output_root or url.rsplit("/", 1)[0])
    return root, write_store_collection(url, root, update_catalog=False, **options)


def link_all(written: list[tuple[str, str]], storage_options: dict | None) -> list[str]:
    """Link every written collection from its root catalog (in one worker: no race on the catalog)."""
    for root, path in written:
        link_collection(root, path, storage_options)
    return [path for _, path in written]


@dataclass
class WriteSTAC(beam.PTransform):
    """Describe each store of the input PCollection (e.g. StoreToZarr's output) in STAC.

    Writes ``<output_root>/stac/<collection_id>/collection.json`` with a
    quicklook, validates it offline (against ``schemas_dir``, else
    ``$ARCOFORGE_STAC_SCHEMAS``, else the schemas shipped with arcoforge),
    then links every collection from the root catalog in one worker, so
    concurrent collections never race on it.
    ``metadata`` is a feedstock ``meta.yaml`` dict (title, description,
    license, providers, keywords, quicklook_variable). Asset hrefs are relative
    to each collection for stores under ``output_root``, or under
    ``public_url``. Outputs the collection paths.
    """

    collection_id: str | None = None
    output_root: str | None = None  # default: the bake's target root, else each store's parent folder
    metadata: dict | None = None
    storage_options: dict | None = None
    schemas_dir: str | None = None
    quicklook: bool = True
    license: str | None = None  # SPDX id or URL; over metadata's provenance.license
    quicklook_variable: str | None = None  # default: metadata's quicklook_variable, else the largest variable
    public_url: str | None = None  # where a copy of output_root is published; asset hrefs point there
    reader_storage_options: dict | None = None  # public options readers need, e.g. {"anon": True}
    context: BakeContext | None = None

    def expand(self, stores: beam.PCollection) -> beam.PCollection:
        context = resolve_context(self.context)
        storage_options = context.choose("storage_options", self.storage_options)
        options = dict(collection_id=self.collection_id, metadata=self.metadata, storage_options=storage_options,
                       provenance=dict(context.provenance or {}), schemas_dir=self.schemas_dir,
                       quicklook=self.quicklook, license=self.license, quicklook_variable=self.quicklook_variable,
                       public_url=self.public_url, reader_storage_options=self.reader_storage_options)
        return (
            stores
            | "Write collections" >> beam.Map(write_collection, context.choose("target_root", self.output_root), **options)
            | "Gather collections" >> beam.combiners.ToList()
            | "Link from catalog" >> beam.FlatMap(link_all, storage_options)
        )
