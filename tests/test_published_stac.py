"""The scientist's and the bot's paths end to end: a feedstock baked from a git ref, its STAC published elsewhere.

One bake (``arcoforge bake --repo BARE --ref v1``, in process) is shared by the
module: its target root is copied elsewhere and the original removed, then the
copy's collection is opened with pystac + xpystac and with arcoforge. Then a
store on the moto S3 server opens through xpystac from its collection alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pystac
import pytest
import xarray as xr

from arcoforge import stac
from arcoforge.cli import EXIT_OK, EXIT_RECIPE, main

META = textwrap.dedent("""
    title: Daily SST (test feedstock)
    description: Twelve days of synthetic SST.
    recipes:
      - id: daily
        object: "recipe:recipe"
    provenance:
      providers:
        - name: arcoforge tests
          roles: [producer]
      license: CC0-1.0
    maintainers:
      - name: arcoforge tests
""")

RECIPE = textwrap.dedent("""
    import apache_beam as beam
    from arcoforge import OpenWithXarray, StoreToZarr, pattern_from_file_sequence

    pattern = pattern_from_file_sequence({paths!r}, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name="sst.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={{"time": 6}})
    )
""")


def git(*args: str, cwd: Path) -> str:
    identity = ["-c", "user.name=arcoforge tests", "-c", "user.email=tests@example.org", "-c", "init.defaultBranch=main"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_feedstock_repo(base: Path, paths: list[str]) -> tuple[Path, Path]:
    """A feedstock committed and tagged v1, then changed on main; returns (its folder, a bare clone)."""
    folder = base / "sst-feedstock"
    (folder / "feedstock").mkdir(parents=True)
    (folder / "feedstock" / "meta.yaml").write_text(META)
    (folder / "feedstock" / "recipe.py").write_text(RECIPE.format(paths=paths))
    (folder / "feedstock" / "requirements.txt").write_text("arcoforge\n")
    git("init", "--quiet", ".", cwd=folder)
    git("add", ".", cwd=folder)
    git("commit", "--quiet", "-m", "v1", cwd=folder)
    git("tag", "v1", cwd=folder)
    (folder / "feedstock" / "meta.yaml").write_text(META.replace("id: daily", "id: later"))
    git("commit", "--quiet", "-am", "after v1", cwd=folder)
    bare = base / "sst-feedstock.git"
    git("clone", "--quiet", "--bare", str(folder), str(bare), cwd=base)
    return folder, bare


@pytest.fixture(scope="module")
def published(tmp_path_factory, daily_archive):
    """Bake v1 of the feedstock from its bare repository, copy the target root elsewhere, remove the original."""
    base = tmp_path_factory.mktemp("published")
    folder, bare = make_feedstock_repo(base, daily_archive)
    original = base / "bakery"
    code = main(["bake", "--repo", str(bare), "--ref", "v1", "--target-root", str(original), "-q",
                 "--license", "CC-BY-4.0", "--quicklook-variable", "sea_ice_fraction"])
    assert code == EXIT_OK
    expected = xr.open_zarr(original / "sst.zarr").load()
    attrs = dict(expected.attrs)
    copy = base / "elsewhere" / "copy-of-bakery"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    return {"copy": copy, "expected": expected, "attrs": attrs, "folder": folder, "bare": bare}


def test_the_copied_collection_opens_with_pystac_and_xpystac(published):
    path = published["copy"] / "stac" / "sst" / "collection.json"
    collection = pystac.Collection.from_file(str(path))
    assert collection.assets["zarr"].href == "../../sst.zarr"
    collection.make_asset_hrefs_absolute()
    opened = xr.open_dataset(collection.assets["zarr"], engine="stac")  # xpystac's backend
    xr.testing.assert_identical(opened.load(), published["expected"])
    assert opened["analysed_sst"].chunks[0] == (6, 6)  # lazy with dask, as xarray:open_kwargs asks


def test_the_copied_collection_opens_with_arcoforge(published):
    path = published["copy"] / "stac" / "sst" / "collection.json"
    xr.testing.assert_identical(stac.open_dataset_from_collection(path).load(), published["expected"])
    catalog = pystac.Catalog.from_file(str(published["copy"] / "stac" / "catalog.json"))
    (child,) = catalog.get_children()
    xr.testing.assert_identical(stac.open_dataset_from_collection(child).load(), published["expected"])


def test_collection_id_licence_quicklook_and_one_provenance_record(published):
    doc = json.loads((published["copy"] / "stac" / "sst" / "collection.json").read_text())
    assert doc["id"] == "sst"  # the store's name, whichever way the bake was called
    assert doc["license"] == "CC-BY-4.0"  # the flag wins over meta.yaml's CC0-1.0
    (preview,) = [link for link in doc["links"] if link["rel"] == "preview"]
    assert preview["title"] == "Quicklook of sea_ice_fraction"
    record = doc["arcoforge:provenance"]
    attrs = published["attrs"]
    assert not any(key.startswith("arcoforge_arcoforge") for key in attrs)
    assert record["arcoforge_version"] == attrs["arcoforge_version"]
    for key in ("xarray_version", "zarr_version", "bake_time", "n_inputs", "recipe_sha256", "recipe_id"):
        assert record[key] == attrs[f"arcoforge_{key}"], key
    assert record["recipe_id"] == "daily"  # v1's id: main has renamed it since
    assert stac.validate_stac_tree(str(published["copy"] / "stac" / "catalog.json")) == []


def test_public_url_points_hrefs_at_the_published_copy(published, tmp_path):
    store = published["copy"] / "sst.zarr"
    path = stac.write_store_collection(str(store), str(published["copy"]), collection_id="sst-public",
                                       public_url="https://data.example.org/arco/", update_catalog=False,
                                       quicklook=False, license="CC0-1.0")
    asset = json.loads(Path(path).read_text())["assets"]["zarr"]
    assert asset["href"] == "https://data.example.org/arco/sst.zarr"
    elsewhere = stac.build_collection(str(store), "x", license="CC0-1.0")
    moved = stac.write_collection(elsewhere, str(tmp_path), quicklook=False, catalog=False)
    assert json.loads(Path(moved).read_text())["assets"]["zarr"]["href"] == str(store)  # not under the root


def test_expand_meta_lists_recipes_and_stores_as_json(published, capsys):
    capsys.readouterr()
    assert main(["-q", "expand-meta", str(published["folder"]), "--target-root", "s3://bucket/out", "--json"]) == 0
    expanded = json.loads(capsys.readouterr().out)
    assert expanded["feedstock"] == "sst-feedstock" and expanded["meta"]["title"] == "Daily SST (test feedstock)"
    assert [(r["id"], r["stores"]) for r in expanded["recipes"]] == [
        ("later", [{"name": "sst.zarr", "url": "s3://bucket/out/sst.zarr", "collection_id": "sst"}])]


def test_bake_from_a_ref_that_does_not_exist_is_a_recipe_error(published, tmp_path, capsys):
    code = main(["-q", "bake", "--repo", str(published["bare"]), "--ref", "v9", "--target-root", str(tmp_path)])
    assert code == EXIT_RECIPE
    assert "cannot check out" in capsys.readouterr().err


def test_a_store_on_s3_opens_through_xpystac_from_its_collection_alone(s3, s3_filesystem, daily_archive):
    options, bucket = s3
    writer = {**options, "s3_additional_kwargs": {"ACL": "public-read"}}  # a public bucket's objects
    root = f"s3://{bucket}/public"
    expected = xr.open_mfdataset(daily_archive[:3], engine="h5netcdf").load()
    expected.to_zarr(f"{root}/sst.zarr", storage_options=writer, zarr_format=3, consolidated=True)
    path = stac.write_store_collection(f"{root}/sst.zarr", root, storage_options=writer, license="CC0-1.0",
                                       reader_storage_options={"anon": True})
    document = stac.read_json(path, options)
    text = json.dumps(document)
    assert options["key"] not in text and options["secret"] not in text
    asset = document["assets"]["zarr"]
    assert asset["href"] == "../../sst.zarr"
    assert asset["xarray:storage_options"] == {  # the writer's public options, and what readers need
        "anon": True, "endpoint_url": options["endpoint_url"], "client_kwargs": {"region_name": "eu-west-1"},
        "s3_additional_kwargs": {"ACL": "public-read"}}
    collection = pystac.Collection.from_dict(document, href=path)
    collection.make_asset_hrefs_absolute()
    opened = xr.open_dataset(collection.assets["zarr"], engine="stac")  # no credentials: anonymous reads
    xr.testing.assert_identical(opened.load(), xr.open_zarr(f"{root}/sst.zarr", storage_options=options).load())
    with pytest.raises(ValueError, match=r"\['secret'\]"):
        stac.write_store_collection(f"{root}/sst.zarr", root, storage_options=writer,
                                    reader_storage_options={"anon": True, "secret": "x"})


def test_the_copy_served_over_http_opens_from_its_collections(published, file_server):
    """Publishing is copying the root to a web server: relative hrefs, or --public-url ones, open there."""
    copy = published["copy"]
    public = stac.write_store_collection(str(copy / "sst.zarr"), str(copy), collection_id="sst-public",
                                         public_url=file_server.url("").rstrip("/"), quicklook=False,
                                         update_catalog=False, license="CC0-1.0")
    for path in copy.rglob("*"):
        if path.is_file():
            file_server.files[path.relative_to(copy).as_posix()] = path.read_bytes()
    url = file_server.url("stac/sst/collection.json")
    collection = pystac.Collection.from_file(url)
    collection.make_asset_hrefs_absolute()
    assert collection.assets["zarr"].href == file_server.url("sst.zarr")
    xr.testing.assert_identical(xr.open_dataset(collection.assets["zarr"], engine="stac").load(), published["expected"])
    xr.testing.assert_identical(stac.open_dataset_from_collection(url).load(), published["expected"])
    # With --public-url the collection opens on its own, wherever it is read from.
    alone = pystac.Collection.from_dict(json.loads(Path(public).read_text()))
    assert alone.assets["zarr"].href == file_server.url("sst.zarr")
    xr.testing.assert_identical(xr.open_dataset(alone.assets["zarr"], engine="stac").load(), published["expected"])


def test_a_token_in_the_repository_url_never_reaches_the_error(tmp_path, capsys):
    repo = "https://bot:PLANTED-gh-token-5eed@127.0.0.1:9/owner/feedstock.git"  # nothing listens on port 9
    assert main(["-q", "bake", "--repo", repo, "--ref", "main", "--target-root", str(tmp_path)]) == EXIT_RECIPE
    err = capsys.readouterr().err
    assert "cannot check out https://127.0.0.1:9/owner/feedstock.git at main" in err
    assert "PLANTED-gh-token-5eed" not in err
