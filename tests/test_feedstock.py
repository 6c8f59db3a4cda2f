"""Feedstocks: meta.yaml, lint, pruned test bakes with JSON output, and the example feedstocks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import apache_beam as beam
import pytest
import xarray as xr

from arcoforge.cli import EXIT_OK, EXIT_RECIPE, main
from arcoforge.feedstock import (
    feedstock_folder,
    feedstock_recipes,
    load_feedstock,
    load_recipe_module,
    meta_problems,
    prune_pipeline,
)
from arcoforge.lint import lint

FEEDSTOCKS = Path(__file__).parents[1] / "feedstocks"
EXAMPLES = sorted(path.name for path in FEEDSTOCKS.iterdir() if (path / "meta.yaml").is_file())


def _needs_requirements(name: str) -> None:
    """Skip when a package the feedstock's requirements.txt names is not installed."""
    for line in (FEEDSTOCKS / name / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package = line.split(">", 1)[0].split("=", 1)[0].split("<", 1)[0].strip().replace("-", "_")
            pytest.importorskip(package.lower(),
                                reason=f"feedstock {name} needs {line} (pip install 'arcoforge[test]')")


def test_the_examples_cover_what_the_issue_asks_for():
    assert {"daily-sst", "sst-ice-merge", "nemo-monthly", "cmip6-ta"} <= set(EXAMPLES)
    merge = (FEEDSTOCKS / "sst-ice-merge" / "recipe.py").read_text()
    assert "MergeDim(" in merge and "Preprocess(" in merge
    assert "dict_object" in (FEEDSTOCKS / "cmip6-ta" / "meta.yaml").read_text()


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_feedstock_lints_clean(name, capsys):
    _needs_requirements(name)
    assert main(["-q", "lint", str(FEEDSTOCKS / name)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"lint passed: {FEEDSTOCKS / name}" in out and "0 error(s), 0 warning(s)" in out


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_feedstock_bakes_pruned_with_json(name, tmp_path, capsys):
    _needs_requirements(name)
    code = main(["-q", "bake", str(FEEDSTOCKS / name), "--prune", "--json", "--target-root", str(tmp_path)])
    out = capsys.readouterr().out
    events = [json.loads(line) for line in out.splitlines()]  # every line of stdout is one JSON object
    result = events[-1]
    assert code == EXIT_OK, result
    assert result["event"] == "result" and result["status"] == "succeeded" and result["exit_code"] == 0
    feedstock = load_feedstock(FEEDSTOCKS / name)
    recipes = feedstock_recipes(feedstock)
    assert result["recipes"] == list(recipes) and result["feedstock"] == name
    assert len(result["stores"]) == len(recipes) == len(result["stac"])
    assert result["counts"]["recipes"] == len(recipes) and result["counts"]["write_tasks"] > 0
    assert set(result["durations"]["recipes"]) == set(recipes)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "bake_start" and "progress" in kinds and kinds.count("recipe_done") == len(recipes)
    for recipe_id, url, stac_path in zip(result["recipes"], result["stores"], result["stac"]):
        ds = xr.open_zarr(url)
        for dim in [d for d in ds.dims if d in ("time", "time_counter")]:
            # the first two files of each concat dimension
            ref = recipes[recipe_id]
            pattern = getattr(ref.module, "pattern", None)
            if pattern is not None and pattern.nitems_per_input.get(dim):
                assert ds.sizes[dim] == 2 * pattern.nitems_per_input[dim]
        collection = json.loads(Path(stac_path).read_text())
        assert collection["id"] == recipe_id and collection["title"] == feedstock.meta["title"]
        assert collection["license"] == feedstock.meta["provenance"]["license"]
        assert ds.attrs["arcoforge_recipe_id"] == recipe_id


def test_pruned_daily_sst_equals_its_first_two_files(tmp_path, capsys):
    assert main(["-q", "bake", str(FEEDSTOCKS / "daily-sst"), "--prune", "2", "--target-root", str(tmp_path)]) == 0
    module = load_recipe_module(FEEDSTOCKS / "daily-sst" / "recipe.py")
    files = [url for _, url in module.pattern.prune(2).items()]
    expected = xr.open_mfdataset(files, engine="h5netcdf").load()
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "daily-sst.zarr").load(), expected)
    assert f"wrote {tmp_path}/daily-sst.zarr" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# meta.yaml


GOOD_META = {
    "title": "t",
    "description": "d",
    "recipes": [{"id": "one", "object": "recipe:recipe"}],
    "provenance": {"providers": [{"name": "p", "roles": ["producer"], "url": "https://example.org"}],
                   "license": "CC-BY-4.0"},
    "maintainers": [{"name": "m", "orcid": "0000-0002-1825-0097", "github": "someone"}],
}


def test_meta_schema_names_each_field_and_what_was_expected():
    assert meta_problems(GOOD_META) == []
    assert meta_problems({**GOOD_META, "recipes": [{"dict_object": "recipe:recipes"}],
                          "bakery": {"id": "extra fields are fine"}}) == []
    missing = {k: v for k, v in GOOD_META.items() if k != "title"}
    assert meta_problems(missing) == ["meta.yaml: field title is missing (expected a one-line title)"]
    no_license = {**GOOD_META, "provenance": {"providers": GOOD_META["provenance"]["providers"]}}
    assert "field provenance.license is missing (expected an SPDX license identifier" in meta_problems(no_license)[0]
    bad = {**GOOD_META, "recipes": [{"id": "a/b", "object": "recipe"}],
           "maintainers": [{"name": "m", "orcid": "123"}],
           "provenance": {**GOOD_META["provenance"], "providers": [{"name": "p", "roles": ["owner"]}]}}
    problems = "\n".join(meta_problems(bad))
    assert "field recipes[0].id: 'a/b' is not valid; expected letters, digits" in problems
    assert "field recipes[0].object: 'recipe' is not valid; expected 'module:attribute'" in problems
    assert "field maintainers[0].orcid: '123' is not valid; expected an ORCID iD" in problems
    assert "field provenance.providers[0].roles[0]: 'owner' is not valid; expected one of producer" in problems
    both = {**GOOD_META, "recipes": [{"id": "x", "object": "recipe:r", "dict_object": "recipe:d"}]}
    assert "field recipes[0]" in meta_problems(both)[0]
    twice = {**GOOD_META, "recipes": [{"id": "x", "object": "recipe:a"}, {"id": "x", "object": "recipe:b"}]}
    assert "id 'x' is given more than once" in meta_problems(twice)[0]
    assert "expected a mapping" in meta_problems(["not", "a", "mapping"])[0]


def _feedstock(tmp_path, meta: str, recipe: str = "", name: str = "fs") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "meta.yaml").write_text(textwrap.dedent(meta))
    (folder / "recipe.py").write_text(textwrap.dedent(recipe))
    (folder / "requirements.txt").write_text("")
    return folder


