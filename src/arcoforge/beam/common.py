"""What the Beam transforms share: their metrics namespace and the URL of a store element."""

from __future__ import annotations

from typing import Any

from apache_beam.metrics import Metrics

from ..store_plan import StorePlan

# The namespace of arcoforge's Beam counters (the CLI reads inputs_read, tasks_written, bytes_written).
NAMESPACE = "arcoforge"


def count(name: str, value: int = 1) -> None:
    """Add ``value`` to the arcoforge counter ``name`` of the running step."""
    Metrics.counter(NAMESPACE, name).inc(value)


def store_url_of(element: Any) -> str:
    """The URL of a store, from a store element (a URL, or a plan of older arcoforge versions)."""
    return element.url if isinstance(element, StorePlan) else str(element)
