"""MapWithConcurrencyLimit: a function over the values of ``(index, value)`` pairs, at most N at a time.

pangeo-forge-recipes 0.10 exposes it for recipes whose inputs come from a
service that takes only so many requests at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam


def apply_to_value(item: tuple[Any, Any], fn: Callable, args: list, kwargs: dict) -> tuple[Any, Any]:
    """``(key, fn(value, *args, **kwargs))`` for an item ``(key, value)``."""
    key, value = item
    return key, fn(value, *args, **kwargs)


def lane_of(item: tuple[Any, Any], lanes: int) -> int:
    """Which of ``lanes`` sequential lanes an item runs in (stable across processes and runs).

    >>> lane_of(("a", 1), 4) == lane_of(("a", 2), 4)
    True
    """
    return zlib.crc32(repr(item[0]).encode()) % lanes


@dataclass
class MapWithConcurrencyLimit(beam.PTransform):
    """Map ``fn(value, *args, **kwargs)`` over ``(key, value)`` items, keeping each key.

    With ``max_concurrency`` the items are grouped into that many lanes, each
    processed one item after another, so no more than ``max_concurrency`` calls
    run at once over all workers. Without it the runner's parallelism decides.
    """

    fn: Callable
    args: list | None = field(default_factory=list)
    kwargs: dict | None = field(default_factory=dict)
    max_concurrency: int | None = None

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        call = dict(fn=self.fn, args=list(self.args or []), kwargs=dict(self.kwargs or {}))
        name = getattr(self.fn, "__name__", "fn")
        if not self.max_concurrency:
            return pcoll | name >> beam.Map(apply_to_value, **call)
        lanes = int(self.max_concurrency)
        if lanes < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency!r}")
        return (
            pcoll
            | "Assign lanes" >> beam.Map(lambda item: (lane_of(item, lanes), item))
            | "Group by lane" >> beam.GroupByKey()
            | "Drop lane" >> beam.Values()
            | f"{name} (max_concurrency={lanes})" >> beam.FlatMap(
                lambda items: [apply_to_value(item, **call) for item in items])
        )
