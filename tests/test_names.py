"""Names a recipe gives (store_name, recipe ids) can never put anything outside the target root."""

from __future__ import annotations

import textwrap

import pytest

from arcoforge import cli
from arcoforge.errors import RecipeError
from arcoforge.names import safe_relative_path

RECIPE = textwrap.dedent('''
    import apache_beam as beam
    from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

    pattern = pattern_from_file_sequence({paths!r}, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name={name!r}, combine_dims=pattern.combine_dim_keys)
    )
''')
ESCAPES = ["../../x.zarr", "/../../x.zarr", "/tmp/x.zarr", "a/../../x.zarr", "..\\x.zarr", "a//x.zarr", "",
           "./x.zarr", "s3://other-bucket/x.zarr", "C:/x.zarr"]


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_leave_the_root_are_refused(name):
    with pytest.raises(RecipeError, match=r"^store_name .* would leave the target root: it "):
        safe_relative_path(name, "store_name")


def test_plain_names_are_kept():
    assert safe_relative_path("sst.zarr", "store_name") == "sst.zarr"
    assert safe_relative_path("daily/sst.zarr/", "store_name") == "daily/sst.zarr"
    with pytest.raises(RecipeError, match="recipe id 'a/b' would leave the target root: it has a '/'"):
        safe_relative_path("a/b", "recipe id", single_segment=True)


@pytest.mark.parametrize("name", ["../../x.zarr", "/../../x.zarr"])
def test_a_bake_of_an_escaping_store_name_exits_2_and_writes_nothing(tmp_path, daily_archive, s3, s3_filesystem,
                                                                     capsys, name):
    options, bucket = s3
    recipe = tmp_path / "feedstock" / "recipe.py"
    recipe.parent.mkdir()
    recipe.write_text(RECIPE.format(paths=daily_archive[:2], name=name))
    root = tmp_path / "a" / "b" / "out"
    for target in (str(root), f"s3://{bucket}/out"):
        code = cli.main(["-q", "bake", str(recipe), "--target-root", target, "--no-stac"])
        assert code == 2
        assert f"store_name {name!r} would leave the target root" in capsys.readouterr().err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != recipe]
    assert written == []
    assert s3_filesystem(options).find(bucket) == []


def test_a_recipe_id_with_a_slash_is_refused(tmp_path, daily_archive, capsys):
    recipe = tmp_path / "recipe.py"
    recipe.write_text(RECIPE.format(paths=daily_archive[:2], name="x.zarr"))
    from arcoforge.bake import _bake_recipe
    from arcoforge.feedstock import RecipeRef
    from arcoforge.runtime.events import Events

    with pytest.raises(RecipeError, match=r"recipe id '\.\./up' would leave the target root"):
        _bake_recipe(RecipeRef("../up", None, None, recipe, "recipe.py"), None, Events(), prune=None, dry_run=False,
                     metadata=None, break_lease=False, append=False, feedstock_name=None, stac_fields={})
