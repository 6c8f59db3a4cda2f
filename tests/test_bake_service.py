"""The bake service used from Python, as the command uses it but with no subprocess and no argument parsing."""

from __future__ import annotations

import io
import json
import textwrap

import pytest
import xarray as xr

from arcoforge.bake import BakeReport, bake
from arcoforge.errors import RecipeError
from arcoforge.io.state import StoreState
from arcoforge.runtime.events import Events

RECIPE = textwrap.dedent('''
    import apache_beam as beam
    from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

    pattern = pattern_from_file_sequence({paths!r}, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name="service.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={{"time": 4}})
    )
''')


def test_a_bake_through_the_service_returns_its_report_and_emits_its_events(tmp_path, daily_archive):
    recipe = tmp_path / "recipe.py"
    recipe.write_text(RECIPE.format(paths=daily_archive))
    target = tmp_path / "stores"
    stream = io.StringIO()

    report = bake(str(recipe), str(target), events=Events(stream))

    url = f"{target}/service.zarr"
    assert isinstance(report, BakeReport)
    assert report.stores == [url]
    (outcome,) = report.recipes
    assert (outcome.recipe_id, outcome.inputs, outcome.inputs_total) == ("recipe", 12, 12)
    assert outcome.write_tasks and outcome.bytes_written and not outcome.skipped
    assert outcome.stac == [str(target / "stac" / "service" / "collection.json")]
    summary = report.summary("succeeded", 0)
    assert summary["counts"]["inputs"] == 12 and summary["stores"] == [url]
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events if e["event"] != "progress"] == [
        "bake_start", "recipe_start", "store_written", "stac_written", "recipe_done"]
    assert events[-1]["write_tasks"] == outcome.write_tasks
    expected = xr.open_mfdataset(daily_archive, engine="h5netcdf")
    xr.testing.assert_equal(xr.open_zarr(url).load(), expected.load())
    assert StoreState(url).lease().read() is None  # the lease kept during the run is released


def test_the_service_refuses_a_folder_that_is_not_a_feedstock(tmp_path):
    with pytest.raises(RecipeError, match="is not a feedstock"):
        bake(str(tmp_path), str(tmp_path / "stores"))
