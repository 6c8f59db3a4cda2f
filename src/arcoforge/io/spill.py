"""Work in flight kept beside the store rather than in the runner's memory: a bake's *spill*.

Between the stage that opens inputs and the one that cuts them, every input
waits for the plan; between cutting and writing, every piece waits for its
write task. A runner holds what waits in memory (Beam's local runner holds whole
PCollections between stages, and decodes what it groups), so a bake of 10^5
inputs held ~10 kB per input in the runner process and as much in a worker.
Instead, each batch of inputs is written to one file in the bake's spill folder,
``.arcoforge/<store>/spill/<owner>/``, and only a :class:`SpillRef` of about a
hundred bytes travels through the runner: what it holds no longer grows with the
inputs, only with the batches.

Files are written once and never changed; a retried step writes a new file, so
a reference always points at complete bytes. The folder is removed once the
store is published; the next bake that publishes the store removes the folders
of killed bakes: those of gone processes on its host at once, others once a
day old (see :func:`remove_spills`).

What is spilled are lazily indexed variables, and the file handles under them
may hold an input's storage options (credentials). So every section is
encrypted and authenticated (AES-GCM) with a key that exists only in the
pipeline (``StoreSpec.spill_key``), never in the store's files or the logs.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
import uuid
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .atomic import is_local_filesystem
from .lease import process_alive
from .state import owner_process, state_url

logger = logging.getLogger(__name__)

SPILL_FOLDER = "spill"
NONCE_BYTES = 12
# A spill folder of another bake is removed once its newest file is this old: it was killed.
STALE_SECONDS = 24 * 3600


def new_spill_key() -> bytes:
    """A fresh key for one bake's spill (256 bits)."""
    return AESGCM.generate_key(bit_length=256)


@dataclass(frozen=True)
class SpillRef:
    """Where one spilled section is: a file of the spill folder and a byte range of it."""

    path: str  # on the spill's filesystem
    start: int
    stop: int
    count: int  # how many objects it holds


def spill_folder(store_url: str, owner: str) -> str:
    """The spill folder of the bake ``owner`` of a store.

    >>> spill_folder("s3://b/out/sst.zarr", "host-1-ab")
    's3://b/out/.arcoforge/sst.zarr/spill/host-1-ab'
    """
    return f"{state_url(store_url.rstrip('/'))}/{SPILL_FOLDER}/{owner}"


class Spill:
    """One bake's spill folder: lists of objects in, :class:`SpillRef` out, and back."""

    def __init__(self, store_url: str, owner: str, key: bytes, storage_options: Mapping[str, Any] | None = None):
        self.folder = spill_folder(store_url, owner)
        self.fs, self.path = fsspec.core.url_to_fs(self.folder, **dict(storage_options or {}))
        self._cipher = AESGCM(key)

    def _seal(self, objects: Sequence[Any]) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, pickle.dumps(list(objects), protocol=5), None)

    def put_sections(self, sections: Mapping[Hashable, Sequence[Any]]) -> dict[Hashable, SpillRef]:
        """Write lists of objects as the sections of one new file; a reference to each, by its key."""
        name = f"{self.path}/{uuid.uuid4().hex}.bin"
        blobs, refs, offset = [], {}, 0
        for key, objects in sections.items():
            blob = self._seal(objects)
            blobs.append(blob)
            refs[key] = SpillRef(name, offset, offset + len(blob), len(objects))
            offset += len(blob)
        local = is_local_filesystem(self.fs)
        for attempt in (1, 2):
            try:
                if local:
                    self.fs.makedirs(self.path, exist_ok=True)
                self.fs.pipe_file(name, b"".join(blobs))
                break
            except FileNotFoundError:  # the empty parent was removed as it was made (remove_spills): again
                if attempt == 2 or not local:
                    raise
        return refs

    def put(self, objects: Sequence[Any]) -> SpillRef:
        """Write one list of objects to a new file."""
        return self.put_sections({0: objects})[0]

    def get(self, ref: SpillRef) -> list[Any]:
        """The objects of one section (an error if it was changed: the key authenticates it)."""
        blob = self.fs.cat_file(ref.path, start=ref.start, end=ref.stop)
        return pickle.loads(self._cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None))

    def objects(self, refs: Iterable[SpillRef]) -> "SpilledObjects":
        """The objects of several sections, as a collection read again each time it is iterated."""
        return SpilledObjects(self, tuple(refs))


@dataclass(frozen=True)
class SpilledObjects:
    """The objects of some sections of a spill, read section by section each time they are iterated.

    A write task goes over its pieces once per variable. Holding them all at
    once cost ~18 kB a piece (a task of 4,096 one-step inputs: ~75 MB of open
    stores and lazy arrays); read again, one section (a batch's pieces) is in
    memory at a time, for a decryption and unpickling more per variable. Each
    object is let go once the caller moves on to the next: a piece that was read
    holds its input's file open (xarray keeps up to 128, ~0.6 MB each).
    """

    spill: Spill
    refs: tuple[SpillRef, ...]

    def __len__(self) -> int:
        return sum(ref.count for ref in self.refs)

    def __iter__(self) -> Iterator[Any]:
        for ref in self.refs:
            section = self.spill.get(ref)
            section.reverse()
            while section:  # each let go once the caller moves on: a piece read holds its input's file open
                yield section.pop()


def remove_spills(store_url: str, owner: str, storage_options: Mapping[str, Any] | None = None,
                  stale_seconds: float = STALE_SECONDS) -> None:
    """Remove the spill of bake ``owner``, and those of killed bakes: gone processes of this host, or idle ones.

    Called by the bake that publishes the store (a Zarr store's while it holds
    the lease; an Icechunk repository's bakes may run side by side): another
    live bake's spill is kept, even one it starts writing meanwhile.
    """
    folder = spill_folder(store_url, owner).rpartition("/")[0]
    fs, root = fsspec.core.url_to_fs(folder, **dict(storage_options or {}))
    try:
        entries = fs.ls(root, detail=False)
    except FileNotFoundError:
        return
    now = time.time()
    for entry in entries:
        name = entry.rstrip("/").rpartition("/")[2]
        if name != owner:
            if not _owner_dead(name) and not _idle(fs, entry, now, stale_seconds):
                continue
            logger.info("removing the spill of bake %s of %s, which was killed", name, store_url)
        try:
            fs.rm(entry, recursive=True)
        except FileNotFoundError:
            pass
    if is_local_filesystem(fs):  # (object stores have no empty folders)
        try:
            fs.rmdir(root)  # only if empty: never what a bake spilled since the listing
        except OSError:
            pass


def _owner_dead(owner: str) -> bool:
    """Whether bake ``owner`` ran on this host in a process now gone."""
    process = owner_process(owner)
    return process is not None and process[0] == socket.gethostname() and not process_alive(process[1])


def _idle(fs: Any, folder: str, now: float, stale_seconds: float) -> bool:
    """Whether nothing in ``folder`` was written for ``stale_seconds`` (by file modification times)."""
    try:
        details = fs.find(folder, detail=True).values()
    except FileNotFoundError:
        return True
    newest = 0.0
    for info in details:
        stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        if hasattr(stamp, "timestamp"):
            stamp = stamp.timestamp()
        newest = max(newest, float(stamp or 0.0))
    if not newest:
        return False  # no times known: keep it, it may be a live bake's
    return now - newest > stale_seconds
