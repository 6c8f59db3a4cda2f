"""The PTransforms recipes use, mirroring ``pangeo_forge_recipes.transforms``.

A recipe is a chain of these, applied to ``beam.Create(pattern.items())``::

    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name="sst.zarr", combine_dims=pattern.combine_dim_keys)
    )

The element type between transforms is ``(Index, value)``: the index says where
an input sits in the pattern, the value is its URL, opened source or Dataset.
This module only re-exports: each transform lives in the :mod:`arcoforge.beam`
package, and what it does in plain functions (:mod:`arcoforge.core` for a bake).
Every transform takes an optional ``context`` (:class:`~arcoforge.runtime.context.BakeContext`),
which a bake sets on each step (:func:`arcoforge.runtime.injection.inject`); values the recipe
gives explicitly win over the context's, unless the bake names them in ``overrides``. A field
whose default is :class:`RequiredAtRuntimeDefault` (``StoreToZarr.target_root``) is filled at run time.

Also here, as in ``pangeo_forge_recipes.transforms``: ``Indexed`` and ``T``
(``Indexed[X]`` is ``Tuple[Index, X]``), ``MapWithConcurrencyLimit``, and the virtual
outputs' ``OpenWithKerchunk`` and ``WriteCombinedReference`` (see docs/outputs.md).
Importing this module gives zarr 3 the annotation-only ``zarr.storage.FSStore``
that 0.10's example recipes annotate with (see :mod:`arcoforge.compat.zarr2_names`).
"""

from __future__ import annotations

from .beam.consolidate import ConsolidateDimensionCoordinates, ConsolidateMetadata
from .beam.open import OpenURLWithFSSpec, OpenWithXarray
from .beam.preprocess import Preprocess
from .beam.stac import WriteSTAC
from .beam.store import StoreToZarr
from .beam.virtual import OpenWithKerchunk, WriteCombinedReference
from .compat.concurrency import MapWithConcurrencyLimit
from .compat.types import Indexed, T
from .compat.zarr2_names import provide_zarr2_annotation_names

from .runtime.context import RequiredAtRuntimeDefault

provide_zarr2_annotation_names()

__all__ = [
    "Indexed",
    "MapWithConcurrencyLimit",
    "T",
    "ConsolidateDimensionCoordinates",
    "ConsolidateMetadata",
    "OpenURLWithFSSpec",
    "OpenWithKerchunk",
    "OpenWithXarray",
    "Preprocess",
    "RequiredAtRuntimeDefault",
    "StoreToZarr",
    "WriteCombinedReference",
    "WriteSTAC",
]
