"""The bake context: what whoever runs a recipe supplies to it, frozen while a pipeline is built.

A recipe may leave out where its stores go, how many local workers share the
machine, credentials for its inputs, and so on; ``arcoforge bake`` (or a test,
or a notebook) supplies them as one frozen :class:`BakeContext`. A transform
takes it from its own ``context`` field when set (the CLI sets it on every step
of the recipe it runs), else from the innermost :func:`use_runtime_defaults`
block. A value the recipe gives explicitly wins over the context's.

>>> with use_runtime_defaults(target_root="/tmp/stores", num_workers=2) as context:
...     (current_context().target_root, context.num_workers)
('/tmp/stores', 2)
>>> current_context().target_root is None
True
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BakeContext:
    """Values a recipe may leave out, supplied by whoever runs it (``arcoforge bake``)."""

    target_root: str | None = None
    storage_options: dict | None = None
    # Local worker processes sharing this machine's memory, and an override of StoreToZarr.max_mem.
    num_workers: int = 1
    max_mem: str | int | None = None
    # Where workers record progress events (see arcoforge.runtime.progress); local bakes only.
    progress_dir: str | None = None
    # What the runner knows of the recipe (recipe_id, recipe_sha256, pattern_sha256), for provenance.
    provenance: dict | None = None
    # Who is baking (the lease owner of the stores written), and whether to break other bakes' leases.
    owner: str | None = None
    break_lease: bool = False
    # Seconds a store's lease outlives its last heartbeat (see arcoforge.io.lease).
    lease_ttl: float | None = None
    # Append new inputs to existing stores along their concat dim (arcoforge bake --append).
    append: bool = False
    # Remote inputs (see arcoforge.io and docs/object-storage.md). ``cache_root``: where
    # OpenURLWithFSSpec keeps verified copies of inputs (a local path or fsspec URL).
    cache_root: str | None = None
    # fsspec options for opening inputs (endpoint_url, key/secret, anon, profile, headers...),
    # merged under a pattern's own fsspec_open_kwargs; may hold secrets, never logged or stored.
    source_storage_options: dict | None = None
    # Attempts per remote read (1 = no retry) and the limit on concurrent remote opens per worker.
    retries: int | None = None
    max_concurrency: int | None = None
    # "raise" (default) stops on a bad input; "skip" drops it, fills its positions, records it.
    on_error: str | None = None
    # Seconds one input may take to read, all tries included (see arcoforge.io.deadline).
    input_deadline: float | None = None


    def with_values(self, **values: Any) -> BakeContext:
        """A copy with the values given (``None`` leaves a value as it is)."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})


_CURRENT: contextvars.ContextVar[BakeContext] = contextvars.ContextVar("arcoforge_bake_context",
                                                                       default=BakeContext())


def current_context() -> BakeContext:
    """The bake context of the innermost :func:`use_runtime_defaults` block (empty outside any)."""
    return _CURRENT.get()


def resolve_context(explicit: BakeContext | None) -> BakeContext:
    """A transform's context: its own field when set, else the current one."""
    return explicit if explicit is not None else current_context()


@contextlib.contextmanager
def use_runtime_defaults(**values: Any) -> Iterator[BakeContext]:
    """Supply run-time values (e.g. ``target_root``) to the recipes built and run in this block."""
    token = _CURRENT.set(current_context().with_values(**values))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)
