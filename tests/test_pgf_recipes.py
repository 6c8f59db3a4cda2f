"""Recipes written for pangeo-forge-recipes (0.10, and 0.8's XarrayZarrRecipe) run on arcoforge with only the
import changed, reading generated files over local HTTP; each store equals ``open_mfdataset`` of the inputs
after the recipe's own preprocessing.

The recipes are in tests/pgf_recipes/. One Beam run bakes four of them together; ``arcoforge bake`` bakes the
fifth (an XarrayZarrRecipe loaded by the recipe loader). Each run is one test (``pytest -n 2`` runs each once).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.compat.xarray_zarr import ObsoleteArgumentWarning
from arcoforge.feedstock import load_recipe_module

RECIPES = Path(__file__).with_name("pgf_recipes")
FileServer = sys.modules["arcoforge_tests_servers"].FileServer
TOKEN = "pgf-token-81c2"


def write_inputs(folder: Path) -> dict[str, Path]:
    """tas_00..05.nc and pr_00..05.nc (NetCDF-4, two days each, packed and deflated), climatology.nc (NetCDF-3)."""
    folder.mkdir(parents=True, exist_ok=True)
    lat, lon = np.linspace(-45, 45, 4), np.linspace(0, 288, 5)
    rng = np.random.default_rng(17)
    files = {}
    for i in range(6):
        time = pd.date_range("2001-01-01", periods=12, freq="D")[2 * i: 2 * i + 2]
        coords = {"time": time, "lat": lat, "lon": lon}
        tas = xr.Dataset({"tas": (("time", "lat", "lon"), 270 + 20 * rng.random((2, 4, 5)), {"units": "K"}),
                          "elevation": (("lat", "lon"), np.arange(20.0).reshape(4, 5))}, coords)
        pr = xr.Dataset({"pr": (("time", "lat", "lon"), rng.random((2, 4, 5)).astype("float32"))}, coords)
        for name, ds, encoding in [(f"tas_{i:02d}.nc", tas, {"tas": {"zlib": True, "dtype": "int16",
                                                                       "scale_factor": 0.01, "add_offset": 280.0,
                                                                       "_FillValue": -32767}}),
                                   (f"pr_{i:02d}.nc", pr, {"pr": {"zlib": True}})]:
            ds.to_netcdf(folder / name, engine="h5netcdf", encoding=encoding)
            files[name] = folder / name
    clim = xr.Dataset({"clim": (("lat", "lon"), rng.random((4, 5)))}, {"lat": lat, "lon": lon})
    clim.to_netcdf(folder / "climatology.nc", engine="scipy")
    files["climatology.nc"] = folder / "climatology.nc"
    return files


def ported(name: str, folder: Path) -> Path:
    """The recipe file with its imports changed from pangeo_forge_recipes to arcoforge, and nothing else."""
    source = (RECIPES / name).read_text()
    assert "pangeo_forge_recipes" in source and "arcoforge" not in source
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(source.replace("pangeo_forge_recipes", "arcoforge"))
    return path


def mf(paths, preprocess=None):
    return xr.open_mfdataset(paths, engine="h5netcdf", combine="nested", concat_dim="time", preprocess=preprocess,
                             data_vars="minimal", coords="minimal", compat="override").load()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Inputs served by two servers (one open, one wanting a token), and the recipes' environment.

    Each Beam run belongs to one test, so ``pytest -n 2`` never runs one twice.
    """
    files = write_inputs(tmp_path / "inputs")
    servers = FileServer().start(), FileServer().start()
    servers[1].token = TOKEN
    for server in servers:
        server.files.update({name: path.read_bytes() for name, path in files.items()})
    monkeypatch.setenv("PGF_TEST_BASE_URL", servers[0].url("").rstrip("/"))
    monkeypatch.setenv("PGF_TEST_TOKEN_URL", servers[1].url("").rstrip("/"))
    monkeypatch.setenv("PGF_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("PGF_TEST_CACHE", str(tmp_path / "pgf-cache"))
    monkeypatch.setenv("ARCOFORGE_CACHE_DIR", str(tmp_path / "default-cache"))
    yield tmp_path, files, servers
    for server in servers:
        server.stop()


def af_bake(path: Path, target: Path) -> None:
    from arcoforge.bake import bake

    report = bake(str(path), target_root=str(target), stac=False)
    assert [(r.recipe_id, len(r.stores)) for r in report.recipes] == [("recipe", 1)], report


class AllOf(beam.PTransform):
    """Several recipes in one pipeline, so one Beam run bakes them all."""

    def __init__(self, recipes):
        super().__init__()
        self.recipes = recipes

    def expand(self, root):
        return tuple(root | name >> recipe for name, recipe in self.recipes.items())


def test_010_and_08_recipes_run_with_only_the_import_changed(served):
    root, files, servers = served
    modules = {name: load_recipe_module(ported(f"{name}.py", root / "ported"))
               for name in ("daily_celsius", "token_merge", "one_file_cached")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules["legacy_subsets"] = load_recipe_module(ported("legacy_subsets.py", root / "ported"))
    recipes = {name: module.recipe for name, module in modules.items()}
    recipes["legacy_subsets"] = recipes["legacy_subsets"].to_beam("legacy-subsets")
    target = root / "target"
    with af.use_runtime_defaults(target_root=str(target)):
        af.run_local(AllOf(recipes))  # one Beam run bakes the four
    check_daily_celsius(target, files, modules["daily_celsius"])
    check_token_merge(target, files, servers[1])
    check_one_file_cached(target, files, root / "pgf-cache")
    check_legacy_subsets(target, files, caught)


def check_daily_celsius(target, files, module):
    """0.10: a custom preprocessing transform annotated with Indexed[T], a zarr-2 annotated check."""
    store = xr.open_zarr(target / "daily-celsius.zarr")
    expected = mf([files[f"tas_{i:02d}.nc"] for i in range(6)], module.to_celsius)
    xr.testing.assert_allclose(store.load(), expected)
    assert store["tas"].attrs["units"] == "degC" and "elevation" in store.coords
    assert store["time"].encoding["chunks"][0] >= 12  # one chunk (with room for appends)
    assert store["tas"].encoding["chunks"][0] == 4


def check_token_merge(target, files, token_server):
    """0.10: query-string secrets, a merge dimension, no file type, dynamic chunks, attrs."""
    store = xr.open_zarr(target / "token-merge.zarr")
    expected = xr.merge([mf([files[f"{v}_{i:02d}.nc"] for i in range(6)]) for v in ("tas", "pr")])
    xr.testing.assert_allclose(store.load(), expected)
    assert store["pr"].encoding["chunks"][0] == 3  # from dynamic_chunking_fn
    assert store.attrs["produced_by"] == "a pangeo-forge recipe"
    assert TOKEN not in repr(store.attrs)
    assert token_server.seen_queries and all(q == f"token={TOKEN}" for q in token_server.seen_queries)


def check_one_file_cached(target, files, cache_folder):
    """0.10: a one-file pattern, open_url through a CacheFSSpecTarget, `with f as fp`, MapWithConcurrencyLimit."""
    store = xr.open_zarr(target / "climatology.zarr")
    expected = xr.open_dataset(files["climatology.nc"], engine="scipy").rename({"clim": "tas_climatology"})
    xr.testing.assert_allclose(store.load(), expected)
    assert len(os.listdir(cache_folder)) == 1  # the CacheFSSpecTarget the recipe named


def check_legacy_subsets(target, files, caught):
    """0.8: subset_inputs, a merge dimension, copy_input_to_local_file, coordinates chunked like the data."""
    store = xr.open_zarr(target / "legacy-subsets.zarr")
    expected = xr.merge([mf([files[f"{v}_{i:02d}.nc"] for i in range(3)]) for v in ("tas", "pr")])
    xr.testing.assert_allclose(store.load(), expected)
    assert store["tas"].encoding["chunks"][0] == 1  # two steps a file, cut in two
    assert store["time"].encoding["chunks"] == (1,)  # consolidate_dimension_coordinates=False
    assert store["tas"].encoding["scale_factor"] == 0.01  # delete_input_encoding=False: the packing is kept
    assert any("consolidate_zarr=False" in str(w.message) for w in caught)


def test_an_08_recipe_baked_by_arcoforge_bake(served):
    root, files, _ = served
    legacy = ported("legacy_chunks.py", root / "ported")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        af_bake(legacy, root / "target")
    module = load_recipe_module(legacy)  # its functions, for the expected dataset
    store = xr.open_zarr(root / "target" / "recipe.zarr")
    expected = module.as_float32(mf([files[f"tas_{i:02d}.nc"] for i in range(6)],
                                    lambda ds: module.drop_elevation(ds, "tas.nc")))
    xr.testing.assert_allclose(store.load(), expected)
    assert store["tas"].dtype == np.float32 and "elevation" not in store
    assert "scale_factor" not in store["tas"].encoding  # delete_input_encoding=True: the packing is dropped
    assert store["tas"].encoding["chunks"] == (4, 2, 5)  # two inputs a chunk; lat from target_chunks
    assert store.attrs["input_format"] == "nc"  # process_input was given the input URL
    lock = [w for w in caught if issubclass(w.category, ObsoleteArgumentWarning) and "lock_timeout" in str(w.message)]
    assert lock, [str(w.message) for w in caught]

    # A CI bot's test bake: 3 of the 6 inputs, so the last chunk of two inputs has one.
    from arcoforge.bake import bake

    report = bake(str(legacy), target_root=str(root / "pruned"), stac=False, prune=3)
    assert report.recipes[0].stores == [str(root / "pruned" / "recipe.zarr")]
    pruned = xr.open_zarr(root / "pruned" / "recipe.zarr")
    xr.testing.assert_allclose(pruned.load(), expected.isel(time=slice(0, 6)))


def test_an_08_reference_recipe_baked_by_arcoforge_bake(served):
    from arcoforge.bake import bake

    root, files, servers = served
    legacy = ported("legacy_references.py", root / "ported")
    bake(str(legacy), target_root=str(root / "target"), stac=False)
    references = root / "target" / "recipe" / "pr.json"
    opened = xr.open_dataset(str(references), engine="kerchunk", chunks={}).load()
    expected = mf([files[f"pr_{i:02d}.nc"] for i in range(6)])
    xr.testing.assert_equal(opened, expected)
    text = references.read_text()
    assert servers[0].url("pr_00.nc") in text and len(text) < 20_000  # references to the served files, not data
    with pytest.raises(af.RecipeError, match="coo_map cannot be honoured"):
        af.HDFReferenceRecipe(af.pattern_from_file_sequence(["a.nc"], "time"), coo_map={"time": "cf:time"})
