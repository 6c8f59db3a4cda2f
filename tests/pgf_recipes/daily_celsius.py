# A pangeo-forge-recipes 0.10 recipe: daily files, a custom preprocessing transform, a check of the store.
import os

import apache_beam as beam
import xarray as xr
import zarr

from pangeo_forge_recipes.patterns import ConcatDim, FilePattern
from pangeo_forge_recipes.transforms import (
    ConsolidateDimensionCoordinates,
    ConsolidateMetadata,
    Indexed,
    OpenURLWithFSSpec,
    OpenWithXarray,
    StoreToZarr,
    T,
)

BASE_URL = os.environ["PGF_TEST_BASE_URL"]


def make_url(time):
    return f"{BASE_URL}/tas_{time:02d}.nc"


pattern = FilePattern(make_url, ConcatDim("time", list(range(6)), nitems_per_file=2))


def to_celsius(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds["tas"] = ds["tas"] - 273.15
    ds["tas"].attrs["units"] = "degC"
    return ds.set_coords("elevation")


class ToCelsius(beam.PTransform):
    """Kelvin to Celsius, and the elevation as a coordinate."""

    @staticmethod
    def _convert(item: Indexed[T]) -> Indexed[T]:
        index, ds = item
        return index, to_celsius(ds)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Convert" >> beam.Map(self._convert)


def test_ds(store: zarr.storage.FSStore) -> zarr.storage.FSStore:
    ds = xr.open_dataset(store, engine="zarr", chunks={})
    assert ds["tas"].attrs["units"] == "degC"
    assert "elevation" in ds.coords
    return store


recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | ToCelsius()
    | StoreToZarr(
        store_name="daily-celsius.zarr",
        combine_dims=pattern.combine_dim_keys,
        target_chunks={"time": 4},
    )
    | ConsolidateDimensionCoordinates()
    | ConsolidateMetadata()
    | "Test dataset" >> beam.Map(test_ds)
)
