"""pangeo-forge-recipes 0.10 semantics a recipe can observe, and the ``pangeo_forge_recipes`` alias (issue 17)."""

from __future__ import annotations

import dataclasses
import io
import pickle
import sys
import typing
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr

import arcoforge as af
from arcoforge.errors import RecipeError
from arcoforge.io import InputCache, RemoteInput
from arcoforge.openers import CachedPath, LocalPath, open_url, open_with_xarray, prepare_input
from arcoforge.patterns import CombineOp, Dimension, FileType, Index, Position
from arcoforge.runtime.context import resolve_context

PGF_COMPAT = Path(__file__).parents[1] / "pgf-compat" / "src"


@pytest.fixture
def served_file(file_server, tmp_path):
    path = tmp_path / "x.nc"
    xr.Dataset({"a": ("t", np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")
    file_server.files["x.nc"] = path.read_bytes()
    return file_server, path


def test_without_a_file_type_xarray_sniffs_the_engine_of_a_remote_input(served_file):
    server, _ = served_file
    source = prepare_input(server.url("x.nc"), cache=False)
    assert isinstance(source, RemoteInput) and isinstance(source.open(), io.IOBase)
    ds = open_with_xarray(source, FileType.unknown, load=True)
    np.testing.assert_array_equal(ds.a.values, [0, 1, 2])


def test_every_kind_of_fetched_input_reads_with_a_with_block(served_file, tmp_path):
    server, path = served_file
    sources = [prepare_input(str(path)), prepare_input(server.url("x.nc"), cache=False),
               prepare_input(server.url("x.nc"), cache=str(tmp_path / "cache"))]
    assert [type(s) for s in sources] == [LocalPath, RemoteInput, CachedPath]
    for source in sources:
        with source as f:
            assert f.read(4) == b"\x89HDF"
        assert f.closed
        assert pickle.loads(pickle.dumps(source)) == source


def test_open_url_fetches_into_a_cache_target_once(served_file, tmp_path):
    server, _ = served_file
    cache = af.CacheFSSpecTarget.from_url(str(tmp_path / "cache"))
    for _ in range(2):
        with open_url(server.url("x.nc"), cache=cache) as f:
            assert xr.open_dataset(f, engine="h5netcdf").a.size == 3
    assert server.count("x.nc") == 1
    assert isinstance(open_url(server.url("x.nc")), __import__("fsspec").core.OpenFile)


def test_cache_none_means_no_cache_unless_the_runner_names_one(tmp_path):
    assert af.OpenURLWithFSSpec()._settings(resolve_context(None))["cache"] is False
    default = af.OpenURLWithFSSpec(cache=True)._settings(resolve_context(None))["cache"]
    assert isinstance(default, InputCache) and default.machine_local
    with af.use_runtime_defaults(cache_root=str(tmp_path / "c")):
        for cache in (None, True):
            chosen = af.OpenURLWithFSSpec(cache=cache)._settings(resolve_context(None))["cache"]
            assert chosen.root == str(tmp_path / "c")
    target = af.CacheFSSpecTarget.from_url(str(tmp_path / "t"))
    assert af.OpenURLWithFSSpec(cache=target)._settings(resolve_context(None))["cache"].root.endswith("/t")


def test_constructor_positions_follow_pangeo_forge_010():
    opener = af.OpenURLWithFSSpec(None, {"token": "t"}, {"block_size": 0}, 2, True)
    assert (opener.secrets, opener.max_concurrency, opener.fsspec_sync_patch) == ({"token": "t"}, 2, True)
    pgf_store = ["combine_dims", "store_name", "target_root", "target_chunks", "dynamic_chunking_fn",
                 "dynamic_chunking_fn_kwargs", "attrs", "encoding", "append_dim"]
    assert [f.name for f in dataclasses.fields(af.StoreToZarr)][:9] == pgf_store
    pgf_open = ["file_type", "load", "copy_to_local", "xarray_open_kwargs"]
    assert [f.name for f in dataclasses.fields(af.OpenWithXarray)][:4] == pgf_open


def test_store_to_zarr_refuses_what_pangeo_forge_refuses_when_built():
    dims = [Dimension("var", CombineOp.MERGE), Dimension("time", CombineOp.CONCAT)]
    with pytest.raises(RecipeError, match="both target_chunks and dynamic_chunking_fn"):
        af.StoreToZarr(dims, "x.zarr", target_chunks={"time": 2}, dynamic_chunking_fn=lambda ds: {})
    for wrong in ("lat", "var"):  # not a dimension of the pattern; a merge dimension
        with pytest.raises(RecipeError, match=f"append_dim '{wrong}' is not a concat dimension"):
            af.StoreToZarr(dims, "x.zarr", append_dim=wrong)
    assert af.StoreToZarr(dims, "x.zarr", append_dim="time").append_dim == "time"


def test_targets_name_stores_and_caches(tmp_path):
    target = af.FSSpecTarget.from_url(str(tmp_path / "out"))
    assert (tmp_path / "out").is_dir()
    store = af.StoreToZarr([Dimension("time", CombineOp.CONCAT)], "s.zarr", target_root=target)
    assert store._url() == str(tmp_path / "out" / "s.zarr")
    flat = af.FlatFSSpecTarget.from_url(str(tmp_path / "flat"))
    with flat.open("https://h/a/b.nc", mode="wb") as f:
        f.write(b"x")
    assert flat.exists("https://h/a/b.nc") and flat.size("https://h/a/b.nc") == 1
    assert [p.parent for p in (tmp_path / "flat").iterdir()] == [tmp_path / "flat"]
    xr.Dataset({"a": ("t", np.arange(3))}).to_zarr((target / "m.zarr").get_mapper())
    assert xr.open_zarr((target / "m.zarr").get_mapper()).a.values.tolist() == [0, 1, 2]


def test_indexed_is_a_tuple_type_beam_understands():
    from arcoforge.transforms import Indexed

    assert Indexed[int] == typing.Tuple[Index, int]
    hint = beam.typehints.native_type_compatibility.convert_to_beam_type(Indexed[xr.Dataset])
    assert hint == beam.typehints.Tuple[Index, xr.Dataset]
    from arcoforge.types import IndexedPosition

    assert IndexedPosition(4, dimsize=8).indexed and isinstance(IndexedPosition(4), Position)


def test_zarr2_store_annotations_evaluate():
    namespace: dict = {}
    source = ("import zarr\nimport arcoforge.transforms\n"  # annotations evaluated at def time, as in 0.10's examples
              "def test_ds(store: zarr.storage.FSStore) -> zarr.storage.FSStore:\n    return store\n")
    exec(compile(source, "recipe.py", "exec", dont_inherit=True), namespace)
    assert str in typing.get_args(namespace["test_ds"].__annotations__["store"])


def test_map_with_concurrency_limit_keeps_keys(tmp_path):
    from apache_beam.testing.util import assert_that, equal_to

    with beam.Pipeline() as pipeline:
        out = (pipeline | beam.Create([(i, i) for i in range(5)])
               | af.MapWithConcurrencyLimit(pow, args=[2], max_concurrency=2))
        assert_that(out, equal_to([(i, i * i) for i in range(5)]))


@pytest.fixture
def pgf_alias(monkeypatch):
    """The arcoforge-pgf-compat distribution's package on sys.path, as `pip install arcoforge[pgf-compat]` puts it."""
    monkeypatch.syspath_prepend(str(PGF_COMPAT))
    yield
    for name in [n for n in sys.modules if n == "pangeo_forge_recipes" or n.startswith("pangeo_forge_recipes.")]:
        del sys.modules[name]


def test_the_alias_answers_pangeo_forge_imports_with_arcoforge(pgf_alias, tmp_path, monkeypatch):
    plugin = tmp_path / "pgf_earthdata_like.py"  # a plug-in written against pangeo-forge-recipes 0.10
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from pangeo_forge_recipes.transforms import OpenURLWithFSSpec, MapWithConcurrencyLimit\n"
        "from pangeo_forge_recipes.openers import open_url\n"
        "from pangeo_forge_recipes.storage import CacheFSSpecTarget\n"
        "@dataclass\n"
        "class OpenURLWithToken(OpenURLWithFSSpec):\n"
        "    token: str = ''\n"
        "    def expand(self, pcoll):\n"
        "        self.open_kwargs = {'client_kwargs': {'headers': {'Authorization': self.token}}}\n"
        "        return super().expand(pcoll)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import pangeo_forge_recipes.transforms
    from pangeo_forge_recipes.recipes import XarrayZarrRecipe
    from pgf_earthdata_like import OpenURLWithToken

    import importlib

    from arcoforge.compat.alias import MODULES

    for name, target in MODULES.items():  # every alias has its file in the distribution
        assert importlib.import_module(name) is importlib.import_module(target), name
    assert pangeo_forge_recipes.transforms.StoreToZarr is af.StoreToZarr and XarrayZarrRecipe is af.XarrayZarrRecipe
    assert pangeo_forge_recipes.__version__.startswith("0.10.8+arcoforge.")
    assert issubclass(OpenURLWithToken, af.OpenURLWithFSSpec)
    del sys.modules["pgf_earthdata_like"]


def test_the_alias_refuses_to_shadow_a_real_pangeo_forge(pgf_alias, tmp_path, monkeypatch):
    from arcoforge.compat.alias import RealPangeoForgeInstalled

    info = tmp_path / "pangeo_forge_recipes-0.10.8.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pangeo-forge-recipes\nVersion: 0.10.8\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RealPangeoForgeInstalled, match="pangeo-forge-recipes 0.10.8 is installed"):
        import pangeo_forge_recipes  # noqa: F401


def test_xarray_zarr_recipe_arguments():
    pattern = af.FilePattern(lambda v, t: f"{v}{t}.nc", af.MergeDim("v", ["a", "b"]),
                             af.ConcatDim("t", [0, 1, 2, 3], nitems_per_file=6))
    recipe = af.XarrayZarrRecipe(pattern, inputs_per_chunk=2, subset_inputs={"t": 3})
    assert recipe.combine_dims()[1].nitems_per_file == 4 and recipe.store_target_chunks() == {"t": 4}
    assert af.XarrayZarrRecipe(pattern, inputs_per_chunk=3).combine_dims()[1].nitems_per_file is None  # 4 % 3
    assert af.XarrayZarrRecipe(pattern, target_chunks={"t": 5}).store_target_chunks() == {"t": 5}
    target = af.FSSpecTarget(__import__("fsspec").filesystem("memory"), "/out/my.zarr")
    from arcoforge.storage import StorageConfig

    transform = af.XarrayZarrRecipe(pattern, storage_config=StorageConfig(target)).to_beam("ignored")
    assert (transform.target_root, transform.store_name) == ("memory:///out", "my.zarr")
    assert af.XarrayZarrRecipe(pattern).to_beam("sst").store_name == "sst.zarr"
    with pytest.raises(RecipeError, match="only cut along the concat dimension"):
        af.XarrayZarrRecipe(pattern, subset_inputs={"v": 2})
    two = af.FilePattern(lambda t, u: "x", af.ConcatDim("t", [0]), af.ConcatDim("u", [0]))
    with pytest.raises(RecipeError, match="at most one ConcatDim"):
        af.XarrayZarrRecipe(two)
    with pytest.warns(UserWarning, match="open_input_with_kerchunk is accepted and ignored"):
        af.XarrayZarrRecipe(pattern, open_input_with_kerchunk=True)


def test_xarray_zarr_steps_cut_and_combine_in_order():
    from arcoforge.compat.xarray_zarr_steps import chunk_key, combine_chunk, split_input

    time = Dimension("time", CombineOp.CONCAT)
    ds = xr.Dataset({"a": ("time", np.arange(5.0))})
    parts = split_input(Index({time: Position(1)}), ds, "time", 2)
    assert [(i[time].value, p.sizes["time"]) for i, p in parts] == [(2, 3), (3, 2)]
    assert {chunk_key(part, "time", 2) for part in parts} == {((), 1)}
    index, combined = combine_chunk(parts[::-1], "time", 2, {}, lambda d: d * 2)
    assert index[time] == Position(1)
    np.testing.assert_array_equal(combined.a.values, np.arange(5.0) * 2)


def test_merkle_list_finds_where_a_grown_pattern_starts_and_leaves_secrets_out():
    from arcoforge import FilePattern, ConcatDim

    def pattern(days, **kwargs):
        return FilePattern(lambda time: f"https://h/{time}.nc", ConcatDim("time", days), **kwargs)

    old, grown = pattern([1, 2, 3]), pattern([1, 2, 3, 4, 5])
    assert len(old.get_merkle_list()) == 4 and grown.get_merkle_list()[:4] == old.get_merkle_list()
    start = grown.start_processing_from(old.get_merkle_list()[-1])
    assert start is not None and dict(grown.items())[start] == "https://h/4.nc"
    assert pattern([1, 9, 3]).start_processing_from(old.get_merkle_list()[-1]) is None  # an input changed
    assert old.start_processing_from(old.get_merkle_list()[-1]) is None  # nothing new
    secret = pattern([1, 2, 3], query_string_secrets={"token": "s3cr3t"})
    assert secret.get_merkle_list() == old.get_merkle_list()
    assert pattern([1, 2, 3], file_type="netcdf3").get_merkle_list()[0] != old.get_merkle_list()[0]
