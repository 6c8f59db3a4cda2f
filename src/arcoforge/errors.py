"""Exception classes, one per failure class a user or a bot must tell apart.

Every error arcoforge raises on purpose carries a stable *kind* (``recipe``, ``input`` or
``infrastructure``) and the exit code that goes with it. Runners often hand a worker's
exception back as text only, so the kind is also written into the message as a short tag,
``(arcoforge:<kind>)``, which :func:`classify_text` finds again whatever module raised it.

>>> str(RecipeError("store_name is empty"))
'store_name is empty (arcoforge:recipe)'
>>> classify_text("RuntimeError: boom\\nSchemaError: bad time in a.nc (arcoforge:input) [while running 'x']")
('input', 'bad time in a.nc')
"""

from __future__ import annotations

import re
from typing import ClassVar

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_RECIPE = 2
EXIT_INPUT = 3
EXIT_INFRASTRUCTURE = 4
#: The exit code of each failure kind; ``unexpected`` is anything not raised on purpose.
EXIT_CODES: dict[str, int] = {"recipe": EXIT_RECIPE, "input": EXIT_INPUT,
                              "infrastructure": EXIT_INFRASTRUCTURE, "unexpected": EXIT_UNEXPECTED}

_TAG_ONLY = re.compile(r" \(arcoforge:(?:recipe|input|infrastructure)\)")
_TAG = re.compile(r"(?:^|: )([^\n]*?) \(arcoforge:(recipe|input|infrastructure)\)", re.M)


class ArcoforgeError(Exception):
    """Base class of every error arcoforge raises on purpose."""

    kind: ClassVar[str] = "unexpected"

    @property
    def message(self) -> str:
        """The message without kind tags (a message built from another error's text has one)."""
        return _TAG_ONLY.sub("", str(self.args[0])) if self.args else ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

    def __str__(self) -> str:
        if self.kind == "unexpected":
            return self.message
        return f"{self.message} (arcoforge:{self.kind})"


class RecipeError(ArcoforgeError):
    """The recipe itself is wrong: a bad option, a missing object, an unknown dimension."""

    kind = "recipe"


class InputError(ArcoforgeError):
    """An input file cannot be used: unreadable, or inconsistent with the other inputs."""

    kind = "input"


class InfrastructureError(ArcoforgeError):
    """Storage, workers or another bake stand in the way; the recipe and inputs may be fine."""

    kind = "infrastructure"


class SchemaError(InputError):
    """The inputs do not combine into one dataset (sizes, variables or encodings differ)."""


def classify_text(text: str) -> tuple[str, str] | None:
    """The kind and message of the last tagged arcoforge error in ``text`` (a runner's error text)."""
    matches = _TAG.findall(text)
    if not matches:
        return None
    message, kind = matches[-1]
    message = re.sub(r"^(?:[\w.]+(?:Error|Exception|Exceeded): )+", "", message.strip())
    return kind, message


def describe_input(index: object, url: object | None) -> str:
    """How messages name one input: its URL and its place in the pattern."""
    where = f"pattern index {index!r}"
    return f"{url} ({where})" if url else where


def require_package(module: str, extra: str, step: str) -> None:
    """Fail when the pipeline is built, not in a worker, if ``step`` needs an optional package not installed.

    >>> require_package("json", "none", "a step")
    >>> require_package("no_such_package_here", "icechunk", "StoreToIcechunk")
    Traceback (most recent call last):
    ...
    arcoforge.errors.RecipeError: StoreToIcechunk needs the no_such_package_here package: \
pip install 'arcoforge[icechunk]' (arcoforge:recipe)
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise RecipeError(f"{step} needs the {module} package: pip install 'arcoforge[{extra}]'")
