"""``HDFReferenceRecipe`` of pangeo-forge-recipes 0.5–0.8, as sugar over the virtual-reference transforms.

The pre-Beam recipe wrote one kerchunk JSON file of references to the chunks of
NetCDF4/HDF5 inputs. :meth:`HDFReferenceRecipe.to_beam` builds the same with
arcoforge's transforms::

    Create(pattern.items()) | OpenWithKerchunk | WriteCombinedReference

``arcoforge bake`` runs a module-level ``recipe = HDFReferenceRecipe(...)``;
the references go to ``<target_root>/<recipe id>/<output_json_fname>`` unless
``storage_config.target`` names the folder. Arguments that rewrote kerchunk's
combine step (``coo_map``, ``coo_dtypes``, ``preprocess``, ``postprocess``) are
refused rather than ignored, since ignoring them would change the output; the
intake catalog (``output_intake_yaml_fname``) is not written (a warning says so).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import apache_beam as beam

from ..errors import RecipeError
from ..patterns import FilePattern
from .storage import StorageConfig
from .xarray_zarr import ObsoleteArgumentWarning

# Arguments that changed how kerchunk combined the references; no arcoforge equivalent.
UNSUPPORTED = ("coo_map", "coo_dtypes", "preprocess", "postprocess")


@dataclass
class HDFReferenceRecipe:
    """A pangeo-forge-recipes 0.5–0.8 ``HDFReferenceRecipe``; :meth:`to_beam` is its arcoforge pipeline.

    ``concat_dims`` default to the pattern's concat dimension; ``identical_dims``
    are taken from the first input; variables of at most ``inline_threshold``
    bytes are stored in the references; ``netcdf_storage_options`` reach the
    inputs and ``output_storage_options`` the written file.
    """

    file_pattern: FilePattern
    output_json_fname: str = "reference.json"
    output_intake_yaml_fname: str | None = "reference.yaml"
    netcdf_storage_options: dict = field(default_factory=dict)
    inline_threshold: int = 500
    output_storage_options: dict = field(default_factory=dict)
    concat_dims: list[str] = field(default_factory=list)
    identical_dims: list[str] = field(default_factory=list)
    coo_map: dict = field(default_factory=dict)
    coo_dtypes: dict = field(default_factory=dict)
    preprocess: Callable | None = None
    postprocess: Callable | None = None
    storage_config: StorageConfig | None = None

    def __post_init__(self) -> None:
        given = [name for name in UNSUPPORTED if getattr(self, name)]
        if given:
            raise RecipeError(f"HDFReferenceRecipe: {', '.join(given)} cannot be honoured: arcoforge combines "
                              "references with VirtualiZarr, not kerchunk's MultiZarrToZarr; write the recipe "
                              "with OpenWithKerchunk and WriteCombinedReference, or copy the data with StoreToZarr")
        if self.output_intake_yaml_fname and self.output_intake_yaml_fname != "reference.yaml":
            warnings.warn("HDFReferenceRecipe: output_intake_yaml_fname is ignored: no intake catalog is written "
                          "(the references open with xarray's kerchunk engine)", ObsoleteArgumentWarning,
                          stacklevel=3)
        if not (self.concat_dims or self.file_pattern.concat_dims):
            raise RecipeError("HDFReferenceRecipe needs a concat dimension: the pattern has none and "
                              "concat_dims is empty")

    def to_beam(self, recipe_id: str | None = None) -> beam.PTransform:
        """The Beam pipeline this recipe stands for (applied to a pipeline's root)."""
        from ..beam.virtual import OpenWithKerchunk, WriteCombinedReference

        target = self.storage_config.target if self.storage_config else None
        root, _, name = str(target).rstrip("/").rpartition("/") if target is not None else (None, "", recipe_id
                                                                                               or "recipe")
        return (
            "Create" >> beam.Create(list(self.file_pattern.items()))
            | OpenWithKerchunk(file_type=self.file_pattern.file_type, inline_threshold=self.inline_threshold,
                               storage_options=dict(self.netcdf_storage_options) or None)
            | WriteCombinedReference(store_name=name, concat_dims=list(self.concat_dims or
                                                                       self.file_pattern.concat_dims),
                                     identical_dims=list(self.identical_dims), target_root=root or None,
                                     storage_options=dict(self.output_storage_options) or None,
                                     output_file_name=self.output_json_fname)
        )

    def copy_pruned(self, nkeep: int = 2) -> "HDFReferenceRecipe":
        """A copy that references only the first ``nkeep`` inputs of each concat dimension."""
        return replace(self, file_pattern=self.file_pattern.prune(nkeep))


def is_hdf_reference_recipe(value: Any) -> bool:
    return isinstance(value, HDFReferenceRecipe)
