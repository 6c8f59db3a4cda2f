"""STAC for every store: Collections of real baked stores and of awkward ones, quicklooks,
the root catalog, validation against the official schemas, and the way back to the data."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path

import apache_beam as beam
import fsspec
import matplotlib.image
import numpy as np
import pystac
import pytest
import xarray as xr
from PIL import Image

import arcoforge as af
from arcoforge import stac
from arcoforge.stac import packaged_schemas_dir

# the same folder the `schemas_dir` fixture of conftest.py gives: the schemas shipped in the package
SCHEMAS_DIR = packaged_schemas_dir()

META = {
    "title": "Demo daily SST",
    "description": "Daily analysed SST and sea-ice fraction on a coarse grid (synthetic).",
    "provenance": {
        "providers": [
            {"name": "arcoforge demo", "description": "Synthetic data", "roles": ["producer", "licensor"],
             "url": "https://example.org/demo"},
            {"name": "Test Bakery", "roles": ["host", "baker"]},
        ],
        "license": "CC-BY-4.0",
    },
    "keywords": ["sst", "ocean"],
    "maintainers": [{"name": "A. Scientist", "github": "ascientist"}],
}


def bake(paths, target_root, store_name, zarr_format):
    """Run a real arcoforge recipe; returns the store path and the pattern."""
    pattern = af.pattern_from_file_sequence(paths, "time", nitems_per_file=1)
    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.StoreToZarr(target_root=str(target_root), store_name=store_name, combine_dims=pattern.combine_dim_keys,
                         target_chunks={"time": 5}, zarr_format=zarr_format)
    )
    af.run_local(recipe)
    return Path(target_root) / store_name, pattern


# --- awkward stores, written directly with xarray -------------------------------------------

def lon360_dataset() -> xr.Dataset:
    """Longitudes 0..345 (degrees_east), latitude descending."""
    lat = np.arange(67.5, -68, -15.0)
    lon = np.arange(0.0, 360.0, 15.0)
    data = 280 + np.cos(np.deg2rad(lat))[None, :, None] * 20 + np.zeros((3, lat.size, lon.size))
    data[:, 0, :4] = np.nan
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), data, {"standard_name": "air_temperature", "units": "K"})},
        coords={
            "time": ("time", xr.date_range("2010-01-01", periods=3, freq="6h").values, {"standard_name": "time"}),
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
    )


def curvilinear_dataset() -> xr.Dataset:
    """A rotated ocean grid: 2-D latitude/longitude on index dimensions (y, x)."""
    y, x = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    lon2d = -20.0 + 2.0 * x + 0.5 * y
    lat2d = 40.0 + 1.5 * y - 0.3 * x
    thetao = np.broadcast_to(10 + lat2d / 10, (2, 6, 8)).copy()
    thetao[:, :2, :2] = np.nan
    return xr.Dataset(
        {"thetao": (("time", "y", "x"), thetao, {"long_name": "sea water potential temperature",
                                                 "units": "degC"})},
        coords={
            "time": ("time", xr.date_range("2015-01-16", periods=2, freq="MS").values, {"axis": "T"}),
            "lat": (("y", "x"), lat2d, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": (("y", "x"), lon2d, {"standard_name": "longitude", "units": "degrees_east"}),
        },
    )


def cftime_dataset() -> xr.Dataset:
    """A 360-day calendar: February has 30 days."""
    time = xr.date_range("2001-02-01", periods=30, freq="D", calendar="360_day", use_cftime=True)
    ds = xr.Dataset(
        {"pr": (("time", "lat", "lon"), np.random.default_rng(0).random((30, 3, 4)).astype("f4"),
                {"standard_name": "precipitation_flux", "units": "kg m-2 s-1"})},
        coords={
            "time": ("time", time, {"standard_name": "time"}),
            "lat": ("lat", [-30.0, 0.0, 30.0], {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("lon", [10.0, 20.0, 30.0, 40.0], {"standard_name": "longitude", "units": "degrees_east"}),
        },
    )
    ds.time.encoding.update(units="days since 2000-01-01", calendar="360_day")
    return ds


def stations_dataset() -> xr.Dataset:
    """Points: latitude/longitude along one `station` dimension, and a vertical `depth` coordinate."""
    rng = np.random.default_rng(1)
    return xr.Dataset(
        {"temp": (("time", "station", "depth"), rng.random((4, 5, 3)), {"long_name": "temperature", "units": "degC"})},
        coords={
            "time": ("time", xr.date_range("2020-01-01", periods=4, freq="YS").values, {"standard_name": "time"}),
            "depth": ("depth", [0.0, 10.0, 50.0], {"positive": "down", "units": "m"}),
            "lat": ("station", [10.0, -5.0, 20.0, 0.0, 3.0], {"standard_name": "latitude"}),
            "lon": ("station", [170.0, 175.0, -178.0, -170.0, 179.0], {"standard_name": "longitude"}),
        },
    )


def bare_dataset() -> xr.Dataset:
    """No latitude, longitude or time at all."""
    return xr.Dataset({"signal": (("sample", "channel"), np.arange(12.0).reshape(4, 3), {"units": "V"})},
                      coords={"channel": ("channel", ["a", "b", "c"])})


AWKWARD = {
    "lon360": (lon360_dataset, 2),
    "curvilinear": (curvilinear_dataset, 3),
    "cftime360": (cftime_dataset, 3),
    "stations": (stations_dataset, 3),
    "bare": (bare_dataset, 2),
}
CASES = ["baked-v2", "baked-v3", *AWKWARD]


@pytest.fixture(scope="module")
def produced(tmp_path_factory, daily_archive) -> dict:
    """Every case's store, collection.json and the dataset, all under one STAC root."""
    root = tmp_path_factory.mktemp("stac")
    out: dict = {"root": root}
    for fmt in (2, 3):
        store, pattern = bake(daily_archive, root / "stores", f"sst-v{fmt}.zarr", fmt)
        record = stac.provenance(recipe_source="the recipe", pattern=pattern, recipe_id=f"baked-v{fmt}")
        collection = stac.build_collection(str(store), f"baked-v{fmt}", metadata=META, provenance=record)
        out[f"baked-v{fmt}"] = {"store": store, "path": Path(stac.write_collection(collection, root)),
                                "provenance": record, "pattern": pattern}
    for name, (make, fmt) in AWKWARD.items():
        store = root / "stores" / f"{name}.zarr"
        make().to_zarr(store, zarr_format=fmt, consolidated=True)
        collection = stac.build_collection(str(store), name, license="CC0-1.0")
        out[name] = {"store": store, "path": Path(stac.write_collection(collection, root))}
    return out


