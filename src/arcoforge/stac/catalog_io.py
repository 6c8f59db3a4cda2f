"""Reading, writing and updating STAC JSON documents on any fsspec filesystem.

Owns :class:`FsspecStacIO`, a pystac :class:`~pystac.StacIO` that reads and
writes through fsspec with arcoforge's storage options (local paths, ``s3://``,
``gs://``, ``memory://``, ...), so pystac itself (``Catalog.from_file``,
``save``) and our own code share one I/O path. Local files are replaced
atomically: a reader of ``catalog.json`` sees the old document or the new one,
never half of one. Also owns the layout of the ``stac`` folder
(``stac/catalog.json``, ``stac/<id>/collection.json``), relative hrefs, and
:func:`update_catalog`, which links a Collection from the root Catalog without
duplicating its entry.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Mapping
from typing import Any

import pystac

CATALOG_NAME = "catalog.json"
COLLECTION_NAME = "collection.json"
STAC_FOLDER = "stac"


class FsspecStacIO(pystac.StacIO):
    """A pystac ``StacIO`` on fsspec: any URL fsspec knows, opened with ``storage_options``.

    ``storage_options`` are either flat (applied to remote URLs only) or keyed by
    protocol, as everywhere in arcoforge (:func:`arcoforge.io.filesystems.options_for`).
    JSON is written indented, UTF-8, and without NaN (which JSON has not).
    """

    def __init__(self, storage_options: Mapping[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(headers=headers)
        self.storage_options = dict(storage_options or {})

    def filesystem(self, href: str | os.PathLike) -> tuple[Any, str]:
        """The fsspec filesystem and path of ``href``, with the options that apply to it."""
        from ..io.filesystems import filesystem, options_for

        url = os.fspath(href)
        return filesystem(url, options_for(url, self.storage_options))

    def exists(self, href: str | os.PathLike) -> bool:
        """Whether a document exists at ``href``."""
        fs, path = self.filesystem(href)
        return bool(fs.exists(path))

    def read_text(self, source: Any, *_: Any, **__: Any) -> str:
        """The text at ``source`` (a path, URL or pystac Link); FileNotFoundError if there is none."""
        fs, path = self.filesystem(source)
        return fs.cat_file(path).decode("utf-8")

    def write_text(self, dest: Any, txt: str, *_: Any, **__: Any) -> None:
        """Write ``txt`` at ``dest`` as UTF-8 (see :meth:`write_bytes`)."""
        self.write_bytes(dest, txt.encode("utf-8"))

    def write_bytes(self, dest: str | os.PathLike, data: bytes) -> None:
        """Write ``data`` at ``dest``, creating folders; a local file is replaced atomically."""
        from ..io.atomic import write_atomically

        fs, path = self.filesystem(dest)
        fs.makedirs(fs._parent(path), exist_ok=True)
        write_atomically(path, data, fs)  # object stores replace an object in one request

    def json_loads(self, txt: str, *_: Any, **__: Any) -> dict[str, Any]:
        """Parse JSON with the standard library (one error type whatever else is installed)."""
        return json.loads(txt)

    def json_dumps(self, json_dict: dict[str, Any], *_: Any, **__: Any) -> str:
        """JSON as arcoforge writes it: two-space indent, UTF-8 characters kept, a final newline."""
        return json.dumps(json_dict, indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    def read_json(self, source: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON object at ``source``; ValueError naming it when it is not JSON or not an object."""
        text = self.read_text(source, *args, **kwargs)
        name = os.fspath(source)
        try:
            document = self.json_loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} is not JSON: {error}") from error
        if not isinstance(document, dict):
            raise ValueError(f"{name}: expected a JSON object, got {type(document).__name__}")
        return document


