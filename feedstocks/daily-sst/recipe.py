"""Daily files concatenated along time, rechunked to 10-day chunks.

Written like a pangeo-forge-recipes 0.10 recipe; the helper module `inputs` sits beside it.
"""

import apache_beam as beam

from arcoforge import ConcatDim, FilePattern, OpenURLWithFSSpec, OpenWithXarray, StoreToZarr
from inputs import DAYS, ensure_archive, path_of

ensure_archive()


def make_url(time):
    return path_of(time)


pattern = FilePattern(make_url, ConcatDim("time", DAYS, nitems_per_file=1), file_type="netcdf4")

recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | StoreToZarr(
        store_name="daily-sst.zarr",
        combine_dims=pattern.combine_dim_keys,
        target_chunks={"time": 10},
    )
)
