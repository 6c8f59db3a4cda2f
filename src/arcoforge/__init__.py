"""arcoforge: archives of NetCDF/HDF5 files into analysis-ready Zarr stores, on Apache Beam.

The public API keeps the names of pangeo-forge-recipes 0.10, so a recipe ports
by changing its imports to ``arcoforge``.

The names are imported on first use: ``import arcoforge.cli`` (the command,
and the processes it starts) does not pay for Beam, xarray and zarr before it
knows it needs them. Type checkers and IDEs see the same names through the
``TYPE_CHECKING`` imports below. Importing ``arcoforge`` has no side effect
beyond defining these names.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import ArcoforgeError, InfrastructureError, InputError, RecipeError, SchemaError
    from .io.lease import LeaseError
    from .patterns import (CombineOp, ConcatDim, Dimension, FilePattern, FileType, Index, IndexedPosition, MergeDim,
                           Position, pattern_from_file_sequence)
    from .io import InputCache, RetryPolicy
    from .runtime.context import BakeContext, RequiredAtRuntimeDefault, use_runtime_defaults
    from .runtime.runners import run_local
    from .beam.consolidate import ConsolidateDimensionCoordinates, ConsolidateMetadata
    from .beam.open import OpenURLWithFSSpec, OpenWithXarray
    from .beam.preprocess import Preprocess
    from .beam.stac import WriteSTAC
    from .beam.store import StoreToZarr
    from .beam.icechunk import StoreToIcechunk
    from .beam.virtual import OpenWithKerchunk, WriteCombinedReference, WriteVirtualIcechunk
    from .compat.concurrency import MapWithConcurrencyLimit
    from .compat.storage import CacheFSSpecTarget, FlatFSSpecTarget, FSSpecTarget
    from .compat.hdf_reference import HDFReferenceRecipe
    from .compat.xarray_zarr import XarrayZarrRecipe


class _DropBeamImportNoise(logging.Filter):
    """Beam warns on the root logger, while it is imported, that optional GCP clients are absent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in str(record.msg)

try:
    __version__ = version("arcoforge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# The public API: each name and the module that defines it.
_PUBLIC = {
    "ArcoforgeError": "errors",
    "InfrastructureError": "errors",
    "InputError": "errors",
    "LeaseError": "io.lease",
    "InputCache": "io",
    "RetryPolicy": "io",
    "RecipeError": "errors",
    "SchemaError": "errors",
    "CombineOp": "patterns",
    "ConcatDim": "patterns",
    "Dimension": "patterns",
    "FilePattern": "patterns",
    "FileType": "patterns",
    "Index": "patterns",
    "IndexedPosition": "patterns",
    "MergeDim": "patterns",
    "Position": "patterns",
    "pattern_from_file_sequence": "patterns",
    "run_local": "runtime.runners",
    "use_runtime_defaults": "runtime.context",
    "BakeContext": "runtime.context",
    "RequiredAtRuntimeDefault": "runtime.context",
    "ConsolidateDimensionCoordinates": "beam.consolidate",
    "ConsolidateMetadata": "beam.consolidate",
    "OpenURLWithFSSpec": "beam.open",
    "OpenWithXarray": "beam.open",
    "Preprocess": "beam.preprocess",
    "StoreToZarr": "beam.store",
    "StoreToIcechunk": "beam.icechunk",
    "OpenWithKerchunk": "beam.virtual",
    "WriteCombinedReference": "beam.virtual",
    "WriteVirtualIcechunk": "beam.virtual",
    "WriteSTAC": "beam.stac",
    # pangeo-forge-recipes compatibility (docs/porting.md)
    "CacheFSSpecTarget": "compat.storage",
    "FSSpecTarget": "compat.storage",
    "FlatFSSpecTarget": "compat.storage",
    "MapWithConcurrencyLimit": "compat.concurrency",
    "XarrayZarrRecipe": "compat.xarray_zarr",
    "HDFReferenceRecipe": "compat.hdf_reference",
}

__all__ = sorted(_PUBLIC)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while heavy modules are imported.

    Importing Beam, xarray and zarr creates about a million objects; the
    collector would walk all of them again and again on the way (measured:
    0.35 s of a 1.9 s import). None of them is garbage.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def import_quickly(*modules: str) -> None:
    """Import modules (``"arcoforge.transforms"``, ``"xarray"``) with the collector paused.

    While they are imported, and only then, Beam's import-time warning about the optional GCP
    clients is kept off the root logger.
    """
    noise = _DropBeamImportNoise()
    root = logging.getLogger()
    root.addFilter(noise)
    try:
        with collector_paused():
            for name in modules:
                importlib.import_module(name)
    finally:
        root.removeFilter(noise)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import_quickly(f"{__name__}.{module}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
