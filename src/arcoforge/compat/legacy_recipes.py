"""The pre-Beam recipe classes of pangeo-forge-recipes 0.5–0.8, as ``arcoforge bake`` loads them."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from .hdf_reference import HDFReferenceRecipe
from .xarray_zarr import XarrayZarrRecipe

#: Recipe objects that are not PTransforms but build one with ``to_beam(recipe_id)``.
LEGACY_RECIPES = (XarrayZarrRecipe, HDFReferenceRecipe)


def recipe_transform(value: Any, recipe_id: str) -> beam.PTransform | None:
    """The PTransform a recipe object stands for: itself, or its ``to_beam(recipe_id)``; ``None`` if neither."""
    if isinstance(value, beam.PTransform):
        return value
    if isinstance(value, LEGACY_RECIPES):
        return value.to_beam(recipe_id)
    return None
