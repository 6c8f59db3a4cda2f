"""An append as one transaction: readers see the old store until a single commit point, then the new one.

The steps, each a :func:`~arcoforge.faults.checkpoint` (a crash after any of
them is repaired by the next run of the bake, see :func:`recover`):

1. ``append.plan``: the lease is held and the plan made; nothing is written.
2. ``append.backup``: the chunks the append will rewrite in part (the last,
   partly filled chunk of each growing array) are copied into the state folder,
   and the grown, consolidated metadata documents are staged beside them.
3. ``append.journal``: ``append.json`` records the old and new lengths, the
   inputs being added and the plan's fingerprint. From here on a rerun knows.
4. ``append.task``: the write tasks write chunks beyond the old extent, through
   arrays opened from the staged documents. The published metadata is
   untouched, so readers keep reading the old shapes; a partly filled chunk is
   replaced whole by one holding the same old values and the new ones.
5. ``append.chunks``/``append.coordinate``: the new values of the concat
   coordinate go into the spare room of its chunk (its chunk is twice the
   length it was baked with) or into new chunks beyond it.
6. ``append.commit``: the commit point. The root's consolidated metadata
   (``zarr.json`` in Zarr v3, ``.zmetadata`` in v2) is written with the new
   shapes, in one whole-object write: readers that open the store consolidated
   (``xarray.open_zarr``'s default) now see the whole new store.
7. ``append.arrays``: each array's own metadata document gets its new shape.
8. ``append.complete``: ``complete.json`` records the new lengths and every
   input the store holds.
9. ``append.cleanup``: the journal is removed.

A rerun that finds a journal rolls the append forward when the commit
document is in the store, and otherwise resumes it (same plan) or rolls it back
(another plan, e.g. the next day's append): the partly filled chunks get their
saved bytes back and the chunks beyond the old extent are deleted, so the
store is byte for byte the one before the append.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .documents import COMMIT_KEY, array_dims, array_names, publication_order
from .io.zarr_store import planned_array
from .faults import checkpoint
from .io.state import StoreState, _now

if TYPE_CHECKING:
    from .store_plan import StorePlan

logger = logging.getLogger(__name__)

JOURNAL = "append.json"
FOLDER = "append"


def chunk_keys(array: Any, axis: int, old: int, new: int) -> tuple[list[str], list[str]]:
    """Store keys of ``array``'s write units an append from ``old`` to ``new`` along ``axis`` writes.

    Returns (partly filled units that hold old values too, units wholly beyond the old extent).
    """
    unit = array.shards or array.chunks
    counts = [math.ceil(n / u) if n else 0 for n, u in zip(array.shape, unit)]

    def keys(first: int, stop: int) -> list[str]:
        ranges = [range(first, stop) if i == axis else range(c) for i, c in enumerate(counts)]
        return [array.metadata.encode_chunk_key(coords) for coords in itertools.product(*ranges)]

    u = unit[axis]
    shared = keys(old // u, old // u + 1) if old % u else []
    beyond = keys(math.ceil(old / u), math.ceil(new / u))
    return shared, beyond


def _transaction_keys(url: str, documents: Mapping[str, bytes], zarr_format: int, dim: str, old: int,
                      new: int, storage_options: dict | None) -> Iterator[tuple[list[str], list[str]]]:
    for name in array_names(documents, zarr_format):
        dims = array_dims(documents, name, zarr_format)
        if dim in dims:
            array = planned_array(url, name, documents, zarr_format, storage_options)
            shared, beyond = chunk_keys(array, dims.index(dim), old, new)
            yield [f"{name}/{key}" for key in shared], [f"{name}/{key}" for key in beyond]


def _store_file(state: StoreState, key: str) -> str:
    return f"{state.store_path}/{key}"


def _state_file(state: StoreState, *parts: str) -> str:
    return "/".join([state.path, FOLDER, *parts])


def begin(state: StoreState, plan: "StorePlan", plan_fingerprint: str) -> dict[str, Any]:
    """Save what a roll-back needs and what the commit publishes, then write the journal."""
    dim, old, new = plan.append_dim, plan.append_origin, plan.schema.dims[plan.append_dim]
    for name in ("done", JOURNAL, FOLDER):
        state.remove(name)
    absent = []
    for shared, _beyond in _transaction_keys(plan.url, plan.documents, plan.zarr_format, dim, old, new,
                                             plan.storage_options):
        for key in shared:
            try:
                state.put(_state_file(state, "backup", key), state.fs.cat_file(_store_file(state, key)))
            except FileNotFoundError:
                absent.append(key)
    for key, data in plan.documents.items():
        state.put(_state_file(state, "meta", key), data)
    checkpoint("append.backup")
    journal = {
        "fingerprint": plan_fingerprint, "append_dim": dim, "zarr_format": plan.zarr_format,
        "old_lengths": {dim: old}, "new_lengths": {dim: new},
        "inputs": [url for url in plan.schema.urls if url], "ingested": list(plan.ingested),
        "n_tasks": plan.n_tasks, "absent": absent, "started": _now().isoformat(),
    }
    state.write_json(JOURNAL, journal)
    logger.info("appending to %s along %r: %d -> %d (journal written)", plan.url, dim, old, new)
    checkpoint("append.journal")
    return journal


def write_coordinates(plan: "StorePlan") -> None:
    """Write the new values of the concat coordinate into its spare room or new chunks beyond."""
    from .store_template import encode_variable

    dim, old, new = plan.append_dim, plan.append_origin, plan.schema.dims[plan.append_dim]
    for name, values in plan.schema.concat_coords.items():
        if name != dim:
            continue
        array = planned_array(plan.url, name, plan.documents, plan.zarr_format, plan.storage_options)
        encoded = np.asarray(encode_variable(name, values[old:new], plan.schema.variables[name]).values)
        array[old:new] = encoded.astype(array.dtype)


def _staged(state: StoreState) -> dict[str, bytes]:
    root = _state_file(state, "meta")
    found = state.fs.find(root)
    prefix = root.rstrip("/") + "/"
    return {path[len(prefix):]: state.fs.cat_file(path) for path in found
            if path.startswith(prefix) and ".tmp-" not in path}


def is_committed(state: StoreState, journal: Mapping[str, Any]) -> bool:
    """Whether the store holds the append's commit document (its consolidated metadata)."""
    key = COMMIT_KEY[journal["zarr_format"]]
    try:
        staged = state.fs.cat_file(_state_file(state, "meta", key))
        return state.fs.cat_file(_store_file(state, key)) == staged
    except FileNotFoundError:
        return False


