"""A store's metadata documents, handled as bytes: rendered, grown, consolidated and ordered for publishing.

A bake never lets a reader find metadata that describes chunks not yet
written. It renders every metadata document in memory, writes chunks through
arrays opened from those documents (not from the store), and publishes the
documents last: arrays first, then the root group, whose consolidated
metadata (``zarr.json`` in Zarr v3, ``.zmetadata`` in v2) is what readers use.
An append grows the shapes of the store's documents the same way, so its
chunks beyond the old extent are written while readers still see the old store.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import xarray as xr
import zarr

METADATA_NAMES = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")
# The root documents of each Zarr format, in the order they are published: the group appears last.
ROOT_ORDER = {2: (".zmetadata", ".zattrs", ".zgroup"), 3: ("zarr.json",)}
# The document holding the consolidated metadata: its write is an append's commit point.
COMMIT_KEY = {2: ".zmetadata", 3: "zarr.json"}


def is_metadata_key(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA_NAMES


def render_template(template: xr.Dataset, zarr_format: int) -> dict[str, bytes]:
    """Every file of a template store (metadata documents and concat coordinate chunks), in memory."""
    files: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        template.to_zarr(zarr.storage.MemoryStore(files), mode="w", compute=False, consolidated=False,
                         zarr_format=zarr_format)
    return {key: buffer.to_bytes() for key, buffer in files.items()}


def consolidated(documents: Mapping[str, bytes], zarr_format: int) -> dict[str, bytes]:
    """The metadata documents with the root's consolidated metadata (re)computed from the arrays' own."""
    from zarr.core.buffer import default_buffer_prototype

    prototype = default_buffer_prototype()
    files = {key: prototype.buffer.from_bytes(data) for key, data in documents.items()
             if is_metadata_key(key) and key != ".zmetadata"}
    store = zarr.storage.MemoryStore(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(store, zarr_format=zarr_format)
    return {key: buffer.to_bytes() for key, buffer in files.items() if is_metadata_key(key)}


def publication_order(keys: Iterable[str], zarr_format: int) -> tuple[list[str], list[str]]:
    """(array documents, root documents in the order to write them): the root, and so the store, last."""
    keys = set(keys)
    roots = [key for key in ROOT_ORDER[zarr_format] if key in keys]
    return sorted(keys - set(roots)), roots


def array_dims(documents: Mapping[str, bytes], name: str, zarr_format: int) -> tuple[str, ...]:
    if zarr_format == 3:
        return tuple(json.loads(documents[f"{name}/zarr.json"]).get("dimension_names") or ())
    attrs = json.loads(documents.get(f"{name}/.zattrs", b"{}"))
    return tuple(attrs.get("_ARRAY_DIMENSIONS") or ())


def array_names(documents: Mapping[str, bytes], zarr_format: int) -> list[str]:
    if zarr_format == 3:
        return sorted(key[: -len("/zarr.json")] for key, data in documents.items()
                      if key.endswith("/zarr.json") and json.loads(data).get("node_type") == "array")
    return sorted(key[: -len("/.zarray")] for key in documents if key.endswith("/.zarray"))


def grow_documents(documents: Mapping[str, bytes], dim: str, length: int, zarr_format: int) -> dict[str, bytes]:
    """The documents of the store once ``dim`` is ``length`` long, consolidated; chunks and codecs unchanged."""
    grown = dict(documents)
    for name in array_names(documents, zarr_format):
        dims = array_dims(documents, name, zarr_format)
        if dim not in dims:
            continue
        key = f"{name}/zarr.json" if zarr_format == 3 else f"{name}/.zarray"
        document = json.loads(documents[key])
        document["shape"][dims.index(dim)] = int(length)
        grown[key] = json.dumps(document, indent=2).encode()
    return consolidated(grown, zarr_format)
