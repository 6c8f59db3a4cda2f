"""Building the STAC Collection of one Zarr store: the store's facts, the asset that opens it, its id.

Owns :func:`build_collection`, which gathers what the other modules compute
(extents, datacube fields, descriptive metadata, provenance) into one pystac
Collection with a ``zarr`` asset carrying the zarr extension fields and the
keyword arguments that open the store with xarray. Also owns what may be
published of a store's location and options: credentials and signed query
strings never reach a document.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pystac
import xarray as xr

from .coordinates import find_coordinates
from .datacube import cube_dimensions, cube_variables
from .extents import spatial_bbox, temporal_interval
from .metadata import keywords_list, license_id, providers_list

STAC_VERSION = "1.1.0"
DATACUBE_EXTENSION = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
ZARR_EXTENSION = "https://stac-extensions.github.io/zarr/v1.0.0/schema.json"
ZARR_MEDIA_TYPE = "application/vnd.zarr"
ZARR_ASSET_KEY = "zarr"
XARRAY_EXTENSION = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
# The xarray-assets fields readers such as xpystac and intake-stac pass to ``xarray.open_dataset``:
# the keyword arguments (``chunks={}`` makes it lazy with dask, as ``open_zarr`` is), and the
# storage options that reach the store (only their public part: endpoint, region, anon...).
OPEN_KWARGS_FIELD = "xarray:open_kwargs"
STORAGE_OPTIONS_FIELD = "xarray:storage_options"
LEGACY_OPEN_KWARGS_FIELD = "open_kwargs"  # what arcoforge 0.1 documents carried
PROVENANCE_FIELD = "arcoforge:provenance"


def public_storage_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options safe to publish: only keys known to be harmless (see :mod:`arcoforge.io.redaction`).

    >>> public_storage_options({"anon": False, "key": "AKIA", "pwd": "s",
    ...                         "client_kwargs": {"endpoint_url": "http://h:9000", "aws_session_token": "t"}})
    {'anon': False, 'client_kwargs': {'endpoint_url': 'http://h:9000'}}
    """
    from ..io.redaction import public_options

    return public_options(storage_options)