META = """
    title: A test feedstock
    description: Made by a test.
    recipes:
      - id: {recipe_id}
        object: "{object}"
    provenance:
      providers: [{{name: tests}}]
      license: CC0-1.0
    maintainers: [{{name: tests}}]
"""

RECIPE = """
    import apache_beam as beam
    from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

    pattern = pattern_from_file_sequence({paths!r}, "time", nitems_per_file=1)
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name="t.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={chunks})
    )
"""


def _lint_and_bake_fail(folder, tmp_path, capsys, *expected):
    """lint and bake both exit 2 with the expected text, one clear message and no traceback."""
    assert main(["-q", "lint", str(folder)]) == EXIT_RECIPE
    lint_out = capsys.readouterr()
    assert main(["-q", "bake", str(folder), "--target-root", str(tmp_path / "out")]) == EXIT_RECIPE
    bake_err = capsys.readouterr().err
    for text in expected:
        assert text in lint_out.err, lint_out
        assert text in bake_err, bake_err
    assert "Traceback" not in lint_out.err + bake_err
    assert bake_err.startswith("arcoforge: error: ")


def test_bad_feedstocks_give_one_clear_message_and_exit_2(tmp_path, daily_archive, capsys):
    missing_field = _feedstock(tmp_path, "title: t\nrecipes: [{id: a, object: 'recipe:recipe'}]\n", name="missing")
    _lint_and_bake_fail(missing_field, tmp_path, capsys, "field description is missing")

    no_object = _feedstock(tmp_path, META.format(recipe_id="a", object="recipe:nope"),
                           RECIPE.format(paths=daily_archive[:2], chunks={}), name="no-object")
    _lint_and_bake_fail(no_object, tmp_path, capsys, "recipe.py has no object 'nope'; recipe-like objects it "
                                                     "defines: recipe")

    no_module = _feedstock(tmp_path, META.format(recipe_id="a", object="helpers:recipe"), name="no-module")
    _lint_and_bake_fail(no_module, tmp_path, capsys, "module helpers should be", "helpers.py, which does not exist")

    raises = _feedstock(tmp_path, META.format(recipe_id="a", object="recipe:recipe"),
                        "x = 1\nraise RuntimeError('boom at import')\n", name="raises")
    _lint_and_bake_fail(raises, tmp_path, capsys, "failed to import (line 2 of", "boom at import")

    bad_yaml = _feedstock(tmp_path, "title: [unclosed\n", name="bad-yaml")
    _lint_and_bake_fail(bad_yaml, tmp_path, capsys, "meta.yaml (line 2): not valid YAML")