def load(produced, case) -> dict:
    return json.loads(produced[case]["path"].read_text())


# --- what the collections say ----------------------------------------------------------------

@pytest.mark.parametrize("zarr_format", [2, 3])
def test_collection_of_a_baked_store(produced, zarr_format):
    case = f"baked-v{zarr_format}"
    doc = load(produced, case)
    assert produced[case]["path"] == produced["root"] / "stac" / case / "collection.json"
    assert (doc["type"], doc["stac_version"], doc["id"]) == ("Collection", "1.1.0", case)
    assert (doc["title"], doc["license"], doc["keywords"]) == (META["title"], "CC-BY-4.0", ["sst", "ocean"])
    assert doc["description"] == META["description"]
    assert doc["providers"] == [
        {"name": "arcoforge demo", "description": "Synthetic data", "roles": ["producer", "licensor"],
         "url": "https://example.org/demo"},
        {"name": "Test Bakery", "roles": ["host"]},  # 'baker' is no STAC role
    ]
    assert set(doc["stac_extensions"]) == {stac.DATACUBE_EXTENSION, stac.ZARR_EXTENSION, stac.XARRAY_EXTENSION}
    # Cell centres of the 12 x 24 demo grid, and the 12 days at noon.
    assert doc["extent"]["spatial"]["bbox"] == [[-172.5, -82.5, 172.5, 82.5]]
    assert doc["extent"]["temporal"]["interval"] == [["2000-02-24T12:00:00Z", "2000-03-06T12:00:00Z"]]

    dims = doc["cube:dimensions"]
    assert dims["time"] == {"type": "temporal", "extent": ["2000-02-24T12:00:00Z", "2000-03-06T12:00:00Z"],
                            "step": "P1D", "description": "reference time"}
    assert dims["lat"] == {"type": "spatial", "axis": "y", "extent": [-82.5, 82.5], "step": 15.0,
                           "reference_system": 4326, "description": "latitude"}
    assert (dims["lon"]["axis"], dims["lon"]["extent"], dims["lon"]["step"]) == ("x", [-172.5, 172.5], 15.0)
    assert doc["cube:variables"] == {
        "analysed_sst": {"type": "data", "dimensions": ["time", "lat", "lon"], "unit": "kelvin",
                         "description": "analysed sea surface temperature"},
        "sea_ice_fraction": {"type": "data", "dimensions": ["time", "lat", "lon"], "unit": "1",
                             "description": "sea ice area fraction"},
    }

    asset = doc["assets"]["zarr"]
    # Under the STAC root: relative to the collection, so the root can be copied anywhere.
    assert asset["href"] == f"../../stores/sst-v{zarr_format}.zarr"
    assert (asset["type"], asset["roles"]) == ("application/vnd.zarr", ["data"])
    assert (asset["zarr:zarr_format"], asset["zarr:consolidated"], asset["zarr:node_type"]) == (
        zarr_format, True, "group")
    assert asset["xarray:open_kwargs"] == {"chunks": {}}
    assert "xarray:storage_options" not in asset  # a local store takes none
    assert doc["arcoforge:provenance"] == produced[case]["provenance"]


