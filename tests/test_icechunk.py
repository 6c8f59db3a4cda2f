"""StoreToIcechunk end to end: the same values, chunks and encodings as StoreToZarr, one commit per bake.

Real Beam runs (1 and 2 direct-runner workers), a local repository and one on
the moto S3 server, appends, a rerun that commits nothing, and bakes killed
with SIGKILL (``ARCOFORGE_FAULT_AT``) that leave the branch where it was.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap

import apache_beam as beam
import icechunk
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge import stac
from arcoforge.cli import main
from arcoforge.demo import write_demo_archive
from arcoforge.io.icechunk_store import history, open_repository

def _sample_data():
    """tests/_sample_data.py (the CMIP6 sample archives), loaded once; tests are not a package."""
    import importlib.util
    from pathlib import Path

    name = "arcoforge_tests_sample_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_sample_data.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


cmip6_sample_dir, cmip6_files = _sample_data().cmip6_sample_dir, _sample_data().cmip6_files

pytestmark = [pytest.mark.usefixtures("private_default_cache"),
              pytest.mark.filterwarnings("ignore::xarray.SerializationWarning")]

CHUNKS = {"time": 3}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> list[str]:
    """Eight daily files (packed int16 SST, per-file time epochs)."""
    folder = tmp_path_factory.mktemp("icechunk-inputs")
    return [str(p) for p in write_demo_archive(folder, ndays=8, nlat=10, nlon=16, start=dt.date(2001, 3, 1))]


def recipe(paths, store_name, target_root, cls=af.StoreToIcechunk, **kwargs):
    pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=1)
    return (beam.Create(pattern.items()) | af.OpenURLWithFSSpec() | af.OpenWithXarray(file_type=pattern.file_type)
            | cls(store_name=store_name, combine_dims=pattern.combine_dim_keys, target_root=target_root,
                  target_chunks=CHUNKS, **kwargs))


def without_bake_attrs(ds: xr.Dataset) -> xr.Dataset:
    """The dataset without the attributes that name the bake's time and versions."""
    kept = {k: v for k, v in ds.attrs.items() if not k.startswith("arcoforge_")}
    return ds.drop_attrs(deep=False).assign_attrs(kept)


def open_branch(url: str, options: dict | None = None, branch: str = "main") -> xr.Dataset:
    repo = open_repository(url, options, create=False)
    return xr.open_zarr(repo.readonly_session(branch=branch).store, consolidated=False)


@pytest.fixture(scope="module")
def zarr_reference(archive, tmp_path_factory):
    """The StoreToZarr bake of the same inputs, loaded."""
    root = tmp_path_factory.mktemp("zarr-reference")
    af.run_local(recipe(archive, "r.zarr", str(root), cls=af.StoreToZarr))
    return xr.open_zarr(root / "r.zarr").load()


def assert_same_store(actual: xr.Dataset, expected: xr.Dataset) -> None:
    xr.testing.assert_identical(without_bake_attrs(actual.load()), without_bake_attrs(expected))
    for name in expected.variables:
        for key in ("chunks", "compressors", "dtype", "scale_factor", "add_offset", "_FillValue", "units"):
            assert repr(actual[name].encoding.get(key)) == repr(expected[name].encoding.get(key)), (name, key)


@pytest.mark.parametrize("workers", [1, 2])
def test_bake_equals_store_to_zarr_in_one_commit_and_a_rerun_commits_nothing(archive, zarr_reference, tmp_path,
                                                                             workers, schemas_dir):
    stac_step = af.WriteSTAC(schemas_dir=str(schemas_dir), quicklook=False, output_root=str(tmp_path))
    af.run_local(recipe(archive, "r.icechunk", str(tmp_path)) | stac_step, num_workers=workers)
    url = str(tmp_path / "r.icechunk")
    assert_same_store(open_branch(url), zarr_reference)
    bake, schema, initial = history(url)
    assert bake.is_bake and bake.metadata["n_inputs"] == 8 and schema.metadata["kind"] == "schema"
    assert "bake of recipe r.icechunk, 8 inputs (inputs sha256 " in bake.message
    assert bake.message.startswith(f"arcoforge {af.__version__}:")
    assert open_repository(url).list_branches() == {"main"}  # the scratch branch is gone
    assert not (tmp_path / ".arcoforge" / "r.icechunk" / "spill").exists()  # nor the bake's spill
    # STAC: the asset says what the store is and which snapshot the collection describes.
    collection = stac.read_json(str(tmp_path / "stac" / "r" / "collection.json"))
    asset = collection["assets"]["zarr"]
    assert asset["type"] == "application/vnd.zarr+icechunk" and asset["icechunk:snapshot_id"] == bake.id
    assert asset["zarr:zarr_format"] == 3 and asset["href"] == "../../r.icechunk"  # (relative: portable)
    assert stac.validate_stac_tree(str(tmp_path / "stac" / "catalog.json"), schemas_dir) == []
    assert_same_store(stac.open_dataset_from_collection(str(tmp_path / "stac" / "r" / "collection.json")),
                      zarr_reference)

    if workers == 1:  # (the rerun's plan is the same whatever the workers)
        af.run_local(recipe(archive, "r.icechunk", str(tmp_path)))
        assert [entry.id for entry in history(url)] == [bake.id, schema.id, initial.id]


