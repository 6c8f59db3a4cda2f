"""``pangeo_forge_recipes.recipes.xarray_zarr`` (0.5–0.8): see :mod:`arcoforge.compat.xarray_zarr`."""

from __future__ import annotations

from ..compat.xarray_zarr import XarrayZarrRecipe

__all__ = ["XarrayZarrRecipe"]
