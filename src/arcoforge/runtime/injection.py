"""Giving a recipe's transforms their run-time values, on the recipe as built.

A recipe is importable and testable before anyone decides where it runs: a
field that only the runner can fill holds :class:`RequiredAtRuntimeDefault`
(pangeo-forge-recipes' sentinel, same name and meaning), and every arcoforge
transform has a ``context`` field for the rest of the run-time values.
:func:`inject` walks a recipe's chain of transforms (``a | b | c``, labelled or
not) and returns a copy whose steps carry the bake's :class:`BakeContext` and
whose sentinels are filled from it, by the *injection specs* pangeo-forge-runner
also reads (:func:`get_injection_specs`, registered under the
``pangeo_forge_recipes.injection_specs`` entry point): ``TARGET_STORAGE`` is the
context's ``target_root``, ``INPUT_CACHE_STORAGE`` its ``cache_root``.

The recipe object itself is never changed, so one recipe baked twice with two
contexts gets each its own. A recipe's explicit value wins over the context's,
unless the context names the field in ``overrides`` (``arcoforge bake
--override``). An explicit ``on_error`` on one step reaches the steps after it
through the context they are given, so opening knows the fetch step skips.

>>> import apache_beam as beam
>>> from arcoforge.runtime.context import BakeContext
>>> class Step(beam.PTransform):
...     target_root = RequiredAtRuntimeDefault()
...     context = None
>>> Step.__name__ = "StoreToZarr"
>>> injected = inject(Step(), BakeContext(target_root="/data/stores"))
>>> injected.target_root, injected.context.target_root
('/data/stores', '/data/stores')
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from .context import BakeContext, RequiredAtRuntimeDefault, is_unset

__all__ = ["RequiredAtRuntimeDefault", "get_injection_specs", "inject", "installed_injection_specs", "recipe_steps"]

logger = logging.getLogger(__name__)

#: The entry-point group pangeo-forge-runner reads injection specs from.
INJECTION_SPECS_GROUP = "pangeo_forge_recipes.injection_specs"

#: What each injection value names, as a field of :class:`BakeContext`.
INJECTION_VALUES = {"TARGET_STORAGE": "target_root", "INPUT_CACHE_STORAGE": "cache_root"}


def get_injection_specs() -> dict[str, dict[str, str]]:
    """Which field of which transform takes which run-time value (pangeo-forge-runner's format)."""
    return {
        "StoreToZarr": {"target_root": "TARGET_STORAGE"},
        "StoreToIcechunk": {"target_root": "TARGET_STORAGE"},
        "WriteCombinedReference": {"target_root": "TARGET_STORAGE"},
        "WriteVirtualIcechunk": {"target_root": "TARGET_STORAGE"},
        "OpenURLWithFSSpec": {"cache": "INPUT_CACHE_STORAGE"},
    }


def installed_injection_specs() -> dict[str, dict[str, str]]:
    """Ours merged with those other installed packages register for pangeo-forge-runner."""
    specs = {name: dict(fields) for name, fields in get_injection_specs().items()}
    for entry in entry_points(group=INJECTION_SPECS_GROUP):
        try:
            found = entry.load()()
        except Exception as error:  # a broken plug-in must not stop the bake of a recipe not using it
            logger.warning("injection specs of %s cannot be read: %s", entry.value, error)
            continue
        for name, fields in (found or {}).items():
            specs.setdefault(name, {}).update(fields)
    return specs


def inject(recipe: Any, context: BakeContext, specs: Mapping[str, Mapping[str, str]] | None = None) -> Any:
    """A copy of ``recipe`` (a transform or a chain of them) with run-time values given to every step."""
    specs = get_injection_specs() if specs is None else specs
    return _inject(recipe, context, specs)[0]


def _inject(step: Any, context: BakeContext, specs: Mapping[str, Mapping[str, str]]) -> tuple[Any, BakeContext]:
    """One step, and the context the steps after it get (an explicit ``on_error`` carries on)."""
    from apache_beam.transforms.ptransform import _ChainedPTransform, _NamedPTransform

    if isinstance(step, _ChainedPTransform):
        parts = []
        for part in step._parts:
            part, context = _inject(part, context, specs)
            parts.append(part)
        return _ChainedPTransform(*parts), context
    if isinstance(step, _NamedPTransform):
        inner, context = _inject(step.transform, context, specs)
        return _NamedPTransform(inner, step.label), context
    if not hasattr(step, "context"):
        return step, context  # a Beam or user transform with nothing to fill
    step = copy.copy(step)
    for field_name, value_name in specs.get(type(step).__name__, {}).items():
        supplied = getattr(context, INJECTION_VALUES.get(value_name, ""), None)
        if supplied is not None and (is_unset(getattr(step, field_name, None)) or field_name in context.overrides):
            setattr(step, field_name, supplied)
    if step.context is None:
        step.context = context
    explicit = getattr(step, "on_error", None)
    if explicit is not None and context.on_error is None:
        context = context.with_values(on_error=explicit)
    return step, context


def recipe_steps(recipe: Any) -> list[Any]:
    """The steps of a recipe's chain, in order, labels taken off (what a recipe file spells out)."""
    from apache_beam.transforms.ptransform import _ChainedPTransform, _NamedPTransform

    if isinstance(recipe, _ChainedPTransform):
        return [step for part in recipe._parts for step in recipe_steps(part)]
    if isinstance(recipe, _NamedPTransform):
        return recipe_steps(recipe.transform)
    return [recipe]
