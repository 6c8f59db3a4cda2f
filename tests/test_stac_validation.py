"""Offline STAC validation with the schemas shipped in the package: what passes, what fails and how
it is said, that nothing touches the network, and that the schema files are package data."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from arcoforge import stac
from arcoforge.stac import validation as stac_validation
from arcoforge.cli import EXIT_INPUT, EXIT_OK, main

REPO = Path(__file__).parents[1]


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or name lookup fails the test; the registry is rebuilt under the block."""
    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network access during validation: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv(stac_validation.SCHEMAS_ENV, raising=False)
    stac_validation._schema_registry.cache_clear()
    yield
    stac_validation._schema_registry.cache_clear()


@pytest.fixture(scope="module")
def collection_path(tmp_path_factory) -> Path:
    """collection.json (and the root catalog) of a small real store, as arcoforge writes them."""
    root = tmp_path_factory.mktemp("stac-validation")
    time = xr.date_range("2001-01-01", periods=4, freq="D").values
    dataset = xr.Dataset(
        {"sst": (("time", "lat", "lon"), np.full((4, 3, 5), 290.0, dtype="f4"),
                 {"standard_name": "sea_surface_temperature", "units": "K"})},
        coords={"time": ("time", time, {"standard_name": "time"}),
                "lat": ("lat", [-10.0, 0.0, 10.0], {"standard_name": "latitude", "units": "degrees_north"}),
                "lon": ("lon", np.arange(0.0, 50.0, 10.0), {"standard_name": "longitude", "units": "degrees_east"})},
    )
    store = root / "sst.zarr"
    dataset.to_zarr(store, zarr_format=3, consolidated=True)
    collection = stac.build_collection(store, "sst", license="CC-BY-4.0", description="Test SST.")
    return Path(stac.write_collection(collection, root, quicklook=False))


def _document(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_valid_collection_and_its_catalog_pass_with_the_packaged_schemas(collection_path, no_network):
    with pytest.raises(NetworkUsed):  # the block works, so the tests using it can fail
        with socket.socket() as sock:
            sock.connect(("127.0.0.1", 9))
    document = _document(collection_path)
    assert stac.DATACUBE_EXTENSION in document["stac_extensions"]
    assert stac_validation.validate_stac(document, name="collection.json") == []
    assert stac_validation.validate_stac_tree(collection_path.parents[1] / "catalog.json") == []
    assert stac_validation.default_schemas_dir() == stac_validation.packaged_schemas_dir()


def test_an_item_passes_too(no_network):
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "one", "links": [], "assets": {},
            "geometry": {"type": "Point", "coordinates": [1.0, 2.0]}, "bbox": [1.0, 2.0, 1.0, 2.0],
            "properties": {"datetime": "2001-01-01T00:00:00Z"}}
    assert stac_validation.validate_stac(item, name="item.json") == []
    del item["geometry"]
    assert stac_validation.validate_stac(item, name="item.json") == [
        "item.json: field (top level): 'geometry' is a required property "
        "[schema https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json]"]


def test_a_broken_collection_fails_with_a_message_naming_each_field(collection_path, no_network):
    broken = copy.deepcopy(_document(collection_path))
    del broken["extent"]
    broken["cube:dimensions"]["time"]["type"] = 5
    broken["cube:dimensions"]["lat"]["type"] = "temporal"
    core = "[schema https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json]"
    cube = f"[schema {stac.DATACUBE_EXTENSION}]"
    # the datacube schema's failure is explained inside cube:dimensions (not by its assets branch)
    assert stac_validation.validate_stac(broken, name="collection.json") == [
        f"collection.json: field (top level): 'extent' is a required property {core}",
        f"collection.json: field cube:dimensions/time/type: 5 is not of type 'string' {cube}",
    ]
    # a spatial dimension without its axis: the message names the missing field, not the datacube branches
    broken = copy.deepcopy(_document(collection_path))
    broken["cube:dimensions"]["time"]["type"] = "spatial"
    assert stac_validation.validate_stac(broken, name="collection.json") == [
        f"collection.json: field cube:dimensions/time: 'axis' is a required property {cube}"]


def test_cli_validate_works_offline_without_any_schema_option(collection_path, no_network, tmp_path, capsys):
    assert main(["stac", "validate", str(collection_path.parents[1] / "catalog.json")]) == EXIT_OK
    assert f"valid: {collection_path.parents[1] / 'catalog.json'}" in capsys.readouterr().out
    broken = _document(collection_path)
    del broken["extent"]
    (tmp_path / "collection.json").write_text(json.dumps(broken))
    assert main(["stac", "validate", str(tmp_path / "collection.json")]) == EXIT_INPUT
    assert "'extent' is a required property" in capsys.readouterr().err


def test_an_unknown_extension_is_reported_not_fetched(collection_path, no_network):
    document = _document(collection_path)
    url = "https://stac-extensions.github.io/nope/v1.0.0/schema.json"
    document["stac_extensions"].append(url)
    [error] = stac_validation.validate_stac(document, name="c.json")
    assert error.startswith(f"c.json: schema {url} is not in {stac_validation.packaged_schemas_dir()}")


