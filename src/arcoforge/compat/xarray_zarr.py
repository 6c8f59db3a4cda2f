"""``XarrayZarrRecipe`` of pangeo-forge-recipes 0.5–0.8, as sugar over arcoforge's Beam transforms.

Before Beam, a pangeo-forge recipe was one object holding a file pattern and
options. :class:`XarrayZarrRecipe` keeps that object and its arguments, and
:meth:`XarrayZarrRecipe.to_beam` builds the pipeline they stand for::

    Create(pattern.items()) | OpenURLWithFSSpec | OpenWithXarray
      | process each input   (delete_input_encoding, process_input(ds, fname))
      | split inputs         (subset_inputs)
      | combine into chunks  (inputs_per_chunk, xarray_concat_kwargs, process_chunk)
      | StoreToZarr          (target_chunks; the concat dim chunked as one combined chunk)

``arcoforge bake`` runs a module-level ``recipe = XarrayZarrRecipe(...)``
directly (the recipe id names the store, ``<id>.zarr``, unless
``storage_config.target`` names one). Arguments that no longer mean anything
(``lock_timeout``, ``open_input_with_kerchunk``, ``consolidate_zarr=False``)
are accepted with an :class:`ObsoleteArgumentWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace


import apache_beam as beam
import xarray as xr

from ..errors import RecipeError
from ..patterns import CombineOp, ConcatDim, Dimension, FilePattern
from .storage import StorageConfig
from .xarray_zarr_beam import XarrayZarrPipeline


class ObsoleteArgumentWarning(UserWarning):
    """An argument of an old recipe that arcoforge accepts but has no use for."""


# Arguments of 0.5–0.8 that arcoforge accepts and ignores, with why.
OBSOLETE = {
    "lock_timeout": "arcoforge's write tasks never share a chunk, so there are no locks to wait for",
    "open_input_with_kerchunk": "inputs are opened with xarray (kerchunk references are a separate recipe)",
}


@dataclass
class XarrayZarrRecipe:
    """A pangeo-forge-recipes 0.5–0.8 ``XarrayZarrRecipe``; :meth:`to_beam` is its arcoforge pipeline.

    Arguments mean what they meant in 0.8: ``inputs_per_chunk`` inputs (or
    input parts, with ``subset_inputs={dim: n}``) make one chunk along the
    concat dimension, unless ``target_chunks`` names that dimension;
    ``process_input(ds, fname)`` runs on each input, ``process_chunk(ds)`` on each
    combined chunk; ``xarray_open_kwargs`` open the inputs and
    ``xarray_concat_kwargs`` combine them; ``delete_input_encoding`` drops the
    inputs' encodings. ``cache_inputs=True`` caches inputs (arcoforge's cache);
    ``copy_input_to_local_file`` opens local copies. The store's metadata is
    always consolidated; ``consolidate_dimension_coordinates=False`` chunks its
    1-D coordinates like the data. ``zarr_format`` is 3 unless set to 2 (0.8
    wrote Zarr 2). The mapping is in docs/porting.md.
    """

    file_pattern: FilePattern
    inputs_per_chunk: int = 1
    target_chunks: dict[str, int] = field(default_factory=dict)
    cache_inputs: bool | None = None
    copy_input_to_local_file: bool = False
    consolidate_zarr: bool = True
    consolidate_dimension_coordinates: bool = True
    xarray_open_kwargs: dict = field(default_factory=dict)
    xarray_concat_kwargs: dict = field(default_factory=dict)
    delete_input_encoding: bool = True
    process_input: Callable[[xr.Dataset, str], xr.Dataset] | None = None
    process_chunk: Callable[[xr.Dataset], xr.Dataset] | None = None
    lock_timeout: int | None = None
    subset_inputs: dict[str, int] = field(default_factory=dict)
    open_input_with_kerchunk: bool = False
    storage_config: StorageConfig | None = None
    zarr_format: int = 3

    def __post_init__(self) -> None:
        for name, why in OBSOLETE.items():
            if getattr(self, name) not in (None, False):
                warnings.warn(f"XarrayZarrRecipe: {name} is accepted and ignored: {why}", ObsoleteArgumentWarning,
                              stacklevel=3)
        if not self.consolidate_zarr:
            warnings.warn("XarrayZarrRecipe: consolidate_zarr=False is ignored: arcoforge always publishes the "
                          "store with consolidated metadata", ObsoleteArgumentWarning, stacklevel=3)
        concat = self.file_pattern.concat_dims
        if len(concat) > 1 or len(self.file_pattern.merge_dims) > 1:
            raise RecipeError("XarrayZarrRecipe supports at most one ConcatDim and one MergeDim "
                              f"(as in pangeo-forge-recipes 0.8); the pattern has {self.file_pattern.dims}")
        if int(self.inputs_per_chunk) < 1:
            raise RecipeError(f"XarrayZarrRecipe: inputs_per_chunk must be at least 1, got {self.inputs_per_chunk}")
        wrong = [dim for dim in self.subset_inputs if dim not in concat]
        if wrong:
            raise RecipeError(f"XarrayZarrRecipe: subset_inputs can only cut along the concat dimension "
                              f"{concat}, not {wrong}")

    @property
    def concat_dim(self) -> str | None:
        return (self.file_pattern.concat_dims or [None])[0]

    def _pieces(self) -> int:
        return int(self.subset_inputs.get(self.concat_dim, 1)) if self.concat_dim else 1

    def combine_dims(self) -> list[Dimension]:
        """The store's combine dimensions; the concat one with the length of one chunk where every chunk has it."""
        dims = []
        for dim in self.file_pattern.combine_dims:
            nitems = None
            if isinstance(dim, ConcatDim) and dim.nitems_per_file:
                pieces, per_chunk = self._pieces(), int(self.inputs_per_chunk)
                if dim.nitems_per_file % pieces == 0 and (len(dim.keys) * pieces) % per_chunk == 0:
                    nitems = dim.nitems_per_file // pieces * per_chunk
            dims.append(Dimension(dim.name, dim.operation, nitems))
        return dims

    def store_target_chunks(self) -> dict[str, int]:
        """``target_chunks``, with the concat dimension chunked as one combined chunk unless it names it."""
        chunks = dict(self.target_chunks)
        concat = next((d for d in self.combine_dims() if d.operation == CombineOp.CONCAT), None)
        if concat is not None and concat.name not in chunks and concat.nitems_per_file:
            chunks[concat.name] = concat.nitems_per_file
        return chunks

    def _target(self, recipe_id: str | None) -> tuple[str | None, str]:
        target = self.storage_config.target if self.storage_config else None
        if target is not None:
            root, _, name = str(target).rstrip("/").rpartition("/")
            return root, name
        return None, f"{recipe_id or 'recipe'}.zarr"

    def to_beam(self, recipe_id: str | None = None) -> beam.PTransform:
        """The Beam pipeline this recipe stands for (applied to a pipeline's root)."""
        root, name = self._target(recipe_id)
        return XarrayZarrPipeline(self, store_name=name, target_root=root)

    def to_function(self) -> Callable[[], None]:
        """A function that bakes the recipe here, on the local runner (0.8's ``recipe.to_function()()``)."""
        from ..runtime.runners import run_local

        return lambda: run_local(self.to_beam()) and None

    def copy_pruned(self, nkeep: int = 2) -> "XarrayZarrRecipe":
        """A copy that bakes only the first ``nkeep`` inputs of the concat dimension."""
        return replace(self, file_pattern=self.file_pattern.prune(nkeep))
