"""The scientist's path back from a STAC Collection to the data: open its Zarr asset with xarray.

Owns how an asset is chosen (``zarr``, else the one asset of Zarr media type),
how its href is resolved (relative to the collection, as published documents
give it), and how its recorded open arguments are honoured (the zarr and
xarray-assets fields, and the plain ``open_kwargs`` of arcoforge 0.1 documents),
merged with credentials the caller supplies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pystac
import xarray as xr

from .catalog_io import read_json, resolve_href
from .collection import (LEGACY_OPEN_KWARGS_FIELD, OPEN_KWARGS_FIELD, STORAGE_OPTIONS_FIELD, ZARR_ASSET_KEY,
                         ZARR_MEDIA_TYPE)
from .icechunk import ICECHUNK_MEDIA_TYPE, open_icechunk_asset


def open_dataset_from_collection(
    collection: str | os.PathLike | Mapping[str, Any] | pystac.Collection,
    *,
    asset_key: str | None = None,
    storage_options: dict | None = None,
    **open_kwargs: Any,
) -> xr.Dataset:
    """Open the Zarr store a STAC Collection describes, exactly as ``xarray.open_zarr`` on the store would.

    ``collection`` is a path or URL of collection.json, its dict, or a pystac
    Collection. The asset is ``asset_key``, else the ``zarr`` asset, else the
    only asset of media type ``application/vnd.zarr``. Its ``open_kwargs``
    (``zarr:*``, ``xarray:open_kwargs``, ``xarray:storage_options``) are used; ``storage_options`` adds what the document may not hold, such as
    credentials; ``open_kwargs`` override.
    """
    location: str | None = None
    if isinstance(collection, pystac.Collection):
        location = collection.get_self_href()
        document = collection.to_dict(include_self_link=False)
    elif isinstance(collection, Mapping):
        document = dict(collection)
    else:
        location = str(collection)
        document = read_json(location, storage_options)
        if document is None:
            raise FileNotFoundError(f"no STAC collection at {location}")
    name = location or f"collection {document.get('id')!r}"
    assets = document.get("assets") or {}
    if asset_key is None:
        zarr_assets = [k for k, a in assets.items()
                       if a.get("type") in (ZARR_MEDIA_TYPE, "application/vnd+zarr", ICECHUNK_MEDIA_TYPE)]
        asset_key = ZARR_ASSET_KEY if ZARR_ASSET_KEY in assets else (zarr_assets[0] if len(zarr_assets) == 1 else None)
        if asset_key is None:
            raise ValueError(
                f"{name}: expected one asset of type {ZARR_MEDIA_TYPE}, found {sorted(zarr_assets) or 'none'}")
    if asset_key not in assets:
        raise KeyError(f"{name} has no asset {asset_key!r}; its assets are {sorted(assets)}")
    asset = assets[asset_key]
    if asset.get("type") == ICECHUNK_MEDIA_TYPE:
        return open_icechunk_asset(asset, resolve_href(str(asset["href"]), location), storage_options, **open_kwargs)
    kwargs: dict[str, Any] = {}
    if "zarr:consolidated" in asset:
        kwargs["consolidated"] = asset["zarr:consolidated"]
    if "zarr:zarr_format" in asset:
        kwargs["zarr_format"] = asset["zarr:zarr_format"]
    kwargs.update(asset.get(LEGACY_OPEN_KWARGS_FIELD) or {})
    kwargs.update(asset.get(OPEN_KWARGS_FIELD) or {})
    kwargs.pop("engine", None)  # open_zarr names its engine itself
    if asset.get(STORAGE_OPTIONS_FIELD):
        kwargs["storage_options"] = dict(asset[STORAGE_OPTIONS_FIELD])
    if storage_options:
        kwargs["storage_options"] = _deep_merge(kwargs.get("storage_options") or {}, storage_options)
    kwargs.update(open_kwargs)
    href = str(asset["href"])
    if location is None and "://" not in href and not os.path.isabs(href):
        raise ValueError(f"{name}: its asset href {href!r} is relative to the collection; pass the "
                         "collection's path or URL (or a pystac Collection read from it) instead of its dict")
    href = resolve_href(href, location)
    if "://" not in href or href.startswith("file://"):
        kwargs.pop("storage_options", None)  # local paths take none
    return xr.open_zarr(href, **kwargs)


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
