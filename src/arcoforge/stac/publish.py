"""Publishing one store's STAC: its Collection, quicklook and catalog link, validated.

Owns the sequence a bake (``arcoforge bake``, :class:`~arcoforge.transforms.WriteSTAC`)
or ``arcoforge stac`` runs per finished store: open it, build its Collection,
write ``<root>/stac/<id>/collection.json`` beside a quicklook, link it from the
root catalog, and validate what was written against the packaged schemas, so an
invalid document fails the bake instead of reaching a catalogue.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import pystac
import xarray as xr

from .catalog_io import (CATALOG_NAME, COLLECTION_NAME, STAC_FOLDER, join_href, portable_href, update_catalog,
                         write_json)
from .collection import (STORAGE_OPTIONS_FIELD, ZARR_ASSET_KEY, build_collection, collection_id_for,
                         open_store_dataset)
from .quicklook import QUICKLOOK_NAME, main_variable, write_quicklook
from .validation import validate_stac_file

logger = logging.getLogger(__name__)


def write_collection(
    collection: pystac.Collection,
    output_root: str | os.PathLike,
    *,
    dataset: xr.Dataset | None = None,
    storage_options: dict | None = None,
    quicklook: bool = True,
    quicklook_variable: str | None = None,
    catalog: bool = True,
    public_url: str | None = None,
    **catalog_fields: str,
) -> str:
    """Write ``<output_root>/stac/<id>/collection.json`` (+ quicklook) and link it from the root catalog.

    The quicklook is drawn from ``dataset``, or from the store the collection's
    zarr asset points to, opened with ``storage_options`` (which may hold
    credentials: they are used, never written). It is linked as ``rel: preview``
    (see docs/stac.md for why not as an asset). Links are relative, so the
    ``stac`` folder is self-contained and can be moved. The zarr asset's href
    is made portable (:func:`~arcoforge.stac.catalog_io.portable_href`): a store
    under ``output_root`` is given relative to the collection, or under
    ``public_url`` (where a copy of ``output_root`` is published) when that is
    given, so copying ``output_root`` anywhere keeps the documents and the data
    together. With ``catalog=False``
    the root catalog is left to the caller (:func:`update_catalog`), e.g. to
    update it from one process; ``catalog_fields`` (``catalog_id``, ``title``,
    ``description``) apply when the catalog is new. Returns the collection's path.
    """
    from ..names import safe_relative_path

    collection = collection.clone()
    stac_root = join_href(output_root, STAC_FOLDER)
    folder = join_href(stac_root, safe_relative_path(collection.id, "collection id", single_segment=True))
    collection.links = [link for link in collection.links if link.rel not in ("self", "root", "parent", "preview")]
    collection.add_link(pystac.Link("root", f"../{CATALOG_NAME}", media_type=pystac.MediaType.JSON))
    collection.add_link(pystac.Link("parent", f"../{CATALOG_NAME}", media_type=pystac.MediaType.JSON))
    if quicklook:
        if dataset is None:
            asset = collection.assets.get(ZARR_ASSET_KEY)
            if asset is None:
                raise ValueError(
                    f"collection {collection.id!r} has no {ZARR_ASSET_KEY!r} asset to draw a quicklook from")
            consolidated = asset.extra_fields.get("zarr:consolidated")
            dataset = open_store_dataset(asset.href, storage_options, consolidated)
        written = write_quicklook(dataset, join_href(folder, QUICKLOOK_NAME), variable=quicklook_variable,
                                  storage_options=storage_options)
        if written:
            variable = quicklook_variable or main_variable(dataset)
            collection.add_link(pystac.Link("preview", f"./{QUICKLOOK_NAME}", media_type=pystac.MediaType.PNG,
                                            title=f"Quicklook of {variable}"))
    asset = collection.assets.get(ZARR_ASSET_KEY)
    if asset is not None:
        moved = portable_href(asset.href, folder, str(output_root), public_url)
        if public_url and moved != asset.href and _scheme(moved) != _scheme(asset.href):
            asset.extra_fields.pop(STORAGE_OPTIONS_FIELD, None)  # they reach the original, not the copy
        asset.href = moved
    path = join_href(folder, COLLECTION_NAME)
    write_json(path, collection.to_dict(include_self_link=False, transform_hrefs=False), storage_options)
    if catalog:
        update_catalog(join_href(stac_root, CATALOG_NAME), collection, storage_options=storage_options, **catalog_fields)
    logger.info("STAC collection %r written to %s", collection.id, path)
    return path


def _scheme(href: str) -> str:
    return href.split("://", 1)[0] if "://" in href else "file"


def store_provenance(attrs: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of a store: its ``arcoforge_*`` attributes, else what ``given`` says.

    The store's record wins: the collection repeats what the store holds.

    >>> store_provenance({"arcoforge_n_inputs": 3, "arcoforge_version": "0.1.0", "title": "x"}, {"recipe_id": "r"})
    {'recipe_id': 'r', 'n_inputs': 3, 'arcoforge_version': '0.1.0'}
    """
    from .metadata import provenance_from_attrs

    return {**dict(given or {}), **provenance_from_attrs(attrs)}


