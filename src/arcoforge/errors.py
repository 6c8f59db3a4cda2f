"""Exception classes, one per failure class a user or a bot must tell apart."""

from __future__ import annotations


class ArcoforgeError(Exception):
    """Base class of every error arcoforge raises on purpose."""


class RecipeError(ArcoforgeError):
    """The recipe itself is wrong: a bad option, a missing object, an unknown dimension."""


class InputError(ArcoforgeError):
    """An input file cannot be used: unreadable, or inconsistent with the other inputs."""


class InfrastructureError(ArcoforgeError):
    """Storage, workers or another bake stand in the way; the recipe and inputs may be fine."""


class SchemaError(InputError):
    """The inputs do not combine into one dataset (sizes, variables or encodings differ)."""


def describe_input(index: object, url: object | None) -> str:
    """How messages name one input: its URL and its place in the pattern."""
    where = f"pattern index {index!r}"
    return f"{url} ({where})" if url else where
