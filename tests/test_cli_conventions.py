"""The command line's conventions, the config's Beam options, and what lint checks before a bake would fail."""

from __future__ import annotations

import logging
import textwrap

import pytest

import arcoforge
from arcoforge.cli import EXIT_INFRASTRUCTURE, EXIT_RECIPE, main
from arcoforge.cli_args import log_level, parse
from arcoforge.errors import RecipeError
from arcoforge.lint import lint
from arcoforge.runtime.pipeline_options import check_beam_options


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"arcoforge {arcoforge.__version__}"


@pytest.mark.parametrize("argv, level", [
    (["lint", "x"], logging.INFO),
    (["-v", "lint", "x"], logging.DEBUG),
    (["lint", "x", "-v"], logging.DEBUG),
    (["-q", "lint", "x"], logging.WARNING),
    (["lint", "-q", "x"], logging.WARNING),
    (["stac", "validate", "c.json", "--verbose"], logging.DEBUG),
])
def test_verbosity_before_or_after_the_subcommand(argv, level):
    assert log_level(parse(argv)) == level


@pytest.mark.parametrize("argv, message", [
    (["bake", "f", "--target", "out"], "unrecognized arguments: --target out"),  # no abbreviation of --target-root
    (["bake", "f", "--num-worker", "2"], "unrecognized arguments: --num-worker"),
    (["bake", "f", "--bogus"], "unrecognized arguments: --bogus"),
    (["stac", "validate"], "the following arguments are required: PATH"),
])
def test_usage_errors_show_the_subcommands_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == EXIT_RECIPE
    err = capsys.readouterr().err
    command = " ".join(argv[:2]) if argv[0] == "stac" else argv[0]
    assert err.startswith(f"usage: arcoforge {command} ") and message in err


def test_stac_subcommands_have_their_own_help(capsys):
    with pytest.raises(SystemExit):
        parse(["stac", "validate", "--help"])
    assert capsys.readouterr().out.startswith("usage: arcoforge stac validate ")
    with pytest.raises(SystemExit):
        parse(["stac", "write", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: arcoforge stac write ") and "--public-url" in out
    args = parse(["stac", "/data/sst.zarr", "--id", "sst"])  # the form before `stac write` existed
    assert (args.command, args.stac_command, args.store, args.id) == ("stac", "write", "/data/sst.zarr", "sst")


def test_beam_options_are_checked_against_beams_own():
    assert check_beam_options({"experiments": ["a"], "max_num_workers": 3}) == {
        "experiments": ["a"], "max_num_workers": 3}
    with pytest.raises(RecipeError) as error:
        check_beam_options({"direct_num_workers": 2, "experimentz": ["a"], "machine_type": "n2"},
                           {"dataflow": {"machine_type": "n1"}})
    message = str(error.value)
    assert "runner.options.direct_num_workers clashes with --num-workers / runner.num_workers" in message
    assert "runner.options.experimentz is not a Beam pipeline option (did you mean experiments?)" in message
    assert "runner.options.machine_type clashes with runner.dataflow.machine_type" in message


RECIPE = """
    import apache_beam as beam
    from arcoforge import OpenWithXarray, Preprocess, StoreToZarr, pattern_from_file_sequence

    pattern = pattern_from_file_sequence({paths!r}, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenWithXarray(file_type=pattern.file_type)
        {preprocess}
        | StoreToZarr(store_name="t.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={{"depth": 2}})
    )
"""


def write_recipe(folder, paths, preprocess=""):
    folder.mkdir(exist_ok=True)
    path = folder / f"recipe{'_pre' if preprocess else ''}.py"
    path.write_text(textwrap.dedent(RECIPE.format(paths=paths, preprocess=preprocess)))
    return path


def test_a_config_with_bad_beam_options_and_an_unwritable_target_fail_clearly(tmp_path, daily_archive, capsys):
    recipe = write_recipe(tmp_path / "r", daily_archive[:2])
    config = tmp_path / "bake.toml"
    config.write_text("[runner]\noptions = {direct_num_workers = 2}\n")
    assert main(["-q", "bake", str(recipe), "--target-root", str(tmp_path / "out"), "--config", str(config)]) == 2
    assert "runner.options.direct_num_workers clashes with" in capsys.readouterr().err
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["-q", "bake", str(recipe), "--target-root", str(a_file / "out")]) == EXIT_INFRASTRUCTURE
    err = capsys.readouterr().err
    assert f"cannot write the target {a_file}/out/t.zarr: Not a directory" in err and "lease" not in err


def test_lint_makes_the_checks_the_bake_would_make(tmp_path, daily_archive):
    paths = [*daily_archive[:2], str(tmp_path / "gone-1.nc"), str(tmp_path / "gone-2.nc")]
    plain = lint(write_recipe(tmp_path / "r", paths))
    messages = "\n".join(map(str, plain.problems))
    assert f"2 of 4 local input files do not exist: {tmp_path}/gone-1.nc, {tmp_path}/gone-2.nc" in messages
    assert [p.severity for p in plain.problems if "target_chunks names ['depth']" in p.message] == ["error"]
    # A preprocessor may add the dimension: then only a warning.
    pre = lint(write_recipe(tmp_path / "r", daily_archive[:2], "| Preprocess(lambda index, ds: ds)"))
    assert [p.severity for p in pre.problems if "target_chunks names ['depth']" in p.message] == ["warning"]
    assert not pre.errors


def test_lint_reports_unknown_encoding_keys(tmp_path, daily_archive):
    recipe = write_recipe(tmp_path / "r", daily_archive[:2])
    # set after StoreToZarr checked it when built, as a recipe changing its step later would
    text = recipe.read_text() + "recipe._parts[-1].encoding = {'analysed_sst': {'compresser': 'zstd'}}\n"
    recipe.write_text(text)
    messages = "\n".join(map(str, lint(recipe).errors))
    assert "encoding['analysed_sst'] has keys ['compresser'] that are not understood" in messages


def test_stac_keys_of_the_config(tmp_path):
    from arcoforge.config import load_config

    config = tmp_path / "bake.toml"
    config.write_text('[stac]\npublic_url = "https://data.example.org/sst"\nstorage_options = {anon = true}\n')
    loaded = load_config(config)
    assert (loaded.stac_public_url, loaded.stac_storage_options) == ("https://data.example.org/sst", {"anon": True})
    config.write_text('[stac]\nstorage_options = {anon = true, client_kwargs = {aws_session_token = "t0ken"}}\n')
    with pytest.raises(RecipeError, match=r"\['client_kwargs.aws_session_token'\] may hold secrets") as error:
        load_config(config)
    assert "t0ken" not in str(error.value)
