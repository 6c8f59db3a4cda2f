"""Run-time values reach a recipe's steps as fields: injection, precedence, and shared option checks."""

from __future__ import annotations

import apache_beam as beam
import pytest

import arcoforge as af
from arcoforge.core.options import StoreOptionsError, store_option_problems
from arcoforge.runtime.context import BakeContext, RequiredAtRuntimeDefault
from arcoforge.runtime.injection import (INJECTION_SPECS_GROUP, inject, installed_injection_specs,
                                         recipe_steps)


def recipe(**store):
    pattern = af.pattern_from_file_sequence(["/data/a.nc", "/data/b.nc"], "time")
    return (beam.Create(pattern.items())
            | "Fetch" >> af.OpenURLWithFSSpec(on_error="skip")
            | af.OpenWithXarray()
            | af.StoreToZarr(store_name="s.zarr", combine_dims=pattern.combine_dim_keys, **store))


def test_a_field_left_for_the_run_time_is_filled_on_a_copy_per_bake():
    original = recipe()
    store = recipe_steps(original)[-1]
    assert store.target_root == RequiredAtRuntimeDefault() and store.context is None
    first = recipe_steps(inject(original, BakeContext(target_root="/a")))
    second = recipe_steps(inject(original, BakeContext(target_root="/b")))
    assert (first[-1].target_root, second[-1].target_root) == ("/a", "/b")
    assert all(step.context.target_root == "/a" for step in first[1:])
    assert store.target_root == RequiredAtRuntimeDefault() and store.context is None  # the recipe is unchanged
    assert [type(s).__name__ for s in first] == ["Create", "OpenURLWithFSSpec", "OpenWithXarray", "StoreToZarr"]


def test_the_recipe_wins_unless_the_run_time_value_is_named_an_override():
    chosen = recipe_steps(inject(recipe(target_root="/recipe", max_mem="300MB"),
                                 BakeContext(target_root="/cli", max_mem="2GB")))[-1]
    assert chosen.target_root == "/recipe"
    assert chosen.spec(chosen.context).url == "/recipe/s.zarr"
    assert chosen.spec(chosen.context).max_mem == 300_000_000
    forced = recipe_steps(inject(recipe(target_root="/recipe", max_mem="300MB"),
                                 BakeContext(target_root="/cli", max_mem="2GB",
                                             overrides={"target_root", "max_mem"})))[-1]
    assert forced.spec(forced.context).url == "/cli/s.zarr"
    assert forced.spec(forced.context).max_mem == 2_000_000_000
    with pytest.raises(ValueError, match="overrides names \\['num_workers'\\]"):
        BakeContext(overrides={"num_workers"})


def test_an_explicit_on_error_reaches_the_steps_after_it_through_their_context():
    steps = recipe_steps(inject(recipe(), BakeContext()))
    assert steps[2].on_error is None and steps[2].context.on_error == "skip"
    assert steps[1].context.on_error is None  # the step that says so keeps its own field


def test_our_injection_specs_are_registered_for_pangeo_forge_runner():
    from importlib.metadata import entry_points

    names = {entry.value for entry in entry_points(group=INJECTION_SPECS_GROUP)}
    assert "arcoforge.runtime.injection:get_injection_specs" in names
    specs = installed_injection_specs()
    assert specs["StoreToZarr"] == {"target_root": "TARGET_STORAGE"}
    assert specs["OpenURLWithFSSpec"] == {"cache": "INPUT_CACHE_STORAGE"}


def test_store_options_are_refused_when_built_with_the_words_lint_uses():
    pattern = af.pattern_from_file_sequence(["/data/a.nc"], "time")
    with pytest.raises(StoreOptionsError, match="gives both target_chunks and dynamic_chunking_fn"):
        af.StoreToZarr(store_name="x.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={"time": 1},
                       dynamic_chunking_fn=lambda ds: {"time": 1})
    with pytest.raises(StoreOptionsError, match="append_dim 'lat' is not a concat dimension"):
        af.StoreToZarr(store_name="x.zarr", combine_dims=pattern.combine_dim_keys, append_dim="lat")
    store = af.StoreToZarr(store_name="x.zarr", combine_dims=pattern.combine_dim_keys, target_root="/t",
                           target_chunks={"time": 0}, max_mem="lots")
    assert store.option_problems() == store_option_problems(
        store_name="x.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={"time": 0}, max_mem="lots")
    with pytest.raises(StoreOptionsError) as raised:
        _ = beam.Pipeline() | beam.Create([]) | store
    assert raised.value.problems == store.option_problems() and len(raised.value.problems) == 2
    assert "target_chunks['time'] is 0" in str(raised.value) and "max_mem 'lots' is not a size" in str(raised.value)


def test_bake_override_flag_and_config_key(tmp_path):
    from arcoforge.cli import build_parser
    from arcoforge.config import load_config

    args = build_parser().parse_args(["bake", "r.py", "--override", "max_mem", "--override", "target_root"])
    assert args.override == ["max_mem", "target_root"]
    config = tmp_path / "c.toml"
    config.write_text('[runner]\noverrides = ["max_mem"]\n')
    assert load_config(config).overrides == ("max_mem",)
    config.write_text('[runner]\noverrides = ["num_workers"]\n')
    with pytest.raises(af.RecipeError, match="overrides"):
        load_config(config)
