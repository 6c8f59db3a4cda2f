"""The arcoforge command, run as a user or a bot would run it."""

from __future__ import annotations

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