def write_store_collection(
    store_url: str,
    output_root: str,
    *,
    collection_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    storage_options: dict | None = None,
    provenance: Mapping[str, Any] | None = None,
    schemas_dir: str | os.PathLike | None = None,
    quicklook: bool = True,
    update_catalog: bool = True,
    license: str | None = None,
    quicklook_variable: str | None = None,
    public_url: str | None = None,
    reader_storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Build, write and validate the collection of one finished store.

    What ``arcoforge bake`` and :class:`~arcoforge.transforms.WriteSTAC` do per
    store. The collection id is ``collection_id``, else the store's name without
    ``.zarr`` (however the bake was called). ``license`` and
    ``quicklook_variable`` override ``metadata``'s (``provenance.license``,
    ``quicklook_variable``); ``public_url`` is where a copy of ``output_root``
    is published (see :func:`write_collection`); ``reader_storage_options``
    are what its readers need besides the public part of ``storage_options``
    (e.g. ``{"anon": True}``; public options only). The provenance record is the
    store's own (its ``arcoforge_*`` attributes), completed by ``provenance``.
    Validation is offline, against ``schemas_dir``, else
    ``$ARCOFORGE_STAC_SCHEMAS``, else the schemas shipped with arcoforge. An invalid
    document is an :class:`~arcoforge.errors.ArcoforgeError` naming the failing fields.
    Returns the collection's path. An Icechunk repository's collection
    describes its ``main`` branch as it is now, and records that snapshot's id
    (see :mod:`arcoforge.stac.icechunk`).
    """
    from ..errors import ArcoforgeError
    from .icechunk import icechunk_asset, is_icechunk, open_icechunk_dataset

    asset = None
    if is_icechunk(store_url, storage_options):
        dataset, snapshot, containers = open_icechunk_dataset(store_url, storage_options)
        asset = icechunk_asset(store_url, snapshot, "main", storage_options, containers)
    else:
        dataset = open_store_dataset(store_url, storage_options)
    record = store_provenance(dataset.attrs, provenance)
    collection = build_collection(
        store_url,
        collection_id or collection_id_for(store_url),
        metadata=metadata,
        storage_options=storage_options,
        provenance=record or None,
        dataset=dataset,
        asset=asset,
        license=license,
        reader_storage_options=reader_storage_options,
    )
    variable = quicklook_variable or (metadata or {}).get("quicklook_variable")
    path = write_collection(collection, output_root, dataset=dataset, storage_options=storage_options,
                            quicklook=quicklook, quicklook_variable=variable, catalog=update_catalog,
                            public_url=public_url)
    errors = validate_stac_file(path, schemas_dir, storage_options)
    if update_catalog:
        errors += validate_stac_file(join_href(output_root, STAC_FOLDER, CATALOG_NAME), schemas_dir, storage_options)
    if errors:
        raise ArcoforgeError("STAC documents do not validate: " + "; ".join(errors))
    return path
