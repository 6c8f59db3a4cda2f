"""Per-variable daily files merged (MergeDim) and concatenated (ConcatDim), with a preprocessor."""

import apache_beam as beam

from arcoforge import ConcatDim, FilePattern, MergeDim, OpenURLWithFSSpec, OpenWithXarray, Preprocess, StoreToZarr
from per_variable import DAYS, VARIABLES, ensure_archive, path_of

ensure_archive()


def make_url(variable, time):
    return path_of(variable, time)


pattern = FilePattern(
    make_url,
    MergeDim("variable", list(VARIABLES)),
    ConcatDim("time", DAYS, nitems_per_file=1),
    file_type="netcdf4",
)


def ice_percent_to_fraction(index, ds):
    """Sea-ice concentration comes in percent; the store holds a fraction (CF units "1")."""
    if "sea_ice_fraction" in ds and ds["sea_ice_fraction"].attrs.get("units") == "%":
        attrs = {**ds["sea_ice_fraction"].attrs, "units": "1", "long_name": "sea ice area fraction"}
        ds = ds.assign(sea_ice_fraction=(ds["sea_ice_fraction"] / 100).astype("float32"))
        ds["sea_ice_fraction"].attrs = attrs
    return ds


recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | Preprocess(ice_percent_to_fraction)
    | StoreToZarr(
        store_name="sst-ice.zarr",
        combine_dims=pattern.combine_dim_keys,
        target_chunks={"time": 4, "lat": 15},
    )
)
