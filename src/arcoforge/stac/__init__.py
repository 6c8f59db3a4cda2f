"""STAC for every store: a Collection per Zarr store, a root Catalog, offline validation.

:func:`build_collection` describes one store as a STAC 1.1.0 Collection built
with pystac: extents from the data's CF coordinates, the datacube extension
(``cube:dimensions``, ``cube:variables``), and one ``zarr`` asset carrying the
zarr extension fields and the keyword arguments that open it with xarray.
:func:`write_collection` writes it as ``<root>/stac/<id>/collection.json``
beside a quicklook PNG and links it from ``<root>/stac/catalog.json``.
:func:`validate_stac_file` checks a document against the official JSON schemas
shipped with arcoforge, offline. :func:`open_dataset_from_collection` is the
scientist's path back from the document to the data.

Everything here is a plain function (no Beam), so it runs after a bake or on
any existing store. Secrets never reach a document: storage options and URLs
are stripped of anything credential-like before they are written.

One module per concept, each importing only those before it:

- :mod:`.coordinates` — which variables are latitude, longitude, time, cell bounds
- :mod:`.extents` — bounding box, temporal interval, ISO 8601 durations
- :mod:`.datacube` — ``cube:dimensions`` and ``cube:variables``
- :mod:`.metadata` — ``meta.yaml``, licence, providers, keywords, provenance
- :mod:`.catalog_io` — JSON on any fsspec filesystem (:class:`FsspecStacIO`), the root catalog
- :mod:`.validation` — JSON-schema validation against the packaged schemas, offline
- :mod:`.collection` — the Collection of one store, its asset and id
- :mod:`.quicklook` — the PNG preview
- :mod:`.publish` — build, write, link and validate one store's documents
- :mod:`.access` — open the data a Collection describes
"""

from __future__ import annotations

from .access import open_dataset_from_collection
from .catalog_io import (
    CATALOG_NAME,
    COLLECTION_NAME,
    STAC_FOLDER,
    FsspecStacIO,
    join_href,
    link_collection,
    portable_href,
    read_json,
    resolve_href,
    update_catalog,
    write_json,
)
from .collection import (
    DATACUBE_EXTENSION,
    OPEN_KWARGS_FIELD,
    PROVENANCE_FIELD,
    STAC_VERSION,
    STORAGE_OPTIONS_FIELD,
    XARRAY_EXTENSION,
    ZARR_ASSET_KEY,
    ZARR_EXTENSION,
    ZARR_MEDIA_TYPE,
    ZarrStoreInfo,
    build_collection,
    collection_id_for,
    inspect_zarr_store,
    open_store_dataset,
    public_storage_options,
    public_url,
)
from .coordinates import CFCoordinates, find_coordinates
from .datacube import MAX_LISTED_VALUES, cube_dimensions, cube_variables
from .extents import GLOBAL_BBOX, iso_duration, longitude_interval, spatial_bbox, temporal_interval, to_utc_datetime
from .metadata import PROVIDER_ROLES, provenance, provenance_attrs, provenance_from_attrs, read_meta_yaml
from .publish import write_collection, write_store_collection
from .quicklook import QUICKLOOK_NAME, main_variable, write_quicklook
from .validation import (
    SCHEMAS_ENV,
    OfflineSTACValidator,
    default_schemas_dir,
    packaged_schemas_dir,
    schema_urls,
    validate_stac,
    validate_stac_file,
    validate_stac_path,
    validate_stac_tree,
)

__all__ = [
    # building a Collection
    "build_collection",
    "collection_id_for",
    "inspect_zarr_store",
    "open_store_dataset",
    "ZarrStoreInfo",
    "CFCoordinates",
    "find_coordinates",
    "spatial_bbox",
    "temporal_interval",
    "longitude_interval",
    "to_utc_datetime",
    "iso_duration",
    "cube_dimensions",
    "cube_variables",
    "read_meta_yaml",
    "provenance",
    "provenance_attrs",
    "provenance_from_attrs",
    "public_storage_options",
    "public_url",
    # writing, linking and reading documents
    "write_collection",
    "write_store_collection",
    "write_quicklook",
    "main_variable",
    "update_catalog",
    "link_collection",
    "FsspecStacIO",
    "read_json",
    "write_json",
    "join_href",
    "resolve_href",
    "portable_href",
    "open_dataset_from_collection",
    # validation
    "OfflineSTACValidator",
    "validate_stac",
    "validate_stac_file",
    "validate_stac_tree",
    "validate_stac_path",
    "schema_urls",
    "default_schemas_dir",
    "packaged_schemas_dir",
    "SCHEMAS_ENV",
    # names and URLs of the documents
    "STAC_VERSION",
    "DATACUBE_EXTENSION",
    "ZARR_EXTENSION",
    "ZARR_MEDIA_TYPE",
    "ZARR_ASSET_KEY",
    "OPEN_KWARGS_FIELD",
    "STORAGE_OPTIONS_FIELD",
    "XARRAY_EXTENSION",
    "PROVENANCE_FIELD",
    "QUICKLOOK_NAME",
    "CATALOG_NAME",
    "COLLECTION_NAME",
    "STAC_FOLDER",
    "GLOBAL_BBOX",
    "MAX_LISTED_VALUES",
    "PROVIDER_ROLES",
]
