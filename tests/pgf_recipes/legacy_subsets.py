# A pangeo-forge-recipes 0.8 recipe: two variables, each input cut in two along time, inputs copied
# to local files, encodings kept, coordinates chunked like the data.
import os

from pangeo_forge_recipes.patterns import ConcatDim, FilePattern, MergeDim
from pangeo_forge_recipes.recipes.xarray_zarr import XarrayZarrRecipe

BASE_URL = os.environ["PGF_TEST_BASE_URL"]


def make_url(variable, time):
    return f"{BASE_URL}/{variable}_{time:02d}.nc"


pattern = FilePattern(make_url, MergeDim("variable", ["tas", "pr"]), ConcatDim("time", [0, 1, 2], 2))

recipe = XarrayZarrRecipe(
    pattern,
    subset_inputs={"time": 2},
    copy_input_to_local_file=True,
    delete_input_encoding=False,
    consolidate_zarr=False,
    consolidate_dimension_coordinates=False,
)