def test_provenance_names_recipe_pattern_inputs_and_versions(produced, tmp_path):
    import zarr

    record = produced["baked-v3"]["provenance"]
    assert record["recipe_sha256"] == hashlib.sha256(b"the recipe").hexdigest()
    assert record["pattern_sha256"] == produced["baked-v3"]["pattern"].sha256().hex()
    assert record["n_inputs"] == 12
    assert (record["arcoforge_version"], record["xarray_version"], record["zarr_version"]) == (
        af.__version__, xr.__version__, zarr.__version__)
    assert record["bake_time"].endswith("Z") and record["recipe_id"] == "baked-v3"
    recipe = tmp_path / "recipe.py"
    recipe.write_text("recipe = None\n")
    from_file = stac.provenance(recipe_file=recipe, n_inputs=3)
    assert from_file["recipe_sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert stac.provenance_attrs(from_file)["arcoforge_n_inputs"] == 3


def test_longitudes_0_to_360_give_a_bbox_in_minus_180_to_180(produced):
    doc = load(produced, "lon360")
    assert doc["extent"]["spatial"]["bbox"] == [[-180.0, -67.5, 165.0, 67.5]]
    # The dimension itself keeps the stored values; latitude is descending.
    assert doc["cube:dimensions"]["lon"]["extent"] == [0.0, 345.0]
    assert doc["cube:dimensions"]["lat"] == {"type": "spatial", "axis": "y", "extent": [-67.5, 67.5],
                                             "step": -15.0, "reference_system": 4326, "description": "latitude"}
    assert doc["cube:dimensions"]["time"]["step"] == "PT6H"
    assert doc["extent"]["temporal"]["interval"] == [["2010-01-01T00:00:00Z", "2010-01-01T12:00:00Z"]]


def test_curvilinear_grid_with_2d_latitude_longitude(produced):
    doc = load(produced, "curvilinear")
    ds = curvilinear_dataset()
    assert doc["extent"]["spatial"]["bbox"] == [[
        float(ds.lon.min()), float(ds.lat.min()), float(ds.lon.max()), float(ds.lat.max())]]
    dims = doc["cube:dimensions"]
    assert dims["x"]["type"] == dims["y"]["type"] == "other"
    assert (dims["x"]["extent"], dims["y"]["extent"]) == ([0, 7], [0, 5])
    assert "curvilinear" in dims["x"]["description"] and "'lat'" in dims["x"]["description"]
    assert dims["time"]["step"] == "P1M"
    assert doc["cube:variables"]["lat"] == {"type": "auxiliary", "dimensions": ["y", "x"],
                                            "unit": "degrees_north", "description": "latitude"}
    assert doc["cube:variables"]["thetao"]["type"] == "data"


def test_cftime_360_day_calendar(produced):
    doc = load(produced, "cftime360")
    # 2001-02-30 exists in the 360-day calendar; written as the last real day of that month.
    assert doc["extent"]["temporal"]["interval"] == [["2001-02-01T00:00:00Z", "2001-02-28T00:00:00Z"]]
    time = doc["cube:dimensions"]["time"]
    assert time["step"] == "P1D" and "360_day" in time["description"]


def test_points_across_the_antimeridian_and_a_vertical_dimension(produced):
    doc = load(produced, "stations")
    assert doc["extent"]["spatial"]["bbox"] == [[170.0, -5.0, -170.0, 20.0]]  # west > east: crosses 180
    assert doc["cube:dimensions"]["depth"] == {"type": "spatial", "axis": "z", "extent": [0.0, 50.0],
                                               "values": [0.0, 10.0, 50.0], "step": None, "unit": "m"}
    assert doc["cube:dimensions"]["station"]["type"] == "other"
    assert doc["cube:dimensions"]["time"]["step"] == "P1Y"
    assert doc["cube:variables"]["lon"] == {"type": "auxiliary", "dimensions": ["station"], "description": "longitude"}


def test_store_without_coordinates_gets_global_bbox_and_open_interval(produced, caplog):
    doc = load(produced, "bare")
    assert doc["extent"] == {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                             "temporal": {"interval": [[None, None]]}}
    assert doc["cube:dimensions"]["channel"] == {"type": "other", "values": ["a", "b", "c"]}
    assert doc["cube:dimensions"]["sample"]["type"] == "other"
    with caplog.at_level(logging.WARNING, logger="arcoforge.stac"):
        stac.build_collection(str(produced["bare"]["store"]), "bare-again")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no latitude/longitude" in m and "global" in m for m in messages)
    assert any("no time coordinate" in m and "open interval" in m for m in messages)
    assert any("no license" in m for m in messages)


def test_metadata_keywords_override_meta_yaml_and_odd_licenses(produced, tmp_path, caplog):
    meta_file = tmp_path / "meta.yaml"
    meta_file.write_text("title: From YAML\ndescription: Described in YAML.\n"
                         "provenance:\n  license: Creative Commons Attribution\n  providers: [{name: P}]\n")
    meta = stac.read_meta_yaml(meta_file)
    store = str(produced["baked-v3"]["store"])
    with caplog.at_level(logging.WARNING, logger="arcoforge.stac"):
        collection = stac.build_collection(store, "odd", metadata=meta, keywords="a, b")
    assert (collection.title, collection.description, collection.license) == ("From YAML", "Described in YAML.", "other")
    assert collection.keywords == ["a", "b"] and collection.providers[0].name == "P"
    assert any("not an SPDX identifier" in r.getMessage() for r in caplog.records)
    collection = stac.build_collection(store, "url-licensed", metadata=meta, title="Kwarg title",
                                       license="https://example.org/licence.html")
    assert collection.title == "Kwarg title" and collection.license == "other"
    assert collection.get_single_link("license").href == "https://example.org/licence.html"
    with pytest.raises(ValueError, match="collection id 'a/b'"):
        stac.build_collection(store, "a/b")


# --- quicklooks --------------------------------------------------------------------------------

@pytest.mark.parametrize("case, variable", [("baked-v3", "analysed_sst"), ("curvilinear", "thetao"),
                                            ("lon360", "tas"), ("stations", "temp"), ("bare", "signal")])
def test_quicklook_is_a_png_of_the_main_variable(produced, case, variable):
    doc = load(produced, case)
    preview = next(link for link in doc["links"] if link["rel"] == "preview")
    assert (preview["href"], preview["type"]) == ("./quicklook.png", "image/png")
    png = produced[case]["path"].parent / "quicklook.png"
    image = matplotlib.image.imread(png)
    assert image.shape == (400, 720, 4)
    with Image.open(png) as opened:
        assert opened.format == "PNG"
        assert f"variable {variable!r}" in opened.text["Description"]
    if case in ("baked-v3", "curvilinear", "lon360"):
        # Missing values (land, masked corners) are drawn in light grey, not as a colour of the scale.
        light_grey = np.all(np.abs(image[..., :3] - 211 / 255) < 0.01, axis=-1)
        assert light_grey.sum() > 200


def test_quicklook_of_nothing_numeric_is_none(tmp_path):
    ds = xr.Dataset({"label": ("x", np.array(["a", "b"]))})
    assert stac.write_quicklook(ds, str(tmp_path / "q.png")) is None
    assert not (tmp_path / "q.png").exists()


# --- the root catalog --------------------------------------------------------------------------

def test_catalog_links_every_collection(produced):
    catalog = json.loads((produced["root"] / "stac" / "catalog.json").read_text())
    children = [link["href"] for link in catalog["links"] if link["rel"] == "child"]
    assert children == [f"./{case}/collection.json" for case in CASES]
    for case in CASES:
        doc = load(produced, case)
        assert {(link["rel"], link["href"]) for link in doc["links"]} >= {
            ("root", "../catalog.json"), ("parent", "../catalog.json")}


def test_baking_twice_updates_the_collection_in_place(tmp_path, daily_archive):
    output = tmp_path / "out"
    bake_times = []
    for run in range(2):
        store, pattern = bake(daily_archive[:3], output, "sst.zarr", 3)
        record = stac.provenance(pattern=pattern)
        bake_times.append(record["bake_time"])
        stac.write_collection(stac.build_collection(str(store), "sst", provenance=record, license="CC0-1.0"), output)
        if run == 0:  # another collection, linked by a separate catalog update
            other = stac.build_collection(str(store), "sst-copy", license="CC0-1.0")
            path = stac.write_collection(other, output, quicklook=False, catalog=False)
            stac.update_catalog(str(output / "stac" / "catalog.json"), json.loads(Path(path).read_text()))
    catalog = json.loads((output / "stac" / "catalog.json").read_text())
    children = [link["href"] for link in catalog["links"] if link["rel"] == "child"]
    assert children == ["./sst/collection.json", "./sst-copy/collection.json"]
    assert [link["rel"] for link in catalog["links"]].count("root") == 1
    doc = json.loads((output / "stac" / "sst" / "collection.json").read_text())
    assert doc["arcoforge:provenance"]["bake_time"] == bake_times[1]
    assert sorted(p.name for p in (output / "stac").iterdir()) == ["catalog.json", "sst", "sst-copy"]


# --- validation against the official schemas ---------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_every_collection_is_valid(produced, schemas_dir, case):
    assert stac.validate_stac_file(produced[case]["path"], schemas_dir) == []


def test_catalog_tree_is_valid(produced, schemas_dir):
    assert stac.validate_stac_file(produced["root"] / "stac" / "catalog.json", schemas_dir) == []
    assert stac.validate_stac_tree(produced["root"] / "stac" / "catalog.json", schemas_dir) == []


def _drop(doc, *path):
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]