def read_json(path: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON object at a path or fsspec URL (read with ``storage_options``), or None if there is none."""
    stac_io = FsspecStacIO(storage_options)
    if not stac_io.exists(path):
        return None
    return stac_io.read_json(os.fspath(path))


def write_json(path: str | os.PathLike, document: Mapping[str, Any],
               storage_options: Mapping[str, Any] | None = None) -> None:
    """Write JSON at a path or fsspec URL (with ``storage_options``); local files are replaced atomically."""
    FsspecStacIO(storage_options).save_json(os.fspath(path), dict(document))


def join_href(root: str | os.PathLike, *parts: str) -> str:
    """``root`` joined with ``parts``: with ``/`` for URLs, with the OS separator for local paths."""
    root = str(root)
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def resolve_href(href: str, document_path: str | None) -> str:
    """An asset or link href made usable: relative ones are taken relative to the document."""
    if "://" in href or os.path.isabs(href) or document_path is None:
        return href
    if "://" in document_path:
        scheme, rest = document_path.split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(posixpath.dirname(rest), href))
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(document_path)), href))


def path_under(href: str, root: str) -> str | None:
    """The ``/``-separated path of ``href`` inside ``root``, or None when it is not under it.

    Both are paths or URLs of the same filesystem (local paths made absolute first).

    >>> path_under("s3://b/out/sst.zarr/", "s3://b/out"), path_under("s3://b/x.zarr", "s3://b/out")
    ('sst.zarr', None)
    """
    href, root = str(href).rstrip("/"), str(root).rstrip("/")
    if ("://" in href) != ("://" in root):
        return None
    if "://" not in href:
        href, root = os.path.abspath(href), os.path.abspath(root)
        inside = os.path.relpath(href, root) if os.path.commonpath([href, root]) == root else None
        return None if inside in (None, ".") else inside.replace(os.sep, "/")
    return href[len(root) + 1:] if href.startswith(root + "/") else None


def portable_href(href: str, document_folder: str, root: str, public_root: str | None = None) -> str:
    """The href a published document gives for ``href``, so that the folder ``root`` can be copied anywhere.

    A target under ``root``: with ``public_root`` (where the copy of ``root`` is
    published) the same path under it, else a path relative to
    ``document_folder`` (itself under ``root``). A target elsewhere keeps its
    absolute href.

    >>> portable_href("/d/out/sst.zarr", "/d/out/stac/sst", "/d/out")
    '../../sst.zarr'
    >>> portable_href("/d/out/sst.zarr", "/d/out/stac/sst", "/d/out", "https://data.org/arco/")
    'https://data.org/arco/sst.zarr'
    >>> portable_href("s3://other/sst.zarr", "s3://b/out/stac/sst", "s3://b/out")
    's3://other/sst.zarr'
    """
    inside = path_under(href, root)
    if inside is None:
        return href
    if public_root:
        return f"{str(public_root).rstrip('/')}/{inside}"
    folder = path_under(document_folder, root)
    return posixpath.relpath(inside, folder) if folder else f"./{inside}"


def _normalize_relative(href: str) -> str:
    return href[2:] if href.startswith("./") else href


def update_catalog(
    catalog_path: str,
    collection: pystac.Collection | Mapping[str, Any],
    *,
    catalog_id: str = "arcoforge",
    title: str = "arcoforge stores",
    description: str = "Zarr stores baked by arcoforge, one STAC Collection each.",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Link ``collection`` from the root catalog at ``catalog_path``, creating it if needed.

    ``collection`` is a pystac Collection or its dict (a collection.json read
    back). The child link of a collection already listed is replaced where it
    stands, so re-running a recipe updates its entry instead of adding a
    duplicate. Returns the catalog as written.
    """
    if isinstance(collection, pystac.Collection):
        collection_id, collection_title = collection.id, collection.title
    else:
        collection_id, collection_title = str(collection["id"]), collection.get("title")
    existing = read_json(catalog_path, storage_options)
    if existing is not None and existing.get("type") != "Catalog":
        raise ValueError(f"{catalog_path} is a {existing.get('type')!r} document, expected a STAC Catalog")
    catalog = (pystac.Catalog.from_dict(existing, migrate=False, preserve_dict=True) if existing
               else pystac.Catalog(id=catalog_id, description=description, title=title))
    child_href = f"./{collection_id}/{COLLECTION_NAME}"
    child = pystac.Link("child", child_href, media_type=pystac.MediaType.JSON, title=collection_title or collection_id)
    links = [link for link in catalog.links if link.rel not in ("self", "root")]
    for position, link in enumerate(links):
        href = _normalize_relative(str(link.get_href(transform_href=False)))
        if link.rel == "child" and href == _normalize_relative(child_href):
            links[position] = child
            break
    else:
        links.append(child)
    catalog.links = [pystac.Link("root", f"./{CATALOG_NAME}", media_type=pystac.MediaType.JSON)] + links
    document = catalog.to_dict(include_self_link=False, transform_hrefs=False)
    write_json(catalog_path, document, storage_options)
    return document


def link_collection(output_root: str, collection_path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Link a written collection from ``<output_root>/stac/catalog.json``."""
    document = read_json(collection_path, storage_options)
    if document is None:
        raise ValueError(f"{collection_path}: no such collection")
    return update_catalog(join_href(output_root, STAC_FOLDER, CATALOG_NAME), document,
                          storage_options=storage_options)
