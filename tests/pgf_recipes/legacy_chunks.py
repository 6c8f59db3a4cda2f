# A pangeo-forge-recipes 0.8 recipe (before Beam): two inputs per chunk, each input and each chunk
# processed, inputs cached, and the options of the time that no longer mean anything.
import os

from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
from pangeo_forge_recipes.recipes import XarrayZarrRecipe

BASE_URL = os.environ["PGF_TEST_BASE_URL"]


def make_url(time):
    return f"{BASE_URL}/tas_{time:02d}.nc"


pattern = FilePattern(make_url, ConcatDim("time", list(range(6)), nitems_per_file=2))


def drop_elevation(ds, fname):
    ds = ds.drop_vars("elevation")
    ds.attrs["input_format"] = fname.rsplit(".", 1)[-1]
    return ds


def as_float32(ds):
    ds["tas"] = ds["tas"].astype("float32")
    return ds


recipe = XarrayZarrRecipe(
    pattern,
    target_chunks={"lat": 2},
    inputs_per_chunk=2,
    process_input=drop_elevation,
    process_chunk=as_float32,
    xarray_open_kwargs={"decode_coords": "all"},
    xarray_concat_kwargs={"data_vars": "minimal", "coords": "minimal", "compat": "override",
                          "combine_attrs": "override"},
    delete_input_encoding=True,
    consolidate_zarr=True,
    cache_inputs=True,
    lock_timeout=60,
)
