"""Validate STAC documents against the official JSON schemas, offline, with the schemas arcoforge ships.

The schemas of STAC core (1.0.0, 1.1.0), the datacube, zarr and xarray-assets
extensions and what they refer to (GeoJSON, PROJJSON) are package data in
``arcoforge/stac_schemas``, laid out by URL (``<host>/<path>``; see its
SOURCES.md for where each came from and its licence). Every ``$ref`` is
resolved from them or from ``jsonschema-specifications`` (the draft-07
meta-schema); nothing is ever fetched, so validation works the same after
``pip install``, in CI and without a network. ``$ARCOFORGE_STAC_SCHEMAS`` or a
``schemas_dir`` argument names another folder with the same layout instead.

:class:`OfflineSTACValidator` is that check on pystac's ``STACValidator``
interface, so pystac objects validate offline too
(``collection.validate(validator=OfflineSTACValidator())``);
:func:`validate_stac` returns its errors as a list instead of raising.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .catalog_io import read_json, resolve_href

SCHEMAS_ENV = "ARCOFORGE_STAC_SCHEMAS"
_CORE_SCHEMAS = {
    "Catalog": "catalog-spec/json-schema/catalog.json",
    "Collection": "collection-spec/json-schema/collection.json",
    "Feature": "item-spec/json-schema/item.json",
}
# The zarr extension v1.0.0 applies its field definitions to Item assets only (fixed in v1.1.0).
_ZARR_V1_0 = "https://stac-extensions.github.io/zarr/v1.0.0/schema.json"


def packaged_schemas_dir() -> Path:
    """The folder of schemas installed with arcoforge (``arcoforge/stac_schemas``)."""
    return Path(str(resources.files("arcoforge") / "stac_schemas"))


def default_schemas_dir() -> Path:
    """The schema folder named by ``$ARCOFORGE_STAC_SCHEMAS`` if set, else the packaged one."""
    value = os.environ.get(SCHEMAS_ENV)
    return Path(value) if value else packaged_schemas_dir()


@functools.lru_cache(maxsize=4)
def _schema_registry(schemas_dir: str):
    """A ``referencing`` registry of every schema file under ``schemas_dir``, retrieving nothing else.

    A file at ``<host>/<path>`` is registered under ``https://<host>/<path>`` and
    under the ``$id`` it declares (with and without a trailing ``#``): some
    official files declare ids that differ from where they are published
    (v1.1.0 ``common.json`` says ``.../commonjson``). The draft-07 meta-schema
    comes from ``jsonschema-specifications``.
    """
    from jsonschema_specifications import REGISTRY as META_SCHEMAS
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT7

    root = Path(schemas_dir)
    resources_by_uri = []
    for file in sorted(root.rglob("*.json")):
        try:
            contents = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"schema file {file} is not JSON: {error}") from error
        resource = Resource.from_contents(contents, default_specification=DRAFT7)
        uris = {"https://" + file.relative_to(root).as_posix()}
        declared = contents.get("$id") if isinstance(contents, dict) else None
        if isinstance(declared, str):
            uris |= {declared, declared.rstrip("#")}
        resources_by_uri.extend((uri, resource) for uri in uris)
    if not resources_by_uri:
        raise FileNotFoundError(f"STAC schema folder {root} holds no .json schema files")

    def offline(uri: str):
        raise NoSuchResource(ref=uri)

    return Registry(retrieve=offline).with_resources(resources_by_uri).combine(META_SCHEMAS)


def _resolve_schemas_dir(schemas_dir: str | os.PathLike | None) -> Path:
    folder = Path(schemas_dir) if schemas_dir is not None else default_schemas_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"STAC schema folder {folder} does not exist (set {SCHEMAS_ENV} or pass schemas_dir, "
                                "or leave both unset for the schemas installed with arcoforge)")
    return folder.resolve()


def core_schema_url(kind: str, version: str) -> str | None:
    """The URL of the core schema of a STAC document type (``Catalog``, ``Collection``, ``Feature``)."""
    return f"https://schemas.stacspec.org/v{version}/{_CORE_SCHEMAS[kind]}" if kind in _CORE_SCHEMAS else None


def schema_urls(document: Mapping[str, Any]) -> list[str]:
    """The core schema URL for a document's type and STAC version, then its extension schemas."""
    kind = document.get("type")
    version = document.get("stac_version")
    urls = []
    if kind in _CORE_SCHEMAS and isinstance(version, str):
        urls.append(core_schema_url(kind, version))
    extensions = document.get("stac_extensions") or []
    urls.extend(str(url) for url in extensions if isinstance(extensions, list))
    return urls


def _deepest_relevant(error: Any) -> Any:
    """The error inside a failed ``oneOf``/``anyOf`` that explains it.

    Extension schemas branch on the document type (Item or Collection), on where
    fields are (top level or assets) and on the dimension type. A branch that
    failed on a ``type`` field is the wrong branch; of the others, the one whose
    errors reach deepest into the document is the one the document meant (it
    matched furthest), then the one with the fewest errors.
    """
    from jsonschema.exceptions import relevance

    while error.context:
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            key = sub.relative_schema_path[0] if sub.relative_schema_path else None
            branches.setdefault(key, []).append(sub)
        right_type = [errs for errs in branches.values()
                      if not any(list(e.absolute_path)[-1:] == ["type"] for e in errs)]
        chosen = min(right_type or list(branches.values()),
                     key=lambda errs: (-max(len(e.absolute_path) for e in errs), len(errs)))
        error = max(chosen, key=relevance)
    return error


def _error_message(name: str, error: Any, schema_url: str, prefix: str = "") -> str:
    """One line: the document, the failing field (a JSON path), what was wrong, and the schema."""
    leaf = _deepest_relevant(error)
    where = "/".join([prefix] * bool(prefix) + [str(part) for part in leaf.absolute_path]) or "(top level)"
    return f"{name}: field {where}: {leaf.message} [schema {schema_url}]"


class OfflineSTACValidator:
    """A pystac validator that checks against a local schema folder and never touches the network.

    ``collection.validate(validator=OfflineSTACValidator())`` validates a pystac
    object with the schemas shipped with arcoforge (or ``schemas_dir``, else
    ``$ARCOFORGE_STAC_SCHEMAS``); a failure raises :class:`pystac.STACValidationError`
    whose message holds arcoforge's one-line errors and whose ``source`` is their
    list. :meth:`errors` is the same check returning every error at once, as
    :func:`validate_stac` does. pystac's own ``JsonSchemaSTACValidator`` cannot
    be given a schema registry (pystac 1.15) and fetches what it does not bundle,
    hence this class. It implements pystac's ``STACValidator`` interface and is
    registered as one when first built: subclassing it would import jsonschema
    with ``arcoforge.stac``, which every recipe imports, for a check run once per bake.
    """

    def __init__(self, schemas_dir: str | os.PathLike | None = None) -> None:
        from pystac.validation import STACValidator

        STACValidator.register(OfflineSTACValidator)
        self.folder = _resolve_schemas_dir(schemas_dir)
        self.registry = _schema_registry(str(self.folder))

    def _schema(self, url: str) -> dict[str, Any] | None:
        from referencing.exceptions import NoSuchResource

        try:
            return self.registry.contents(url)
        except NoSuchResource:
            return None

    def _missing(self, url: str, name: str) -> str:
        return f"{name}: schema {url} is not in {self.folder}; the document cannot be validated against it"

    def _check(self, url: str, schema: dict[str, Any], instance: Any, name: str, prefix: str = "") -> list[str]:
        """Error lines of ``instance`` against ``schema`` (published at ``url``), each once."""
        from jsonschema import Draft7Validator
        from jsonschema.validators import validator_for
        from referencing.exceptions import Unresolvable

        cls = validator_for(schema, default=Draft7Validator)
        validator = cls(schema, registry=self.registry, format_checker=cls.FORMAT_CHECKER)
        try:
            found = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
        except Unresolvable as error:
            return [f"{name}: schema {url} refers to {error.ref}, which is not in {self.folder}"]
        return list(dict.fromkeys(_error_message(name, error, url, prefix) for error in found))

    @staticmethod
    def _zarr_asset_checks(document: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], Any, str]]:
        """The zarr extension v1.0.0 defines its asset fields for Items only; Collections' assets are checked here."""
        fields_url = _ZARR_V1_0 + "#/definitions/fields"
        return [(fields_url, {"$ref": fields_url}, asset, f"assets/{key}")
                for key, asset in (document.get("assets") or {}).items()]

    def errors(self, document: Mapping[str, Any], name: str = "document") -> list[str]:
        """Every error of ``document`` against its core schema and the extension schemas it declares."""
        errors: list[str] = []
        if document.get("type") not in _CORE_SCHEMAS:
            errors.append(f"{name}: field type: {document.get('type')!r} is not one of {sorted(_CORE_SCHEMAS)}")
        if not isinstance(document.get("stac_version"), str):
            errors.append(f"{name}: field stac_version: missing or not a string")
        checks: list[tuple[str, dict[str, Any], Any, str]] = []
        for url in schema_urls(document):
            schema = self._schema(url)
            if schema is None:
                errors.append(self._missing(url, name))
            else:
                checks.append((url, schema, document, ""))
        if document.get("type") == "Collection" and _ZARR_V1_0 in (document.get("stac_extensions") or []):
            checks.extend(self._zarr_asset_checks(document))
        for url, schema, instance, prefix in checks:
            errors.extend(m for m in self._check(url, schema, instance, name, prefix) if m not in errors)
        return errors

    def _validate_against(self, url: str, stac_dict: dict[str, Any], kind: str, href: str | None) -> str:
        name = href or f"{kind} {stac_dict.get('id')!r}"
        schema = self._schema(url)
        errors = [self._missing(url, name)] if schema is None else self._check(url, schema, stac_dict, name)
        if url == _ZARR_V1_0 and kind == "Collection":
            for fields_url, fields, asset, prefix in self._zarr_asset_checks(stac_dict):
                errors.extend(self._check(fields_url, fields, asset, name, prefix))
        if errors:
            from pystac import STACValidationError

            raise STACValidationError("\n".join(errors), source=errors)
        return url

    def validate(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                 extensions: list[str], href: str | None = None) -> list[str]:
        """pystac's entry point: the core schema, then each extension; returns the schema URLs checked."""
        document = json.loads(json.dumps(stac_dict))  # tuples become lists, as the schemas expect
        core = self.validate_core(document, stac_object_type, stac_version, href)
        checked = [core] if core is not None else []
        for extension in extensions:
            checked.append(self.validate_extension(document, stac_object_type, stac_version, extension, href))
        return checked

    def validate_core(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                      href: str | None = None) -> str | None:
        """Validate against the core schema; returns its URL, raises STACValidationError listing the errors."""
        kind = str(getattr(stac_object_type, "value", stac_object_type))
        url = core_schema_url(kind, stac_version)
        return None if url is None else self._validate_against(url, stac_dict, kind, href)

    def validate_extension(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                           extension_id: str, href: str | None = None) -> str:
        """Validate against one extension schema; returns its URL, raises STACValidationError listing the errors."""
        kind = str(getattr(stac_object_type, "value", stac_object_type))
        return self._validate_against(extension_id, stac_dict, kind, href)


