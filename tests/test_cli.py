"""The arcoforge command, run as a user or a bot would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from arcoforge.cli import EXIT_INPUT, EXIT_OK, EXIT_RECIPE, main

RECIPE = textwrap.dedent('''
    import apache_beam as beam
    from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence
    from helpers import PATHS, drop_nothing  # a helper module beside the recipe

    pattern = pattern_from_file_sequence(PATHS, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | beam.MapTuple(drop_nothing)
        | StoreToZarr(store_name="cli.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={"time": 4})
    )
''')


@pytest.fixture
def recipe_dir(tmp_path, daily_archive):
    folder = tmp_path / "feedstock"
    folder.mkdir()
    (folder / "helpers.py").write_text(
        f"PATHS = {daily_archive!r}\n\ndef drop_nothing(index, ds):\n    return index, ds\n"
    )
    (folder / "recipe.py").write_text(RECIPE)
    return folder


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "arcoforge.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("num_workers", ["1", "2"])
def test_bake_a_recipe_file_with_a_helper_module(tmp_path, recipe_dir, daily_archive, num_workers):
    target = tmp_path / "stores"
    result = run_cli("bake", str(recipe_dir / "recipe.py"), "--target-root", str(target),
                     "--num-workers", num_workers)
    assert result.returncode == EXIT_OK, result.stderr
    assert f"wrote {target}/cli.zarr" in result.stdout
    expected = xr.open_mfdataset(daily_archive, engine="h5netcdf")
    xr.testing.assert_equal(xr.open_zarr(target / "cli.zarr").load(), expected.load())


def test_bake_writes_a_valid_stac_collection_and_the_stac_command_checks_it(tmp_path, recipe_dir, schemas_dir,
                                                                            capsys):
    target = tmp_path / "stores"
    code = main(["-q", "bake", str(recipe_dir / "recipe.py"), "--target-root", str(target),
                 "--stac-schemas", str(schemas_dir)])
    assert code == EXIT_OK
    collection = target / "stac" / "cli" / "collection.json"
    assert f"wrote STAC collection {collection}" in capsys.readouterr().out
    assert (target / "stac" / "cli" / "quicklook.png").exists()
    document = json.loads(collection.read_text())
    assert document["assets"]["zarr"]["href"] == "../../cli.zarr"  # relative: the target root can be copied
    assert len(document["arcoforge:provenance"]["recipe_sha256"]) == 64
    assert xr.open_zarr(target / "cli.zarr").attrs["arcoforge_recipe_sha256"] == \
        document["arcoforge:provenance"]["recipe_sha256"]
    assert main(["stac", "validate", str(target / "stac" / "catalog.json"), "--schemas", str(schemas_dir)]) == EXIT_OK

    document["license"] = 42
    collection.write_text(json.dumps(document))
    assert main(["stac", "validate", str(collection), "--schemas", str(schemas_dir)]) == EXIT_INPUT
    assert "license" in capsys.readouterr().err

    # `arcoforge stac STORE` rebuilds it in place
    assert main(["-q", "stac", str(target / "cli.zarr"), "--schemas", str(schemas_dir)]) == EXIT_OK
    assert json.loads(collection.read_text())["license"] != 42


def test_bad_input_gives_one_line_and_exit_code_3(tmp_path, daily_archive, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    broken = folder / "broken.nc"
    broken.write_bytes(b"not a netcdf file at all")
    paths = list(daily_archive[:2]) + [str(broken)]
    (folder / "helpers.py").write_text(f"PATHS = {paths!r}\n\ndef drop_nothing(index, ds):\n    return index, ds\n")
    (folder / "recipe.py").write_text(RECIPE)
    code = main(["-q", "bake", str(folder / "recipe.py"), "--target-root", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT
    assert "broken.nc (pattern index Index(time=2))" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "cli.zarr").exists()


def test_recipe_errors_exit_2(tmp_path, recipe_dir, capsys):
    assert main(["-q", "bake", str(recipe_dir / "recipe.py"), "--target-root", str(tmp_path),
                 "--recipe-id", "nope"]) == EXIT_RECIPE
    assert "no recipe 'nope'" in capsys.readouterr().err

    (recipe_dir / "raises.py").write_text("x = 1\nraise RuntimeError('boom in recipe')\n")
    assert main(["-q", "bake", str(recipe_dir / "raises.py"), "--target-root", str(tmp_path)]) == EXIT_RECIPE
    err = capsys.readouterr().err
    assert "failed to import (line 2 of" in err and "boom in recipe" in err

    assert main(["-q", "bake", str(tmp_path / "missing.py"), "--target-root", str(tmp_path)]) == EXIT_RECIPE
    assert "does not exist" in capsys.readouterr().err


def test_demo_bakes_the_example_recipe(tmp_path):
    result = run_cli("demo", "--workdir", str(tmp_path / "demo"), "--days", "6")
    assert result.returncode == EXIT_OK, result.stderr
    store = tmp_path / "demo" / "stores" / "daily-sst.zarr"
    assert f'xr.open_zarr("{store}")' in result.stdout
    ds = xr.open_zarr(store)
    assert ds.sizes == {"time": 6, "lat": 180, "lon": 360}
    assert np.isnan(ds.analysed_sst.isel(time=0).values).any()
    assert "apitools" not in result.stderr


def test_bake_json_is_one_object_per_line_for_a_bot(tmp_path):
    feedstock = os.path.join(os.path.dirname(__file__), os.pardir, "feedstocks", "daily-sst")
    result = run_cli("bake", feedstock, "--prune", "--json", "--target-root", str(tmp_path))
    assert result.returncode == EXIT_OK, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # nothing else on stdout
    summary = events[-1]
    assert summary["event"] == "result" and summary["status"] == "succeeded"
    assert summary["recipes"] == ["daily-sst"] and summary["stores"] == [f"{tmp_path}/daily-sst.zarr"]
    assert summary["stac"] == [f"{tmp_path}/stac/daily-sst/collection.json"]
    assert summary["counts"]["inputs"] == 2 and summary["durations"]["total_seconds"] > 0
    assert {"bake_start", "recipe_start", "progress", "store_written", "stac_written", "recipe_done"} <= \
        {event["event"] for event in events}


def test_bake_json_reports_the_failure_class(tmp_path, daily_archive, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.nc").write_bytes(b"not a netcdf file at all")
    paths = list(daily_archive[:2]) + [str(folder / "broken.nc")]
    (folder / "helpers.py").write_text(f"PATHS = {paths!r}\n\ndef drop_nothing(index, ds):\n    return index, ds\n")
    (folder / "recipe.py").write_text(RECIPE)
    code = main(["-q", "bake", str(folder / "recipe.py"), "--target-root", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.splitlines()[-1])
    assert code == EXIT_INPUT
    assert (summary["status"], summary["exit_code"], summary["error_class"]) == ("failed", EXIT_INPUT, "input")
    assert "broken.nc (pattern index Index(time=2))" in summary["error"]
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1


def test_a_recipe_ending_in_write_stac_gets_one_collection_per_store(tmp_path, recipe_dir):
    """The recipe's own WriteSTAC describes the store; the bake command must not write a second one."""
    recipe = RECIPE.replace("from arcoforge import ", "from arcoforge import WriteSTAC, ")
    recipe = recipe.rstrip().rstrip(")") + '    | WriteSTAC(collection_id="sst-daily")\n)\n'
    (recipe_dir / "with_stac.py").write_text(recipe)
    target = tmp_path / "stores"
    assert main(["-q", "bake", str(recipe_dir / "with_stac.py"), "--target-root", str(target)]) == EXIT_OK
    collections = sorted(p.relative_to(target).as_posix() for p in target.rglob("collection.json"))
    assert collections == ["stac/sst-daily/collection.json"]
    catalog = json.loads((target / "stac" / "catalog.json").read_text())
    assert [link["href"] for link in catalog["links"] if link["rel"] == "child"] == ["./sst-daily/collection.json"]
