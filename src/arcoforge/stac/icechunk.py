"""The STAC asset of an Icechunk repository: what it is, which snapshot was published, how to open it.

Following the conventions the Icechunk and STAC communities use today (the
``application/vnd.zarr+icechunk`` media type that xpystac dispatches on, the
Zarr extension's fields, the snapshot id as the asset's version), the asset
records the snapshot the collection describes and the branch it was read
from, the repository's storage as Icechunk's own constructors take it (never
a secret), and, for virtual stores, the virtual chunk containers readers must
authorize.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pystac
import xarray as xr

logger = logging.getLogger(__name__)

ICECHUNK_MEDIA_TYPE = "application/vnd.zarr+icechunk"


def is_icechunk(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``url`` holds an Icechunk repository (False too when Icechunk is not installed)."""
    from ..io.icechunk_store import is_repository

    return is_repository(url, storage_options)


def open_icechunk_dataset(url: str, storage_options: Mapping[str, Any] | None = None,
                          branch: str = "main") -> tuple[xr.Dataset, str, list[str]]:
    """The branch's dataset (lazily), its snapshot id, and the repository's virtual chunk container prefixes."""
    from ..io.icechunk_store import open_repository
    from ..io.redaction import public_url

    repo = open_repository(url, storage_options, create=False)
    containers = sorted((repo.config.virtual_chunk_containers or {}).keys())
    if containers:  # reading the coordinates of a virtual store needs its containers authorized
        repo = open_repository(url, storage_options, create=False, virtual_credentials={p: None for p in containers})
    session = repo.readonly_session(branch=branch)
    ds = xr.open_zarr(session.store, consolidated=False)
    ds.encoding["source"] = public_url(url)
    return ds, session.snapshot_id, containers


def storage_fields(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """How Icechunk's storage constructor reaches the repository, without secrets."""
    from ..io.filesystems import options_for

    if "://" not in url or url.startswith("file://"):
        return {"icechunk:storage": "local_filesystem_storage"}
    bucket, _, prefix = url.split("://", 1)[1].partition("/")
    options = options_for(url, storage_options)
    fields: dict[str, Any] = {"icechunk:storage": "s3_storage", "icechunk:bucket": bucket,
                              "icechunk:prefix": prefix.rstrip("/")}
    endpoint = options.get("endpoint_url")
    region = (options.get("client_kwargs") or {}).get("region_name")
    if endpoint:
        fields["icechunk:endpoint_url"] = endpoint
    if region:
        fields["icechunk:region"] = region
    if options.get("anon"):
        fields["icechunk:anonymous"] = True
    return fields


def icechunk_asset(url: str, snapshot_id: str, branch: str = "main",
                   storage_options: Mapping[str, Any] | None = None,
                   virtual_containers: list[str] | None = None) -> pystac.Asset:
    """The collection's asset for the repository at ``url``, published at ``snapshot_id``."""
    import os

    from ..io.redaction import public_url

    href = public_url(url if "://" in url else os.path.abspath(url))
    roles = ["data", "virtual", "references"] if virtual_containers else ["data"]
    opener = ("repo = icechunk.Repository.open(icechunk.local_filesystem_storage(href))" if "://" not in url
              else "repo = icechunk.Repository.open(icechunk.s3_storage(bucket=..., prefix=..., ...))")
    fields: dict[str, Any] = {
        "zarr:zarr_format": 3, "zarr:consolidated": False, "zarr:node_type": "group",
        "version": snapshot_id, "icechunk:snapshot_id": snapshot_id, "icechunk:branch": branch,
        **storage_fields(url, storage_options),
    }
    if virtual_containers:
        fields["icechunk:virtual_chunk_containers"] = list(virtual_containers)
    authorize = (" with authorize_virtual_chunk_access={prefix: credentials} for each of "
                 "icechunk:virtual_chunk_containers" if virtual_containers else "")
    return pystac.Asset(
        href=href,
        title=f"Icechunk repository {href.rstrip('/').rsplit('/', 1)[-1]}",
        description=(f"An Icechunk repository (Zarr v3; a relative href is relative to this document). "
                     f"Open the published version with {opener}{authorize}; "
                     "xarray.open_zarr(repo.readonly_session(snapshot_id=asset['icechunk:snapshot_id']).store, "
                     "consolidated=False), or the branch's latest with readonly_session(branch=...)."),
        media_type=ICECHUNK_MEDIA_TYPE,
        roles=roles,
        extra_fields=fields,
    )


def open_icechunk_asset(asset: Mapping[str, Any], href: str, storage_options: Mapping[str, Any] | None = None,
                        virtual_credentials: Mapping[str, Any] | None = None, **open_kwargs: Any) -> xr.Dataset:
    """The snapshot an Icechunk asset records, opened with xarray.

    ``storage_options`` reach the repository (credentials the document does not
    hold); ``virtual_credentials`` maps the asset's virtual chunk containers to
    Icechunk credentials (default: none, as for local files and public HTTP).
    """
    from ..io.icechunk_store import open_repository

    options = dict(storage_options or {})
    if asset.get("icechunk:endpoint_url") and "endpoint_url" not in options:
        options["endpoint_url"] = asset["icechunk:endpoint_url"]
    if asset.get("icechunk:region"):
        options.setdefault("client_kwargs", {}).setdefault("region_name", asset["icechunk:region"])
    if asset.get("icechunk:anonymous"):
        options.setdefault("anon", True)
    containers = asset.get("icechunk:virtual_chunk_containers") or []
    credentials = {prefix: (virtual_credentials or {}).get(prefix) for prefix in containers}
    repo = open_repository(href, options or None, create=False, virtual_credentials=credentials or None)
    session = repo.readonly_session(snapshot_id=asset["icechunk:snapshot_id"])
    return xr.open_zarr(session.store, consolidated=False, **open_kwargs)
