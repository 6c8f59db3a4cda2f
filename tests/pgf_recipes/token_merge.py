# A pangeo-forge-recipes 0.10 recipe: two variables merged, a server that wants a token in the query
# string, the engine left to xarray, chunks computed from the dataset.
import os

import apache_beam as beam

from pangeo_forge_recipes.patterns import ConcatDim, FilePattern, MergeDim
from pangeo_forge_recipes.transforms import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr

BASE_URL = os.environ["PGF_TEST_TOKEN_URL"]


def make_url(variable, time):
    return f"{BASE_URL}/{variable}_{time:02d}.nc"


pattern = FilePattern(
    make_url,
    MergeDim("variable", ["tas", "pr"]),
    ConcatDim("time", list(range(6)), nitems_per_file=2),
    query_string_secrets={"token": os.environ["PGF_TEST_TOKEN"]},
)


def time_chunks(template_ds, steps_per_chunk):
    return {"time": steps_per_chunk, "lat": template_ds.sizes["lat"]}


recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec(secrets=pattern.query_string_secrets, max_concurrency=2, fsspec_sync_patch=True)
    | OpenWithXarray()
    | StoreToZarr(
        store_name="token-merge.zarr",
        combine_dims=pattern.combine_dim_keys,
        dynamic_chunking_fn=time_chunks,
        dynamic_chunking_fn_kwargs={"steps_per_chunk": 3},
        attrs={"produced_by": "a pangeo-forge recipe"},
    )
)
