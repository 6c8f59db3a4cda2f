"""The Beam shell: PTransforms that only wire the plain functions of the other packages.

One module per concern: :mod:`~arcoforge.beam.open` (fetch and open inputs, fill
skipped ones), :mod:`~arcoforge.beam.preprocess`, :mod:`~arcoforge.beam.store`
(StoreToZarr over :mod:`arcoforge.core`), :mod:`~arcoforge.beam.consolidate` and
:mod:`~arcoforge.beam.stac`. Recipes import them from :mod:`arcoforge.transforms`
(or :mod:`arcoforge`), which mirrors ``pangeo_forge_recipes.transforms``.
"""