def validate_stac(
    document: Mapping[str, Any],
    schemas_dir: str | os.PathLike | None = None,
    name: str = "document",
) -> list[str]:
    """Validate a STAC document against its core schema and every extension schema it declares.

    Returns error messages naming ``name``, the failing field and the schema;
    an empty list means valid. The schemas come from ``schemas_dir``, else
    ``$ARCOFORGE_STAC_SCHEMAS``, else the packaged folder; a schema missing
    there is an error (nothing is fetched). Dates are format-checked when
    ``rfc3339-validator`` is installed. Collections with the zarr extension
    v1.0.0 also get their assets' ``zarr:`` fields checked against that
    schema's own field definitions, which it applies to Item assets only.
    """
    return OfflineSTACValidator(schemas_dir).errors(document, name)


def validate_stac_file(path: str | os.PathLike, schemas_dir: str | os.PathLike | None = None,
                       storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Validate the STAC document at ``path`` (local or fsspec URL); returns error messages."""
    try:
        document = read_json(str(path), storage_options)
    except ValueError as error:
        return [str(error)]
    if document is None:
        return [f"{path}: no such file"]
    return validate_stac(document, schemas_dir, name=str(path))


def validate_stac_tree(catalog_path: str | os.PathLike, schemas_dir: str | os.PathLike | None = None,
                       storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Validate a catalog and every document its ``child`` and ``item`` links lead to."""

    errors: list[str] = []
    seen: set[str] = set()
    pending = [str(catalog_path)]
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        errors.extend(validate_stac_file(path, schemas_dir, storage_options))
        try:
            document = read_json(path, storage_options) or {}
        except ValueError:
            continue  # reported by validate_stac_file
        for link in document.get("links", []):
            if isinstance(link, dict) and link.get("rel") in ("child", "item") and isinstance(link.get("href"), str):
                pending.append(resolve_href(link["href"], path))
    return errors


def validate_stac_path(path: str | os.PathLike, schemas_dir: str | os.PathLike | None = None,
                       storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Validate a document; a Catalog together with every document it links to (``arcoforge stac validate``)."""
    try:
        document = read_json(str(path), storage_options) or {}
    except ValueError:
        document = {}
    if document.get("type") == "Catalog":
        return validate_stac_tree(path, schemas_dir, storage_options)
    return validate_stac_file(path, schemas_dir, storage_options)
