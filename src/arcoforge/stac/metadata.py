"""Descriptive metadata of a Collection: feedstock ``meta.yaml``, licence, providers, keywords, provenance.

Owns the translation of what a recipe's author wrote (a pangeo-forge
``meta.yaml`` or keyword arguments) into STAC fields, forgiving odd input with
a warning rather than an invalid document (a licence that is not SPDX becomes
``other``, a provider role STAC does not know is left out), and the provenance
record (recipe and pattern hashes, library versions, bake time) written both
into the Collection and into the store's global attributes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pystac
import xarray as xr

logger = logging.getLogger(__name__)

PROVIDER_ROLES = ("producer", "licensor", "processor", "host")
_LICENSE_PATTERN = re.compile(r"^[\w\-\.\+]+$")


def read_meta_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A pangeo-forge feedstock ``meta.yaml`` as a dict (for ``build_collection(metadata=...)``)."""
    import yaml

    with open(path, encoding="utf-8") as file:
        meta = yaml.safe_load(file) or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a mapping at the top of meta.yaml, got {type(meta).__name__}")
    return meta


def license_id(value: Any, links: list[pystac.Link]) -> str:
    """The STAC ``license`` for ``value``: an SPDX id as is, else ``other`` (a URL is appended to ``links``)."""
    if value is None or not str(value).strip():
        logger.warning("no license given (meta.yaml provenance.license or license=...); the collection says 'other'")
        return "other"
    text = str(value).strip()
    if _LICENSE_PATTERN.match(text):
        return text
    if re.match(r"^https?://", text):
        links.append(pystac.Link("license", text, title="License"))
        return "other"
    logger.warning("license %r is not an SPDX identifier; the collection says 'other'", text)
    return "other"


def providers_list(value: Any) -> list[pystac.Provider]:
    """STAC providers from ``meta.yaml`` entries (names or mappings); nameless entries and unknown roles dropped."""
    providers = []
    for index, entry in enumerate(value or []):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not str(entry.get("name") or "").strip():
            logger.warning("provider #%d %r has no name; it is left out", index, entry)
            continue
        roles = entry.get("roles") or []
        roles = [roles] if isinstance(roles, str) else list(roles)
        bad = [r for r in roles if r not in PROVIDER_ROLES]
        if bad:
            logger.warning("provider %r: roles %s are not STAC roles %s; they are left out",
                           entry["name"], bad, list(PROVIDER_ROLES))
        providers.append(pystac.Provider(
            name=str(entry["name"]).strip(),
            description=str(entry["description"]) if entry.get("description") else None,
            roles=[pystac.ProviderRole(r) for r in roles if r in PROVIDER_ROLES] or None,
            url=str(entry["url"]) if entry.get("url") else None,
        ))
    return providers


def keywords_list(value: Any) -> list[str] | None:
    """Keywords from a list or a comma-separated string, blanks dropped; None when there are none."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    keywords = [str(v).strip() for v in value if str(v).strip()]
    return keywords or None


def provenance(
    *,
    recipe_file: str | os.PathLike | None = None,
    recipe_source: str | bytes | None = None,
    pattern: Any = None,
    n_inputs: int | None = None,
    recipe_id: str | None = None,
    bake_time: dt.datetime | None = None,
) -> dict[str, Any]:
    """Where a store came from, as a flat JSON-ready dict (for STAC and for store attributes).

    Keys: ``recipe_id``, ``recipe_sha256`` (of the recipe file's bytes, or of
    ``recipe_source``), ``pattern_sha256`` (:meth:`FilePattern.sha256`, which
    leaves secrets out), ``n_inputs`` (defaults to the pattern's length),
    ``arcoforge_version``, ``xarray_version``, ``zarr_version`` and ``bake_time``
    (UTC, RFC 3339; now when not given). Unknown items are left out.
    """
    import zarr

    from .. import __version__

    result: dict[str, Any] = {}
    if recipe_id is not None:
        result["recipe_id"] = str(recipe_id)
    if recipe_file is not None:
        result["recipe_sha256"] = hashlib.sha256(Path(recipe_file).read_bytes()).hexdigest()
    elif recipe_source is not None:
        source = recipe_source.encode() if isinstance(recipe_source, str) else recipe_source
        result["recipe_sha256"] = hashlib.sha256(source).hexdigest()
    if pattern is not None:
        result["pattern_sha256"] = pattern.sha256().hex()
        if n_inputs is None:
            n_inputs = len(pattern)
    if n_inputs is not None:
        result["n_inputs"] = int(n_inputs)
    result["arcoforge_version"] = __version__
    result["xarray_version"] = xr.__version__
    result["zarr_version"] = zarr.__version__
    when = bake_time or dt.datetime.now(dt.timezone.utc)
    when = when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)
    result["bake_time"] = pystac.utils.datetime_to_str(when)
    return result


PROVENANCE_PREFIX = "arcoforge_"


def provenance_attrs(record: Mapping[str, Any], prefix: str = PROVENANCE_PREFIX) -> dict[str, Any]:
    """A provenance dict as flat global attributes (``arcoforge_recipe_sha256``, ...) for a store.

    A key that already starts with the prefix keeps its name (``arcoforge_version``, not
    ``arcoforge_arcoforge_version``).

    >>> provenance_attrs({"n_inputs": 3, "arcoforge_version": "0.1.0"})
    {'arcoforge_n_inputs': 3, 'arcoforge_version': '0.1.0'}
    """
    return {key if key.startswith(prefix) else f"{prefix}{key}": value for key, value in record.items()}


def provenance_from_attrs(attrs: Mapping[str, Any], prefix: str = PROVENANCE_PREFIX) -> dict[str, Any]:
    """The provenance record written by :func:`provenance_attrs`, read back from a store's attributes.

    Numpy scalars become plain values; ``arcoforge_version`` keeps its name.

    >>> provenance_from_attrs({"arcoforge_n_inputs": 3, "arcoforge_version": "0.1.0", "title": "SST"})
    {'n_inputs': 3, 'arcoforge_version': '0.1.0'}
    """
    record = {}
    for name, value in attrs.items():
        if not str(name).startswith(prefix) or name in _NOT_PROVENANCE:
            continue
        key = name if name == f"{prefix}version" else name[len(prefix):]
        record[key] = value.item() if hasattr(value, "item") else value
    return record


# Store attributes with the prefix that are not part of the provenance record.
_NOT_PROVENANCE = frozenset({"arcoforge_skipped_inputs"})
