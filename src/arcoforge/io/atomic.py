"""Writing a file so that a reader sees the old content or the new, never half of it.

Every document arcoforge rewrites in place (the input cache's manifests, bake
state, STAC documents, leases, the demo archive's files) must survive a kill in
the middle of the write, and a concurrent reader must never parse a torn file.
On a local filesystem that means writing under a temporary name beside the
target and renaming it over the target (``os.replace`` is atomic on POSIX and
Windows); object stores replace whole objects on every put, so there the bytes
are put directly. This module is the one place that knows how.

Temporary names end in ``.tmp-<pid>-<random>``, so code that lists a folder can
recognise (and clean up) the leftovers of a writer that was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

TEMPORARY_MARK = ".tmp-"


def temporary_name(path: str | os.PathLike[str]) -> str:
    """A fresh name beside ``path`` for writing it: unique per process and call.

    >>> temporary_name("/d/a.json").startswith("/d/a.json.tmp-")
    True
    """
    return f"{os.fspath(path)}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary local path to write; renamed over ``path`` when the block ends, removed if it fails.

    For writers that need a path rather than bytes (``Dataset.to_netcdf``)::

        with replacing(target) as tmp:
            ds.to_netcdf(tmp)
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def is_local_filesystem(fs: Any) -> bool:
    """Whether the fsspec filesystem ``fs`` (``None``: plain local paths) is this machine's disk."""
    if fs is None:
        return True
    protocol = fs.protocol
    return bool({"file", "local"} & set(protocol if isinstance(protocol, (tuple, list)) else (protocol,)))


def write_atomically(path: str | os.PathLike[str], data: bytes, fs: Any = None) -> None:
    """Write ``data`` to ``path`` whole or not at all, creating its folder if needed.

    ``fs`` is the fsspec filesystem ``path`` belongs to (``None``: a local path).
    Locally the bytes go to a temporary name first and are renamed into place;
    on a remote filesystem they are put as one object.
    """
    if is_local_filesystem(fs):
        parent = os.path.dirname(os.fspath(path))
        if parent:
            os.makedirs(parent, exist_ok=True)
        with replacing(path) as tmp:
            with open(tmp, "wb") as out:
                out.write(data)
    else:
        fs.makedirs(fs._parent(os.fspath(path)), exist_ok=True)
        fs.pipe_file(os.fspath(path), data)


def write_json_atomically(path: str | os.PathLike[str], document: Any, fs: Any = None, **dumps_options: Any) -> None:
    """Write ``document`` as JSON (``json.dumps(document, **dumps_options)``, UTF-8), atomically as above."""
    write_atomically(path, json.dumps(document, **dumps_options).encode("utf-8"), fs)
