"""What a bake records beside its store, so it can be resumed, published atomically and guarded.

The state of the store ``<root>/<name>`` lives in ``<root>/.arcoforge/<name>/``,
outside the store, so readers of the store never see it:

- ``plan.json``: the fingerprint of the write plan; a rerun whose plan has the
  same fingerprint resumes instead of starting over;
- ``done/<group>/<task>``: one empty marker per write task whose chunks are all
  written; a resumed bake skips those tasks;
- ``root/``: every metadata document of the store (arrays and root group,
  consolidated), held back while the bake runs so that readers of the store find
  no group (``GroupNotFoundError``) rather than fill values standing in for
  chunks not yet written;
- ``complete.json``: written last, once the metadata is published: the lengths
  of the concat dimensions and the inputs the store holds (older stores kept
  those in ``ingested.json``, still read);
- ``append.json`` and ``append/``: the journal of an append in progress (see
  :mod:`arcoforge.append_txn`);
- ``lease.json``: who is writing the store, renewed by a heartbeat; a second
  bake of the same store fails clearly instead of interleaving writes, unless
  the holder is dead (see :mod:`arcoforge.io.lease`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import fsspec

from .atomic import is_local_filesystem, write_atomically
from .lease import DEFAULT_TTL, LEASE_FILE, Lease, LeaseError, lease_file  # noqa: F401 (LeaseError: re-exported)

logger = logging.getLogger(__name__)

STATE_FOLDER = ".arcoforge"
# zarr's LocalStore writes a key to ``<key minus suffix>.<uuid4 hex>.partial`` and renames it;
# a writer killed in between leaves that file behind.
ABANDONED_WRITE = re.compile(r"\.[0-9a-f]{32}\.partial$")


def state_url(store_url: str) -> str:
    """Where the state of a store lives: beside it, in ``.arcoforge/<store name>``.

    >>> state_url("s3://bucket/out/sst.zarr")
    's3://bucket/out/.arcoforge/sst.zarr'
    """
    parent, _, name = store_url.rstrip("/").rpartition("/")
    return f"{parent}/{STATE_FOLDER}/{name}" if parent else f"{STATE_FOLDER}/{name}"


def fingerprint(document: Any) -> str:
    """A stable digest of a JSON-able description (of a write plan).

    The digest of ``json.dumps(document, sort_keys=True, default=repr)`` (sequences that
    are not lists, such as packed URLs, as lists), hashed as it is encoded: a plan of many
    inputs lists every URL, and its text is never held whole.
    """
    digest = hashlib.sha256()
    for chunk in json.JSONEncoder(sort_keys=True, default=lambda value: _as_json(value, repr)).iterencode(document):
        digest.update(chunk.encode())
    return digest.hexdigest()


class _JSONArray(list):
    """A sequence that JSON's pure-Python encoder (``iterencode``, or any ``indent``) writes as an array as it
    iterates it, rather than a copy as a list: packed URLs stay packed (a list of 100,000 strs is ~12 MB)."""

    def __init__(self, items: Sequence[Any]) -> None:
        super().__init__()
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _as_json(value: Any, otherwise: Any) -> Any:
    """What JSON encodes for ``value``, which it cannot: a sequence as an array, else ``otherwise(value)``."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return _JSONArray(value)
    return otherwise(value)


