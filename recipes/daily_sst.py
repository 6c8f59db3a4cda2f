"""Example recipe: a daily sea-surface-temperature archive into one Zarr store.

One NetCDF4 file per day goes into a store with 30-day chunks. This is the recipe
``arcoforge demo`` bakes; run it yourself on the demo archive with::

    ARCOFORGE_DEMO_INPUTS=arcoforge-demo/inputs arcoforge bake recipes/daily_sst.py --target-root out/

Written like a pangeo-forge-recipes 0.10 recipe: only the imports name arcoforge.
"""

import os

import apache_beam as beam

from arcoforge import (
    ConcatDim,
    ConsolidateDimensionCoordinates,
    ConsolidateMetadata,
    FilePattern,
    OpenURLWithFSSpec,
    OpenWithXarray,
    StoreToZarr,
)
from arcoforge.demo import demo_days, demo_path

INPUT_DIR = os.path.abspath(os.environ.get("ARCOFORGE_DEMO_INPUTS", "arcoforge-demo/inputs"))
NDAYS = int(os.environ.get("ARCOFORGE_DEMO_DAYS", "90"))


def make_path(time):
    return demo_path(INPUT_DIR, time)


pattern = FilePattern(make_path, ConcatDim("time", demo_days(NDAYS), nitems_per_file=1))

recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | StoreToZarr(
        store_name="daily-sst.zarr",
        combine_dims=pattern.combine_dim_keys,
        target_chunks={"time": 30},
        attrs={"summary": "Daily analysed SST and sea-ice fraction on a 1-degree grid (synthetic)."},
    )
    | ConsolidateDimensionCoordinates()
    | ConsolidateMetadata()
)