def test_unknown_recipe_id_lists_the_ids(tmp_path, capsys):
    assert main(["-q", "bake", str(FEEDSTOCKS / "cmip6-ta"), "--recipe-id", "nope",
                 "--target-root", str(tmp_path)]) == EXIT_RECIPE
    err = capsys.readouterr().err
    assert "no recipe 'nope' in" in err and "recipes found: awi-cm-1-1-mr-ta, bcc-csm2-mr-ta" in err
    assert len(err.strip().splitlines()) == 1


def test_lint_checks_the_recipe_without_running_it(tmp_path, daily_archive, capsys):
    paths = list(daily_archive[:3])
    folder = _feedstock(tmp_path, META.format(recipe_id="a", object="recipe:recipe"),
                        RECIPE.format(paths=paths + [paths[0]], chunks={"time": 0, 5: 2, "lat": "lots", "depth": 3}))
    (folder / "requirements.txt").write_text("xarray>=2024\nnot a requirement!\n")
    report = lint(folder)
    messages = "\n".join(map(str, report.problems))
    assert "both have URL" in messages and "expected one file per key" in messages
    assert "target_chunks['time'] is 0; expected a length of at least 1, or -1" in messages
    assert "target_chunks key 5 is not a dimension name; expected a string" in messages
    assert "target_chunks['lat'] = 'lots' is not a size" in messages
    # No step of this recipe can add a dimension: what the bake would reject is an error.
    assert "error: " in messages and "target_chunks names ['depth'], which the first input does not have" in messages
    assert "requirements.txt:2: 'not a requirement!' is not a requirement pip understands" in messages
    assert not list(tmp_path.glob("**/t.zarr"))  # nothing was run
    assert main(["-q", "lint", str(folder), "--json"]) == EXIT_RECIPE
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "result" and lines[-1]["errors"] == len(report.errors)
    assert all(line["event"] == "problem" for line in lines[:-1])


