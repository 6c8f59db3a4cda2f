"""Names from a recipe that become paths: checked so that nothing is written outside the target root.

``store_name``, recipe and collection ids and other names a recipe supplies are
joined to a root the user chose (``--target-root``, a cache root). A name is
accepted only as a relative path of plain segments: no ``..`` or ``.`` segment,
no empty segment (``a//b``), no leading ``/``, no backslash, no URL scheme or
drive letter, no control character. Anything else is refused with a
:class:`RecipeError` naming the field, before anything is written, on local
paths and object stores alike (where ``..`` would be a literal key segment).
"""

from __future__ import annotations

import re

from .errors import RecipeError

_SCHEME_OR_DRIVE = re.compile(r"^[A-Za-z][\w+.-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_relative_path(value: object, field: str, single_segment: bool = False) -> str:
    """``value`` as a relative path that stays under any root it is joined to, or a :class:`RecipeError`.

    One trailing ``/`` is dropped; ``single_segment`` refuses any ``/`` (an id
    that names one folder).

    >>> safe_relative_path("sub/sst.zarr/", "store_name")
    'sub/sst.zarr'
    >>> safe_relative_path("../../x.zarr", "store_name")
    Traceback (most recent call last):
    ...
    arcoforge.errors.RecipeError: store_name '../../x.zarr' would leave the target root: it has a '..' segment; \
expected a relative name like 'sst.zarr' (plain segments joined by '/') (arcoforge:recipe)
    """
    text = value if isinstance(value, str) else ""
    why = _problem(text[:-1] if text.endswith("/") and len(text) > 1 else text, single_segment) \
        if isinstance(value, str) else f"it is a {type(value).__name__}, not a string"
    if why:
        raise RecipeError(f"{field} {value!r} would leave the target root: {why}; expected a relative name like "
                          f"'sst.zarr' ({'one segment, no /' if single_segment else 'plain segments joined by /'})"
                          .replace("by /", "by '/'"))
    return text[:-1] if text.endswith("/") and len(text) > 1 else text


def _problem(text: str, single_segment: bool) -> str | None:
    if not text.strip():
        return "it is empty"
    if "\\" in text:
        return "it has a backslash"
    if _CONTROL.search(text):
        return "it has a control character"
    if text.startswith("/"):
        return "it is an absolute path"
    if "://" in text or _SCHEME_OR_DRIVE.match(text):
        return "it is a URL or a drive path"
    segments = text.split("/")
    if single_segment and len(segments) > 1:
        return "it has a '/'"
    if ".." in segments:
        return "it has a '..' segment"
    if "." in segments:
        return "it has a '.' segment"
    if "" in segments:
        return "it has an empty segment ('//')"
    if any(segment != segment.strip() for segment in segments):
        return "a segment starts or ends with a space"
    return None


def join_under(root: str, name: str, field: str) -> str:
    """``<root>/<name>`` for a checked ``name`` (see :func:`safe_relative_path`).

    >>> join_under("s3://bucket/out/", "sst.zarr", "store_name")
    's3://bucket/out/sst.zarr'
    """
    return root.rstrip("/") + "/" + safe_relative_path(name, field)
