"""The names of ``pangeo_forge_recipes.recipes`` (0.5–0.8), for the pre-Beam recipes that import them.

``XarrayZarrRecipe`` is defined in :mod:`arcoforge.compat.xarray_zarr`;
``HDFReferenceRecipe`` is not provided (see docs/porting.md).
"""

from __future__ import annotations

from ..compat.xarray_zarr import XarrayZarrRecipe

__all__ = ["XarrayZarrRecipe"]
