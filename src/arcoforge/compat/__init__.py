"""Compatibility with pangeo-forge-recipes: the names and semantics recipes written for it rely on.

- :mod:`.types` and :mod:`.storage`: the 0.10 ``types`` and ``storage`` modules
  (re-exported as :mod:`arcoforge.types` and :mod:`arcoforge.storage`);
- :mod:`.concurrency`: ``MapWithConcurrencyLimit``;
- :mod:`.zarr2_names`: zarr-2 names recipes annotate with (``zarr.storage.FSStore``);
- :mod:`.xarray_zarr`: the pre-Beam ``XarrayZarrRecipe`` of 0.5–0.8 as sugar over
  our transforms, and :mod:`.hdf_reference` its ``HDFReferenceRecipe`` over the
  virtual-reference transforms (both re-exported as :mod:`arcoforge.recipes`;
  :mod:`.legacy_recipes` is how ``arcoforge bake`` loads them);
- :mod:`.alias`: the ``pangeo_forge_recipes`` import name, for code that cannot
  be edited (installed by the ``arcoforge[pgf-compat]`` extra).

See docs/porting.md for what ports unchanged and what differs.
"""
