"""The bake context: what whoever runs a recipe supplies to it, frozen while a pipeline is built.

A recipe may leave out where its stores go, how many local workers share the
machine, credentials for its inputs, and so on; ``arcoforge bake`` (or a test,
or a notebook) supplies them as one frozen :class:`BakeContext`. A transform
takes it from its own ``context`` field when set (a bake sets it on every step
of the recipe it runs: :func:`arcoforge.runtime.injection.inject`), else from
the innermost :func:`use_runtime_defaults` block (for transforms a recipe's own
composite builds). A value the recipe gives explicitly wins over the context's
unless the context's ``overrides`` names it (:meth:`BakeContext.choose`).

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


class RequiredAtRuntimeDefault:
    """Default of a transform field that whoever runs the recipe supplies (e.g. ``target_root``).

    A recipe can leave such a field out and still import, type-check and be
    unit-tested; ``arcoforge bake`` (or pangeo-forge-runner) fills it.
    """

    def __repr__(self) -> str:
        return "RequiredAtRuntimeDefault()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequiredAtRuntimeDefault)

    def __hash__(self) -> int:
        return hash(RequiredAtRuntimeDefault)


def is_unset(value: Any) -> bool:
    """Whether a transform field was left for the run time (``None`` or the sentinel)."""
    return value is None or isinstance(value, RequiredAtRuntimeDefault)


#: Run-time values a recipe may also give; ``overrides`` may name these so the run time wins.
OVERRIDABLE = ("target_root", "storage_options", "max_mem", "cache_root", "retries", "max_concurrency",
               "on_error", "lease_ttl")


@dataclass(frozen=True)
class BakeContext:
    """Values a recipe may leave out, supplied by whoever runs it (``arcoforge bake``)."""

    target_root: str | None = None
    storage_options: dict | None = None
    # Local worker processes sharing this machine's memory, and StoreToZarr.max_mem where a recipe sets none.
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
    # Run-time values that win over the recipe's own (``arcoforge bake --override max_mem``).
    overrides: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.overrides) - set(OVERRIDABLE)
        if unknown:
            raise ValueError(f"overrides names {sorted(unknown)}; expected some of {', '.join(OVERRIDABLE)}")
        object.__setattr__(self, "overrides", frozenset(self.overrides))

    def choose(self, name: str, recipe_value: Any, default: Any = None) -> Any:
        """The value a step uses for the run-time value ``name``, given the recipe's own.

        The recipe's explicit value wins, unless ``name`` is in ``overrides``;
        then the context's; then ``default``.

        >>> context = BakeContext(max_mem="2GB")
        >>> context.choose("max_mem", "500MB"), context.choose("max_mem", None)
        ('500MB', '2GB')
        >>> BakeContext(max_mem="2GB", overrides={"max_mem"}).choose("max_mem", "500MB")
        '2GB'
        """
        runtime = getattr(self, name)
        if name in self.overrides and runtime is not None:
            return runtime
        if not is_unset(recipe_value):
            return recipe_value
        return runtime if runtime is not None else default

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
