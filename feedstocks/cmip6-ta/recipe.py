"""One recipe per model, built by one function: a dict of recipes by id (meta.yaml `dict_object`)."""

import importlib.util
import os
from pathlib import Path

import apache_beam as beam

from arcoforge import ConcatDim, FilePattern, OpenURLWithFSSpec, OpenWithXarray, StoreToZarr

spec = importlib.util.find_spec("esmvaltool_sample_data")
if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("this feedstock reads the esmvaltool-sample-data package: pip install -r requirements.txt")
CMIP6 = Path(list(spec.submodule_search_locations)[0]) / "data" / "timeseries" / "CMIP6"
MODELS = {"awi-cm-1-1-mr-ta": "AWI-CM-1-1-MR", "bcc-csm2-mr-ta": "BCC-CSM2-MR"}


def model_files(model: str) -> dict[str, str]:
    """The model's files of monthly ta, by their time range (``195901-195912``)."""
    files = sorted(CMIP6.rglob(f"ta_Amon_{model}_historical_*.nc"))
    if not files:
        raise FileNotFoundError(f"esmvaltool-sample-data has no ta_Amon files of {model} under {CMIP6}")
    return {path.stem.rsplit("_", 1)[-1]: str(path) for path in files}


def model_recipe(model: str, store_name: str) -> beam.PTransform:
    files = model_files(model)

    def make_url(time):
        return files[time]

    pattern = FilePattern(make_url, ConcatDim("time", sorted(files)), file_type="netcdf4")
    return (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name=store_name, combine_dims=pattern.combine_dim_keys, target_chunks={"time": 120})
    )


recipes = {recipe_id: model_recipe(model, f"{recipe_id}.zarr") for recipe_id, model in MODELS.items()}