def finish(state: StoreState, plan: "StorePlan", journal: Mapping[str, Any]) -> None:
    """The steps after the chunks: coordinate, commit point, array metadata, completion, clean-up."""
    checkpoint("append.chunks")
    write_coordinates(plan)
    checkpoint("append.coordinate")
    roll_forward(state, journal, commit=True)


def roll_forward(state: StoreState, journal: Mapping[str, Any], commit: bool = False) -> None:
    """Publish a committed (or, with ``commit``, a fully written) append and mark the store complete."""
    zarr_format = journal["zarr_format"]
    staged = _staged(state)
    arrays, roots = publication_order(staged, zarr_format)
    commit_key = COMMIT_KEY[zarr_format]
    if commit:
        state.put(_store_file(state, commit_key), staged[commit_key])
        logger.info("committed the append to %s (%s)", state.store_url, commit_key)
    checkpoint("append.commit")
    for key in arrays + [key for key in roots if key != commit_key]:
        state.put(_store_file(state, key), staged[key])
    checkpoint("append.arrays")
    state.mark_complete({"fingerprint": journal["fingerprint"], "lengths": dict(journal["new_lengths"]),
                         "n_tasks": journal["n_tasks"], "ingested": list(journal["ingested"])})
    checkpoint("append.complete")
    cleanup(state)
    checkpoint("append.cleanup")


def cleanup(state: StoreState) -> None:
    """Forget the journal: its record first, so a crash halfway never leaves a journal without its files."""
    state.remove(JOURNAL)
    state.remove(FOLDER)
    state.remove("done")


def roll_back(state: StoreState, journal: Mapping[str, Any], storage_options: dict | None = None) -> None:
    """Put the store back as it was before an uncommitted append: saved chunks back, new chunks deleted."""
    zarr_format, dim = journal["zarr_format"], journal["append_dim"]
    old, new = journal["old_lengths"][dim], journal["new_lengths"][dim]
    staged = _staged(state)
    absent = set(journal.get("absent", []))
    restored = deleted = 0
    for shared, beyond in _transaction_keys(state.store_url, staged, zarr_format, dim, old, new, storage_options):
        for key in shared:
            if key in absent:
                beyond.append(key)
            else:
                state.put(_store_file(state, key), state.fs.cat_file(_state_file(state, "backup", key)))
                restored += 1
        for key in beyond:
            with contextlib.suppress(FileNotFoundError):
                state.fs.rm_file(_store_file(state, key))
                deleted += 1
    state.remove_abandoned_writes()
    cleanup(state)
    logger.warning("rolled back an unfinished append to %s (%d -> %d along %r): %d chunks restored, "
                   "%d deleted", state.store_url, old, new, dim, restored, deleted)


def recover(state: StoreState) -> dict[str, Any] | None:
    """Finish a committed append left by a crash; return the journal of an uncommitted one (else None).

    The caller resumes an uncommitted append whose plan is the same as this
    run's, and rolls it back (:func:`roll_back`) otherwise.
    """
    journal = state.read_json(JOURNAL)
    if journal is None:
        return None
    if is_committed(state, journal):
        logger.warning("finishing the append to %s that a crash interrupted after its commit point",
                       state.store_url)
        roll_forward(state, journal)
        return None
    return journal

