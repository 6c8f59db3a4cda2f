# A pangeo-forge-recipes 0.10 recipe: one file, fetched into a cache target, opened by hand with
# `with ... as f`, through a transform that keeps requests to the server few.
import os

import apache_beam as beam
import xarray as xr

from pangeo_forge_recipes.openers import open_url
from pangeo_forge_recipes.patterns import FilePattern
from pangeo_forge_recipes.storage import CacheFSSpecTarget
from pangeo_forge_recipes.transforms import Indexed, MapWithConcurrencyLimit, StoreToZarr

BASE_URL = os.environ["PGF_TEST_BASE_URL"]
cache = CacheFSSpecTarget.from_url(os.environ["PGF_TEST_CACHE"])

pattern = FilePattern(lambda: f"{BASE_URL}/climatology.nc", file_type="netcdf3")


def read_climatology(item: Indexed[object]) -> Indexed[xr.Dataset]:
    index, f = item
    with f as fp:
        ds = xr.open_dataset(fp, engine="scipy").load()
    return index, ds.rename({"clim": "tas_climatology"})


recipe = (
    beam.Create(pattern.items())
    | MapWithConcurrencyLimit(open_url, kwargs={"cache": cache}, max_concurrency=1)
    | "Read" >> beam.Map(read_climatology)
    | StoreToZarr(store_name="climatology.zarr", combine_dims=pattern.combine_dim_keys)
)