def test_bake_to_s3_through_icechunks_own_storage(archive, zarr_reference, s3):
    options, bucket = s3
    target = f"s3://{bucket}/stores"
    af.run_local(recipe(archive, "r.icechunk", target, storage_options=options))
    assert_same_store(open_branch(f"{target}/r.icechunk", options), zarr_reference)
    assert icechunk.Repository.exists(icechunk.s3_storage(
        bucket=bucket, prefix="stores/r.icechunk", endpoint_url=options["endpoint_url"], allow_http=True,
        region="eu-west-1", access_key_id=options["key"], secret_access_key=options["secret"],
        force_path_style=True))


def test_an_append_is_one_more_commit_and_a_repeated_append_commits_nothing(archive, zarr_reference, tmp_path,
                                                                            capsys):
    url = str(tmp_path / "r.icechunk")
    af.run_local(recipe(archive[:5], "r.icechunk", str(tmp_path), append_dim="time"))
    first = next(history(url))
    assert open_branch(url).sizes["time"] == 5

    af.run_local(recipe(archive, "r.icechunk", str(tmp_path), append_dim="time"))
    entries = list(history(url))
    assert entries[0].metadata["kind"] == "append" and entries[0].metadata["n_inputs"] == 3
    assert entries[2].id == first.id  # the append's schema snapshot sits between the two commits
    assert_same_store(open_branch(url), zarr_reference)
    # The old snapshot still reads as it was.
    old = xr.open_zarr(open_repository(url).readonly_session(snapshot_id=first.id).store, consolidated=False)
    xr.testing.assert_identical(old.load().drop_attrs(deep=False),
                                zarr_reference.isel(time=slice(0, 5)).drop_attrs(deep=False))

    af.run_local(recipe(archive, "r.icechunk", str(tmp_path), append_dim="time"))
    assert [e.id for e in history(url)] == [e.id for e in entries]

    capsys.readouterr()
    assert main(["-q", "history", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [e.id for e in entries]
    assert [line.split()[2] for line in lines] == ["append", "schema", "bake", "schema", "-"]
    assert main(["-q", "history", str(tmp_path / "nothing-here")]) == 2
    assert "no Icechunk repository at" in capsys.readouterr().err


KILLED_RECIPE = """
import apache_beam as beam
import arcoforge as af
from arcoforge import stac
from arcoforge.cli import main
paths = {paths!r}
pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=1)
recipe = (beam.Create(pattern.items()) | af.OpenURLWithFSSpec() | af.OpenWithXarray(file_type=pattern.file_type)
          | af.StoreToIcechunk(store_name="r.icechunk", combine_dims=pattern.combine_dim_keys, target_root={root!r},
                               target_chunks={chunks!r}, append_dim="time"))
af.run_local(recipe)
"""


@pytest.mark.parametrize("fault", ["icechunk.task", "icechunk.commit", "icechunk.moved"])
def test_a_killed_append_leaves_the_branch_whole_and_a_plain_rerun_completes(archive, zarr_reference, tmp_path,
                                                                             fault):
    """SIGKILLed while writing, or once every chunk is written and committed on the scratch branch,
    the last moment before the branch moves: readers still see the old snapshot whole. Killed just after the
    move: the append is there, whole; the rerun commits nothing and removes the scratch branch left behind.
    Either way the killed bake's spill is left, and the rerun removes it (its process is gone)."""
    url = str(tmp_path / "r.icechunk")
    af.run_local(recipe(archive[:5], "r.icechunk", str(tmp_path), append_dim="time"))
    before = [e.id for e in history(url)]
    script = tmp_path / "append.py"
    script.write_text(textwrap.dedent(KILLED_RECIPE.format(paths=archive, root=str(tmp_path), chunks=CHUNKS)))
    killed = subprocess.run([sys.executable, str(script)], env={**os.environ, "ARCOFORGE_FAULT_AT": fault},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    spill = tmp_path / ".arcoforge" / "r.icechunk" / "spill"
    assert len(list(spill.iterdir())) == 1  # the killed bake's (the first bake removed its own)
    if fault != "icechunk.moved":
        assert [e.id for e in history(url)] == before  # the branch did not move
        xr.testing.assert_identical(open_branch(url).load().drop_attrs(deep=False),
                                    zarr_reference.isel(time=slice(0, 5)).drop_attrs(deep=False))
    else:
        assert len(open_repository(url).list_branches()) == 2  # main, and the scratch branch
        assert_same_store(open_branch(url), zarr_reference)

    af.run_local(recipe(archive, "r.icechunk", str(tmp_path), append_dim="time"))  # the same recipe, run again
    assert_same_store(open_branch(url), zarr_reference)
    assert len(list(history(url))) == len(before) + 2  # the append's schema snapshot and its commit
    assert open_repository(url).list_branches() == {"main"}
    assert not spill.exists()


def _input_of_dtype(element):
    index, url = element
    dtype = "float32" if url == "0" else "float64"  # the second input disagrees: the plan refuses them
    return index, xr.Dataset({"sst": (("time",), [1.0])}, coords={"time": [int(url)]}).astype({"sst": dtype})


def test_a_plan_that_fails_removes_the_spill_and_commits_nothing(tmp_path):
    pattern = af.pattern_from_file_sequence(["0", "1"], "time", nitems_per_file=1)
    with pytest.raises(Exception, match="dtype"):
        af.run_local(beam.Create(pattern.items()) | beam.Map(_input_of_dtype)
                     | af.StoreToIcechunk(store_name="r.icechunk", combine_dims=pattern.combine_dim_keys,
                                          target_root=str(tmp_path)))
    assert (tmp_path / ".arcoforge" / "r.icechunk").is_dir()  # where the inputs were spilled
    assert not (tmp_path / ".arcoforge" / "r.icechunk" / "spill").exists()
    assert [entry.metadata.get("kind") for entry in history(str(tmp_path / "r.icechunk"))] == [None]


def test_cmip6_files_counting_from_three_epochs_give_the_same_store_on_both_targets(cmip6_files, tmp_path):
    """A real archive (BCC-CSM2-MR ta, 365_day calendar, days since 1930, 1970 and 2010): the same values,
    time units, bounds and chunks whether StoreToZarr or StoreToIcechunk writes them."""
    paths = [str(p) for p in cmip6_files("ta_Amon_BCC-CSM2-MR_*.nc")]
    pattern = af.pattern_from_file_sequence(paths, "time")
    for cls, name in ((af.StoreToZarr, "bcc.zarr"), (af.StoreToIcechunk, "bcc.icechunk")):
        af.run_local(beam.Create(pattern.items()) | af.OpenURLWithFSSpec()
                     | af.OpenWithXarray(file_type=pattern.file_type)
                     | cls(store_name=name, combine_dims=pattern.combine_dim_keys, target_root=str(tmp_path),
                           target_chunks={"time": 100}))
    decode = xr.coders.CFDatetimeCoder(use_cftime=True)
    expected = xr.open_zarr(tmp_path / "bcc.zarr", decode_times=decode).load()
    repo = open_repository(str(tmp_path / "bcc.icechunk"), create=False)
    actual = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False, decode_times=decode)
    assert_same_store(actual, expected)
    assert actual.sizes["time"] == 1020 and actual.ta.encoding["chunks"] == (100, 2, 2, 2)


def test_a_branch_another_writer_moved_meanwhile_is_not_overwritten(tmp_path):
    from arcoforge.io.icechunk_store import move_branch

    repo = open_repository(str(tmp_path / "r.icechunk"))
    start = repo.lookup_branch("main")
    snapshots = []
    for value in (1, 2):
        session = repo.writable_session("main")
        zarr.create_group(session.store, attributes={"writer": value}, overwrite=True)
        snapshots.append(session.commit(f"writer {value}"))
    with pytest.raises(af.InfrastructureError, match=rf"branch 'main' moved to snapshot {snapshots[1]} while this "
                                                     rf"bake wrote \(it started from {start}\)"):
        move_branch(repo, "main", snapshots[0], start)
    assert repo.lookup_branch("main") == snapshots[1]
