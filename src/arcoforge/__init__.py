"""arcoforge: archives of NetCDF/HDF5 files into analysis-ready Zarr stores, on Apache Beam.

The public API keeps the names of pangeo-forge-recipes 0.10, so a recipe ports
by changing its imports to ``arcoforge``.
"""

import gc
import logging
from importlib.metadata import PackageNotFoundError, version


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that optional GCP client libraries are absent; they are not used."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in str(record.msg)


logging.getLogger().addFilter(_DropBeamImportNoise())

# Importing Beam, xarray and zarr creates about a million objects; the cyclic
# collector would walk all of them again and again on the way (measured: 0.35 s
# of a 1.9 s import). None of them is garbage, so it is paused until they are in.
_collecting = gc.isenabled()
gc.disable()
try:
    from .errors import ArcoforgeError, InputError, RecipeError, SchemaError
    from .patterns import (
        CombineOp,
        ConcatDim,
        Dimension,
        FilePattern,
        FileType,
        Index,
        MergeDim,
        Position,
        pattern_from_file_sequence,
    )
    from .runners import run_local, use_runtime_defaults
    from .transforms import (
        ConsolidateDimensionCoordinates,
        ConsolidateMetadata,
        OpenURLWithFSSpec,
        OpenWithXarray,
        Preprocess,
        StoreToZarr,
        WriteSTAC,
    )
finally:
    if _collecting:
        gc.enable()

try:
    __version__ = version("arcoforge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ArcoforgeError",
    "CombineOp",
    "ConcatDim",
    "ConsolidateDimensionCoordinates",
    "ConsolidateMetadata",
    "Dimension",
    "FilePattern",
    "FileType",
    "Index",
    "InputError",
    "MergeDim",
    "OpenURLWithFSSpec",
    "OpenWithXarray",
    "Position",
    "Preprocess",
    "RecipeError",
    "SchemaError",
    "StoreToZarr",
    "WriteSTAC",
    "pattern_from_file_sequence",
    "run_local",
    "use_runtime_defaults",
]