def test_the_environment_variable_still_names_another_folder(collection_path, no_network, monkeypatch, tmp_path):
    only_core = tmp_path / "schemas"
    core = stac_validation.packaged_schemas_dir() / "schemas.stacspec.org"
    for file in core.rglob("*.json"):
        (only_core / file.relative_to(core.parent)).parent.mkdir(parents=True, exist_ok=True)
        (only_core / file.relative_to(core.parent)).write_bytes(file.read_bytes())
    monkeypatch.setenv(stac_validation.SCHEMAS_ENV, str(only_core))
    errors = stac_validation.validate_stac(_document(collection_path), name="c.json")
    assert any(f"{stac.DATACUBE_EXTENSION} is not in {only_core}" in e for e in errors), errors
    monkeypatch.setenv(stac_validation.SCHEMAS_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=stac_validation.SCHEMAS_ENV):
        stac_validation.validate_stac(_document(collection_path))


def _references(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_references(value) for value in node))
    return set()


def test_every_packaged_schema_and_every_reference_it_makes_resolves_offline(no_network):
    folder = stac_validation.packaged_schemas_dir()
    registry = stac_validation._schema_registry(str(folder))
    files = sorted(folder.rglob("*.json"))
    assert len(files) >= 29
    for file in files:
        url = "https://" + file.relative_to(folder).as_posix()
        resolver = registry.resolver(base_uri=url)
        for ref in _references(json.loads(file.read_text())):
            resolver.lookup(ref)  # raises Unresolvable for anything not shipped
    # the quirk of v1.1.0 common.json: declared under a different $id than its URL
    assert registry.contents("https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/commonjson")


def test_schemas_sources_and_licences_are_package_data():
    """Every file under stac_schemas/ matches a pyproject package-data pattern, so the wheel has it."""
    folder = stac_validation.packaged_schemas_dir()
    package = REPO / "src" / "arcoforge"
    shipped = [p for p in (package / "stac_schemas").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    # where arcoforge is installed from a wheel (CI: pip install .), this compares the install with the tree
    for file in shipped:
        assert (folder / file.relative_to(package / "stac_schemas")).read_bytes() == file.read_bytes(), file
    sources = (folder / "SOURCES.md").read_text()
    for name in ("Apache-2.0.txt", "geojson-schema-MIT.md", "PROJ-COPYING.txt"):
        assert (folder / "licenses" / name).is_file() and name in sources
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["arcoforge"]
    for file in shipped:
        relative = file.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern.replace("**/", "*")) for pattern in patterns), relative
    for host in ("schemas.stacspec.org", "stac-extensions.github.io", "geojson.org", "proj.org"):
        assert f"`{host}/" in sources, host


def test_pystac_objects_validate_offline_with_the_packaged_schemas(collection_path, no_network):
    """OfflineSTACValidator plugs arcoforge's schemas into pystac's validate(); errors are arcoforge's lines."""
    import pystac

    validator = stac.OfflineSTACValidator()
    assert isinstance(validator, pystac.validation.STACValidator)
    collection = pystac.Collection.from_file(str(collection_path))
    assert collection.validate(validator=validator) == [
        "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json",
        stac.DATACUBE_EXTENSION, stac.ZARR_EXTENSION, stac.XARRAY_EXTENSION]
    collection.extra_fields["cube:dimensions"]["time"]["type"] = "temporal-ish"
    collection.assets["zarr"].extra_fields["zarr:consolidated"] = "yes"
    with pytest.raises(pystac.STACValidationError) as raised:
        collection.validate(validator=validator)
    assert raised.value.source == [line for line in str(raised.value).splitlines()]
    assert all(line.startswith(f"{collection_path}: field cube:dimensions/time") for line in raised.value.source)
    assert validator.errors(collection.to_dict(), name="c.json") == stac.validate_stac(collection.to_dict(),
                                                                                        name="c.json")
    collection.extra_fields["cube:dimensions"]["time"]["type"] = "temporal"
    with pytest.raises(pystac.STACValidationError, match="assets/zarr/zarr:consolidated: 'yes' is not of type"):
        collection.validate(validator=validator)
    collection.stac_extensions.append("https://stac-extensions.github.io/nope/v1.0.0/schema.json")
    collection.assets["zarr"].extra_fields["zarr:consolidated"] = True
    with pytest.raises(pystac.STACValidationError, match="schema https://stac-extensions.github.io/nope/v1.0.0/"
                                                         "schema.json is not in"):
        collection.validate(validator=validator)


def test_importing_the_stac_package_leaves_jsonschema_to_validation():
    """jsonschema (~0.1 s) is imported when a document is validated, not with every recipe's imports."""
    code = "import sys, arcoforge.stac; print(sorted(m for m in ('jsonschema', 'pystac.validation') if m in sys.modules))"
    tested = Path(stac.__file__).parents[2]  # the arcoforge under test, installed or from the tree
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(tested)})
    assert result.stdout.strip() == "[]"