def json_bytes(document: Any) -> bytes:
    """``document`` as indented JSON text, UTF-8, built a chunk at a time (sequences streamed as arrays).

    ``"".join`` of the encoder's chunks would first list them all: ~70 bytes of
    objects for each of the ~3 chunks a URL of a 100,000-input plan takes.

    >>> json_bytes({"urls": ("a.nc", "b.nc")}) == json.dumps({"urls": ["a.nc", "b.nc"]}, indent=2).encode()
    True
    """
    text = io.BytesIO()
    for chunk in json.JSONEncoder(indent=2, default=lambda value: _as_json(value, str)).iterencode(document):
        text.write(chunk.encode())
    return text.getvalue()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class StoreState:
    """The state folder of one store, on any fsspec filesystem."""

    def __init__(self, store_url: str, storage_options: Mapping[str, Any] | None = None):
        self.store_url = store_url.rstrip("/")
        self.fs, self.store_path = fsspec.core.url_to_fs(self.store_url, **dict(storage_options or {}))
        _, self.path = fsspec.core.url_to_fs(state_url(self.store_url), **dict(storage_options or {}))

    # -- small JSON documents -------------------------------------------------------------
    def _file(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self._file(name)))
        except FileNotFoundError:
            return None

    def write_json(self, name: str, document: Mapping[str, Any]) -> None:
        self._write(self._file(name), json_bytes(document))

    def _is_local(self) -> bool:
        return is_local_filesystem(self.fs)

    def put(self, path: str, data: bytes) -> None:
        """Write a whole file at ``path`` (any path of this filesystem): readers see all of it or none."""
        self._write(path, data)

    def _write(self, path: str, data: bytes) -> None:
        write_atomically(path, data, self.fs)  # readers see the old or the new document, never half

    def remove(self, name: str) -> None:
        try:
            self.fs.rm(self._file(name), recursive=True)
        except FileNotFoundError:
            pass

    # -- the plan and the tasks done -------------------------------------------------------
    def plan_fingerprint(self) -> str | None:
        document = self.read_json("plan.json")
        return document.get("fingerprint") if document else None

    def start(self, plan_fingerprint: str, description: Mapping[str, Any],
              root_documents: Mapping[str, bytes] | None = None) -> None:
        """Forget any earlier attempt, hold back the new root metadata, and record the plan.

        ``plan.json`` is written last: a rerun resumes from it, so it must only
        exist once the template and held-back root metadata it stands for do
        (a bake killed in between starts over).
        """
        for name in ("done", "root", "complete.json", "plan.json", "append.json", "append"):
            self.remove(name)
        self.hold_root(root_documents or {})
        self.write_json("plan.json", {"fingerprint": plan_fingerprint, "plan": dict(description),
                                      "started": _now().isoformat()})

    def mark_done(self, task_id: str) -> None:
        self._write(self._file("done", task_id), b"")

    def done_tasks(self) -> set[str]:
        root = self._file("done")
        try:
            found = self.fs.find(root)
        except FileNotFoundError:
            return set()
        prefix = root.rstrip("/") + "/"
        return {path[len(prefix):] for path in found if path.startswith(prefix) and ".tmp-" not in path}

    def is_complete(self, plan_fingerprint: str | None = None) -> bool:
        """Whether the store is complete (with ``plan_fingerprint``: completed by that plan)."""
        document = self.read_json("complete.json")
        if document is None:
            return False
        return plan_fingerprint is None or document.get("fingerprint") == plan_fingerprint

    def ingested(self) -> list[str]:
        """The inputs the complete store holds (``complete.json``; ``ingested.json`` of older stores)."""
        complete = self.read_json("complete.json") or {}
        if "ingested" in complete:
            return list(complete["ingested"])
        return list((self.read_json("ingested.json") or {}).get("urls", []))

    # -- holding back and publishing the root metadata ---------------------------------------
    def hold_root(self, documents: Mapping[str, bytes]) -> None:
        for key, data in documents.items():
            self._write(self._file("root", key), data)

    def publish(self, keys: Iterable[str]) -> None:
        """Copy the held-back metadata documents ``keys`` into the store, in that order."""
        for key in keys:
            try:
                data = self.fs.cat_file(self._file("root", key))
            except FileNotFoundError:  # (an attempt of an older version held the root documents only)
                continue
            self._write(f"{self.store_path}/{key}", data)

    def remove_abandoned_writes(self) -> int:
        """Delete the temporary files of chunk writes killed before their rename; return how many.

        Only a local store has them (an object store never shows half an
        object). Call this only while holding the lease, once this bake's
        own writes are done, so that no live writer's file is taken.
        """
        if not self._is_local() or not os.path.isdir(self.store_path):
            return 0
        removed = 0
        for folder, _subfolders, files in os.walk(self.store_path):
            for name in files:
                if ABANDONED_WRITE.search(name):
                    os.remove(os.path.join(folder, name))
                    removed += 1
        if removed:
            logger.info("removed %d unfinished chunk writes of an earlier attempt from %s", removed, self.store_url)
        return removed

    def mark_complete(self, info: Mapping[str, Any]) -> None:
        self.write_json("complete.json", {**dict(info), "completed": _now().isoformat()})
        self.remove("ingested.json")  # an older version's record, now in complete.json
        self.remove("root")
        self.remove("done")

    # -- the lease (see arcoforge.io.lease) -----------------------------------------------------
    def lease(self) -> Lease:
        """The lease of this store, changed only by compare-and-swap."""
        return Lease(lease_file(self.fs, self._file(LEASE_FILE)), self.store_url)

    def acquire_lease(self, owner: str, ttl_seconds: float = DEFAULT_TTL, break_lease: bool = False) -> dict[str, Any]:
        """Take or renew the lease for ``owner``; a stale one is taken over, a live one refused (LeaseError)."""
        return self.lease().acquire(owner, ttl_seconds, break_lease)

    def release_lease(self, owner: str) -> None:
        self.lease().release(owner)


def new_owner() -> str:
    """An id for one bake, unique across hosts and processes."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def owner_process(owner: str) -> tuple[str, int] | None:
    """The host and process id of a bake's id made by :func:`new_owner` (None for another kind of id).

    >>> owner_process("node-7.example-4242-0a1b2c3d")
    ('node-7.example', 4242)
    """
    host, pid, _ = (owner.rsplit("-", 2) + ["", ""])[:3]
    return (host, int(pid)) if host and pid.isdigit() else None


def task_id(group: str, task: Iterable[int]) -> str:
    """The marker name of a write task.

    A 0-d variable has one task, the empty tuple: its marker is ``<group>/scalar``
    (a name that no tuple of integers gives), never the folder ``<group>/`` itself.

    >>> task_id("sst", (3, 0, 0))
    'sst/3.0.0'
    >>> task_id("crs", ())
    'crs/scalar'
    """
    task = tuple(task)
    return f"{group}/{'.'.join(str(i) for i in task) if task else 'scalar'}"
