"""Alias of arcoforge.recipes.reference_hdf_zarr (see arcoforge.compat.alias)."""

from arcoforge.compat.alias import alias_module

alias_module(__name__)
