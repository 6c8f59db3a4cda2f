"""``pangeo_forge_recipes.recipes.reference_hdf_zarr`` (0.5–0.8): see :mod:`arcoforge.compat.hdf_reference`."""

from __future__ import annotations

from ..compat.hdf_reference import HDFReferenceRecipe

__all__ = ["HDFReferenceRecipe"]
