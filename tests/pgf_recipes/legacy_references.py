"""A 0.8-era reference recipe: kerchunk JSON over NetCDF-4 files on a web server, no data copied."""

import os

from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
from pangeo_forge_recipes.recipes.reference_hdf_zarr import HDFReferenceRecipe

BASE_URL = os.environ["PGF_TEST_BASE_URL"]


def make_url(time):
    return f"{BASE_URL}/pr_{time:02d}.nc"


pattern = FilePattern(make_url, ConcatDim("time", list(range(6)), nitems_per_file=2), file_type="netcdf4")

recipe = HDFReferenceRecipe(pattern, output_json_fname="pr.json", identical_dims=["lat", "lon"],
                            inline_threshold=50)