def _set(value, *path):
    def apply(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


BREAKAGES = {
    "no license": (lambda d: _drop(d, "license"), "(top level): 'license' is a required property"),
    "zarr_format a string": (_set("3", "assets", "zarr", "zarr:zarr_format"), "assets/zarr/zarr:zarr_format"),
    "unknown zarr field": (_set(1, "assets", "zarr", "zarr:chunks"), "'zarr:chunks'"),
    "no zarr field": (lambda d: [_drop(d, "assets", "zarr", k) for k in
                                 ("zarr:zarr_format", "zarr:consolidated", "zarr:node_type")],
                      "assets/zarr: 'zarr:consolidated' is a required property"),
    "a thumbnail asset": (_set({"href": "./q.png", "type": "image/png", "roles": ["thumbnail"]}, "assets", "thumbnail"),
                          "assets/thumbnail"),
    "bad cube axis": (_set("lat", "cube:dimensions", "lat", "axis"), "cube:dimensions/lat/axis"),
    "no time zone": (_set(["2000-02-24T12:00:00", None], "extent", "temporal", "interval", 0),
                     "extent/temporal/interval/0/0"),
    "bad provider role": (_set(["baker"], "providers", 0, "roles"), "providers/0/roles/0"),
    "schema not available": (_set([stac.DATACUBE_EXTENSION, "https://stac-extensions.github.io/nope/v1.0.0/schema.json"],
                                  "stac_extensions"), "nope/v1.0.0/schema.json is not in"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_validator_rejects_an_invalid_collection(produced, schemas_dir, tmp_path, breakage):
    doc = load(produced, "baked-v3")
    broken = copy.deepcopy(doc)
    apply, expected = BREAKAGES[breakage]
    apply(broken)
    path = tmp_path / "collection.json"
    path.write_text(json.dumps(broken))
    errors = stac.validate_stac_file(path, schemas_dir)
    assert errors, f"{breakage}: no error reported"
    assert all(e.startswith(f"{path}: ") for e in errors)
    assert any(expected in e for e in errors), errors


def test_validator_rejects_an_invalid_catalog_and_bad_files(produced, schemas_dir, tmp_path):
    catalog = json.loads((produced["root"] / "stac" / "catalog.json").read_text())
    del catalog["description"]
    errors = stac.validate_stac(catalog, schemas_dir, name="catalog.json")
    assert errors == ["catalog.json: field (top level): 'description' is a required property "
                      "[schema https://schemas.stacspec.org/v1.1.0/catalog-spec/json-schema/catalog.json]"]
    (tmp_path / "bad.json").write_text("{not json")
    assert "is not JSON" in stac.validate_stac_file(tmp_path / "bad.json", schemas_dir)[0]
    assert stac.validate_stac_file(tmp_path / "missing.json", schemas_dir) == [f"{tmp_path / 'missing.json'}: no such file"]
    with pytest.raises(FileNotFoundError, match=stac.SCHEMAS_ENV):
        stac.validate_stac(catalog, tmp_path / "no-schemas-here")


# --- the scientist's path: from the document alone back to the data ----------------------------

def assert_same_as_open_zarr(actual: xr.Dataset, store) -> None:
    expected = xr.open_zarr(store)
    xr.testing.assert_identical(actual, expected)
    assert actual.chunks == expected.chunks
    for name in expected.variables:
        a, b = actual[name].encoding, expected[name].encoding
        assert a.keys() == b.keys(), name
        for key in b:
            same = np.array_equal(np.asarray(a[key]), np.asarray(b[key]), equal_nan=np.asarray(b[key]).dtype.kind == "f")
            assert same or a[key] == b[key], (name, key, a[key], b[key])


@pytest.mark.parametrize("case", CASES)
def test_collection_json_alone_opens_what_open_zarr_gives(produced, case):
    doc = json.loads(produced[case]["path"].read_text())
    asset = doc["assets"]["zarr"]
    href = produced[case]["path"].parent / asset["href"]
    by_hand = xr.open_dataset(href, engine="zarr", consolidated=asset["zarr:consolidated"],
                              zarr_format=asset["zarr:zarr_format"], **asset["xarray:open_kwargs"])
    assert_same_as_open_zarr(by_hand, produced[case]["store"])
    assert_same_as_open_zarr(stac.open_dataset_from_collection(produced[case]["path"]), produced[case]["store"])
    from_pystac = pystac.Collection.from_file(str(produced[case]["path"]))
    assert_same_as_open_zarr(stac.open_dataset_from_collection(from_pystac), produced[case]["store"])
    with pytest.raises(ValueError, match="relative to the collection"):
        stac.open_dataset_from_collection(doc)  # a dict alone does not say where it was


def test_remote_store_keeps_secrets_out_of_every_document():
    fs = fsspec.filesystem("memory")
    url = "memory://stac-secrets/remote.zarr"
    secrets = {"key": "AKIAEXAMPLEKEY", "secret": "VERYSECRETVALUE", "token": "SESSIONTOKEN"}
    storage_options = {**secrets, "skip_instance_cache": False,
                       "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "aws_session_token": "NESTEDTOKEN"}}
    try:
        lon360_dataset().to_zarr(url, zarr_format=3, consolidated=True)
        collection = stac.build_collection(url, "remote", storage_options=storage_options, license="CC0-1.0")
        path = stac.write_collection(collection, "memory://stac-secrets/out", storage_options=storage_options)
        assert path == "memory://stac-secrets/out/stac/remote/collection.json"
        for document in ("stac/remote/collection.json", "stac/catalog.json"):
            text = fs.cat_file(f"/stac-secrets/out/{document}").decode()
            for secret in [*secrets.values(), "NESTEDTOKEN"]:
                assert secret not in text
        asset = json.loads(fs.cat_file("/stac-secrets/out/stac/remote/collection.json"))["assets"]["zarr"]
        assert asset["href"] == url  # not under the STAC root: absolute
        assert asset["xarray:storage_options"] == {
            "skip_instance_cache": False, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
        assert fs.exists("/stac-secrets/out/stac/remote/quicklook.png")
        # validated here as the memory filesystem is emptied below
        assert stac.validate_stac_tree("memory://stac-secrets/out/stac/catalog.json", SCHEMAS_DIR) == []
        opened = stac.open_dataset_from_collection(path, storage_options={"key": "k", "secret": "s"})
        xr.testing.assert_identical(opened, xr.open_zarr(url))
    finally:
        fs.rm("/stac-secrets", recursive=True)


def test_credentials_in_store_urls_are_stripped():
    assert stac.public_url("s3://user:pw@bucket/x.zarr") == "s3://bucket/x.zarr"
    assert stac.public_url("https://h.org/x.zarr?sv=2024&sig=SIGNATURE&se=2030").startswith("https://h.org/x.zarr#q")
    assert stac.public_storage_options({"headers": {"Authorization": "Bearer x", "Accept": "json"},
                                        "connection_string": "AccountKey=abc", "account_name": "acct",
                                        "loop": object(), "pwd": "ab1"}) == {"headers": {"Accept": "json"}, "account_name": "acct"}