def reader_options(storage_options: Mapping[str, Any] | None,
                   reader_storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The storage options a document gives readers: the writer's public ones, updated by ``reader_storage_options``.

    ``reader_storage_options`` must be public themselves (see :mod:`arcoforge.io.redaction`):
    a key that looks secret is a ValueError naming the key, never its value.

    >>> reader_options({"key": "AKIA", "endpoint_url": "http://h:9000"}, {"anon": True})
    {'endpoint_url': 'http://h:9000', 'anon': True}
    """
    from ..io.redaction import public_options, secret_looking_keys

    given = dict(reader_storage_options or {})
    kept = public_options(given)
    refused = secret_looking_keys(given)
    if refused:
        raise ValueError(f"STAC reader storage options {refused} may hold secrets and are never published; "
                         "give only public options (anon, endpoint_url, region_name, requester_pays...)")
    return _merged(public_storage_options(storage_options), kept)


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


def public_url(url: str) -> str:
    """``url`` without user info or query string (see :func:`arcoforge.redaction.public_url`).

    >>> public_url("https://user:pw@host.org/x.zarr?sig=abc&version=2")
    'https://host.org/x.zarr#q2e0c93214c'
    """
    from ..io.redaction import public_url as public

    return public(url)



@dataclass(frozen=True)
class ZarrStoreInfo:
    """What the zarr extension says about a store: format, consolidation, root node type."""

    zarr_format: int
    consolidated: bool
    node_type: str = "group"


def inspect_zarr_store(url: str, storage_options: dict | None = None) -> ZarrStoreInfo:
    """Read the root metadata of a Zarr store (v2 or v3) at a path or fsspec URL."""
    import zarr

    from ..io.zarr_store import open_store

    try:
        group = zarr.open_group(store=open_store(url, storage_options, read_only=True), mode="r")
    except Exception as error:
        raise ValueError(f"{public_url(url)} is not a readable Zarr group: {type(error).__name__}: {error}") from error
    consolidated = group.metadata.consolidated_metadata is not None
    return ZarrStoreInfo(zarr_format=int(group.metadata.zarr_format), consolidated=consolidated)


def open_store_dataset(url: str, storage_options: dict | None = None, consolidated: bool | None = None) -> xr.Dataset:
    """The store opened with xarray, lazily (as ``xarray.open_zarr`` does)."""
    from ..io.zarr_store import open_store

    ds = xr.open_zarr(open_store(url, storage_options, read_only=True), consolidated=consolidated)
    ds.encoding.setdefault("source", public_url(url))
    return ds


def _absolute_href(url: str) -> str:
    if "://" in url:
        return url
    return os.path.abspath(url)


def _check_collection_id(collection_id: str) -> str:
    text = str(collection_id).strip()
    if not text or text in (".", "..") or "/" in text or "\\" in text:
        raise ValueError(
            f"collection id {collection_id!r} cannot name a folder of the STAC catalog; "
            "expected a non-empty recipe id without '/'"
        )
    return text


def build_collection(
    store_url: str | os.PathLike,
    collection_id: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    storage_options: dict | None = None,
    provenance: Mapping[str, Any] | None = None,
    dataset: xr.Dataset | None = None,
    title: str | None = None,
    description: str | None = None,
    license: str | None = None,
    providers: Sequence[Mapping[str, Any] | str] | None = None,
    keywords: Sequence[str] | str | None = None,
    reader_storage_options: Mapping[str, Any] | None = None,
    asset: pystac.Asset | None = None,
) -> pystac.Collection:
    """A STAC 1.1.0 Collection describing the Zarr store at ``store_url``.

    ``collection_id`` is the recipe id. ``title``, ``description``, ``license``,
    ``providers`` and ``keywords`` come from the keyword arguments, else from a
    feedstock ``meta.yaml`` dict (``title``, ``description``,
    ``provenance.license``, ``provenance.providers``, ``keywords``/``tags``), else
    from the store's global attributes. ``storage_options`` open the store; only
    their non-secret part is written, into the asset's ``xarray:storage_options``
    (for remote stores), completed by ``reader_storage_options``: what readers of
    the published data need besides (``{"anon": True}`` for a public bucket),
    public options only. The asset href is absolute here; :func:`write_collection`
    makes it portable.
    ``dataset`` may be given when the store is already open. ``asset`` (with
    ``dataset``) replaces the Zarr asset, for stores that are not a plain Zarr
    folder (an Icechunk repository, see :mod:`arcoforge.stac.icechunk`).
    """
    collection_id = _check_collection_id(collection_id)
    store_url = str(store_url)
    meta = dict(metadata or {})
    meta_provenance = meta.get("provenance") if isinstance(meta.get("provenance"), Mapping) else {}
    info = inspect_zarr_store(store_url, storage_options) if asset is None else None
    ds = dataset if dataset is not None else open_store_dataset(store_url, storage_options, info.consolidated)

    coords = find_coordinates(ds)
    bbox = spatial_bbox(ds, coords)
    interval = temporal_interval(ds, coords)
    extra_links: list[pystac.Link] = []
    license_value = license_id(license if license is not None else meta_provenance.get("license", meta.get("license")),
                            extra_links)
    title = title or meta.get("title") or ds.attrs.get("title") or collection_id
    description = (description or meta.get("description") or ds.attrs.get("summary")
                   or ds.attrs.get("description") or ds.attrs.get("comment")
                   or f"Zarr store {collection_id!r} written by arcoforge.")
    collection = pystac.Collection(
        id=collection_id,
        title=str(title),
        description=str(description).strip(),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval])),
        license=license_value,
        providers=providers_list(providers if providers is not None else meta_provenance.get("providers")) or None,
        keywords=keywords_list(keywords if keywords is not None else meta.get("keywords", meta.get("tags"))),
    )
    for link in extra_links:
        collection.add_link(link)

    from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable

    cube = DatacubeExtension.ext(collection, add_if_missing=True)
    cube.apply(
        dimensions={name: Dimension(props) for name, props in cube_dimensions(ds, coords).items()},
        variables={name: Variable(props) for name, props in cube_variables(ds).items()},
    )
    # Declare the datacube version whose schema we validate with, whichever one this pystac writes.
    collection.stac_extensions = [url for url in collection.stac_extensions if "/datacube/" not in url]
    collection.stac_extensions.append(DATACUBE_EXTENSION)

    extensions = [ZARR_EXTENSION]
    if asset is None:
        asset = _zarr_asset(store_url, info, storage_options, reader_storage_options)
        extensions.append(XARRAY_EXTENSION)
    collection.add_asset(ZARR_ASSET_KEY, asset)
    for extension in extensions:
        if extension not in collection.stac_extensions:
            collection.stac_extensions.append(extension)
    if provenance:
        collection.extra_fields[PROVENANCE_FIELD] = dict(provenance)
    return collection



def _zarr_asset(store_url: str, info: Any, storage_options: dict | None,
                reader_storage_options: Mapping[str, Any] | None) -> pystac.Asset:
    """The asset of a plain Zarr store: where it is and how xarray opens it."""
    href = public_url(_absolute_href(store_url))
    extra_fields: dict[str, Any] = {
        "zarr:zarr_format": info.zarr_format,
        "zarr:consolidated": info.consolidated,
        "zarr:node_type": info.node_type,
        OPEN_KWARGS_FIELD: {"chunks": {}},
    }
    public_options = reader_options(storage_options, reader_storage_options)
    if public_options and "://" in href and not href.startswith("file://"):
        extra_fields[STORAGE_OPTIONS_FIELD] = public_options
    return pystac.Asset(
        href=href,
        title=f"Zarr store {href.rstrip('/').rsplit('/', 1)[-1]}",
        description="Open with xarray.open_dataset(href, engine='zarr', **xarray:open_kwargs, "
                    "storage_options=xarray:storage_options), or arcoforge.stac.open_dataset_from_collection.",
        media_type=ZARR_MEDIA_TYPE,
        roles=["data"],
        extra_fields=extra_fields,
    )


def collection_id_for(store_url: str) -> str:
    """The default collection id of a store: its name without ``.zarr`` (or ``.icechunk``).

    >>> collection_id_for("s3://bucket/out/daily-sst.zarr/")
    'daily-sst'
    >>> collection_id_for("/stores/daily-sst.icechunk")
    'daily-sst'
    """
    name = str(store_url).rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".zarr", ".icechunk"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
