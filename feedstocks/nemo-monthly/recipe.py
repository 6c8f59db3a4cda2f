"""Monthly NEMO files (curvilinear grid) into one store, located through importlib."""

import importlib.util
import os

import apache_beam as beam

from arcoforge import ConcatDim, FilePattern, OpenURLWithFSSpec, OpenWithXarray, StoreToZarr

spec = importlib.util.find_spec("iris_sample_data")
if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("this feedstock reads the iris-sample-data package: pip install -r requirements.txt")
NEMO = os.path.join(list(spec.submodule_search_locations)[0], "sample_data", "NEMO")
MONTHS = ["20150101-20150201", "20150201-20150301", "20150301-20150401"]


def make_url(time_counter):
    return os.path.join(NEMO, f"nemo_1m_{time_counter}_grid-T.nc")


pattern = FilePattern(make_url, ConcatDim("time_counter", MONTHS, nitems_per_file=1), file_type="netcdf4")

recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | StoreToZarr(
        store_name="nemo-tos-monthly.zarr",
        combine_dims=pattern.combine_dim_keys,
        target_chunks={"time_counter": 1, "y": 165},
    )
)
