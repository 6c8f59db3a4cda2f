"""The names of ``pangeo_forge_recipes.recipes`` (0.5–0.8), for the pre-Beam recipes that import them.

``XarrayZarrRecipe`` is defined in :mod:`arcoforge.compat.xarray_zarr`, ``HDFReferenceRecipe``
in :mod:`arcoforge.compat.hdf_reference` (see docs/porting.md).
"""

from __future__ import annotations

from ..compat.hdf_reference import HDFReferenceRecipe
from ..compat.xarray_zarr import XarrayZarrRecipe

__all__ = ["HDFReferenceRecipe", "XarrayZarrRecipe"]