def test_lint_finds_format_functions_that_fail_and_mismatched_combine_dims(tmp_path):
    folder = _feedstock(tmp_path, META.format(recipe_id="a", object="recipe:recipe"), """
        import apache_beam as beam
        from arcoforge import ConcatDim, FilePattern, MergeDim, OpenWithXarray, StoreToZarr

        def make_url(variable, time):
            if time == 3:
                raise ValueError("no file for 3")
            return f"/data/{variable}/{time}.nc"

        pattern = FilePattern(make_url, MergeDim("variable", ["a"]), ConcatDim("time", [1, 2, 3]))
        items = [(index, make_url(variable="a", time=t)) for index, t in zip(pattern, [1, 2])]
        recipe = (
            beam.Create(items)
            | OpenWithXarray()
            | StoreToZarr(store_name="x.zarr", combine_dims=pattern.combine_dim_keys[1:],
                          target_chunks={"variable": 1})
        )
    """)
    messages = "\n".join(map(str, lint(folder).problems))
    assert "the format function fails for keys {'variable': 'a', 'time': 3}: ValueError: no file for 3" in messages
    assert "combine_dims ['time (concat)'] differ from the inputs' dimensions" in messages
    assert "target_chunks names 'variable', a merge dimension" not in messages  # not a combine dim here
    assert "expected pattern.combine_dim_keys" in messages


# ---------------------------------------------------------------------------------------------
# Pruning


def test_prune_reaches_a_create_inside_a_composite_and_keeps_merge_dims(tmp_path):
    from arcoforge import ConcatDim, FilePattern, MergeDim
    from arcoforge.runtime.runners import local_runner

    pattern = FilePattern(lambda v, t: f"{v}-{t}", MergeDim("v", ["a", "b"]), ConcatDim("t", list(range(5))))
    seen = tmp_path / "seen.txt"

    class Inputs(beam.PTransform):
        def expand(self, pbegin):
            return pbegin | beam.Create(pattern.items())

    def record(urls):
        seen.write_text(",".join(sorted(urls)))

    pipeline = beam.Pipeline(runner=local_runner())
    _ = (pipeline | Inputs() | beam.MapTuple(lambda index, url: url) | beam.combiners.ToList()
         | beam.Map(record))
    report = prune_pipeline(pipeline, 2)
    pipeline.run().wait_until_finish()
    assert (report.total, report.kept) == (10, 4)
    assert seen.read_text() == "a-0,a-1,b-0,b-1"


def test_prune_fails_clearly_or_uses_the_hook(tmp_path, daily_archive, capsys):
    folder = _feedstock(tmp_path, META.format(recipe_id="a", object="recipe:recipe"), f"""
        import apache_beam as beam
        recipe = beam.Create({daily_archive[:2]!r}) | beam.Map(print)
    """)
    assert main(["-q", "bake", str(folder), "--prune", "--target-root", str(tmp_path / "out")]) == EXIT_RECIPE
    err = capsys.readouterr().err
    assert "cannot prune recipe 'a': its inputs are not a beam.Create(pattern.items())" in err
    assert "prune_recipe(recipe_id, nkeep)" in err

    hooked = _feedstock(tmp_path, META.format(recipe_id="a", object="recipe:recipe"), f"""
        import apache_beam as beam
        from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

        PATHS = {list(daily_archive)!r}

        def make_recipe(paths):
            pattern = pattern_from_file_sequence(paths, "time")
            return (beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray(file_type=pattern.file_type)
                    | StoreToZarr(store_name="t.zarr", combine_dims=pattern.combine_dim_keys))

        recipe = make_recipe(PATHS)

        def prune_recipe(recipe_id, nkeep):
            return make_recipe(PATHS[:nkeep - 1])  # the hook decides what a test bake reads
    """, name="hooked")
    assert main(["-q", "bake", str(hooked), "--prune", "--no-stac", "--target-root", str(tmp_path / "h")]) == EXIT_OK
    assert xr.open_zarr(tmp_path / "h" / "t.zarr").sizes["time"] == 1


def test_pangeo_forge_repository_layout_is_found(tmp_path):
    repo = tmp_path / "my-feedstock"
    (repo / "feedstock").mkdir(parents=True)
    (repo / "feedstock" / "meta.yaml").write_text("title: x\n")
    assert feedstock_folder(repo) == repo / "feedstock"
    assert feedstock_folder(repo / "feedstock" / "meta.yaml") == repo / "feedstock"
    assert feedstock_folder(tmp_path) is None
