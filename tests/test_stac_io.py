"""FsspecStacIO: STAC JSON written, read and updated through fsspec, on a local folder and on memory://,
by our own functions and by pystac itself."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import fsspec
import pystac
import pytest

from arcoforge import stac


def small_collection(collection_id: str, title: str | None = None) -> pystac.Collection:
    extent = pystac.Extent(pystac.SpatialExtent([[-10.0, 40.0, 5.0, 55.0]]),
                           pystac.TemporalExtent([[dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), None]]))
    return pystac.Collection(collection_id, "A test collection.", extent, title=title, license="CC0-1.0")


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    """A STAC output root on the local disk or on fsspec's in-memory filesystem (removed afterwards)."""
    if request.param == "local":
        yield str(tmp_path)
        return
    url = f"memory://stac-io-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def children(catalog_path: str) -> list[tuple[str, str]]:
    links = stac.read_json(catalog_path)["links"]
    return [(link["href"], link.get("title")) for link in links if link["rel"] == "child"]


def test_json_round_trip_and_catalog_updates_in_place(root):
    catalog_path = stac.join_href(root, stac.STAC_FOLDER, stac.CATALOG_NAME)
    assert stac.read_json(catalog_path) is None
    stac.update_catalog(catalog_path, small_collection("sst", "SST v1"))
    stac.update_catalog(catalog_path, small_collection("ice").to_dict())
    stac.update_catalog(catalog_path, small_collection("sst", "SST v2"))  # replaced where it stands
    assert children(catalog_path) == [("./sst/collection.json", "SST v2"), ("./ice/collection.json", "ice")]
    catalog = stac.read_json(catalog_path)
    assert catalog["type"] == "Catalog" and catalog["id"] == "arcoforge"
    assert stac.validate_stac(catalog, name="catalog.json") == []

    document = {"type": "Feature", "title": "Ünïcode stays as is", "n": 1}
    path = stac.join_href(root, "deep", "er", "doc.json")
    stac.write_json(path, document)  # folders are created
    fs, fs_path = stac.FsspecStacIO().filesystem(path)
    text = fs.cat_file(fs_path).decode("utf-8")
    assert text == json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    assert stac.read_json(path) == document
    with pytest.raises(ValueError, match="Out of range float"):
        stac.write_json(path, {"x": float("nan")})
    assert stac.read_json(path) == document


def test_pystac_reads_and_saves_through_fsspec_stac_io(root):
    stac_io = stac.FsspecStacIO()
    catalog = pystac.Catalog("made-by-pystac", "Saved by pystac through FsspecStacIO.")
    catalog.add_child(small_collection("sst"))
    catalog.normalize_hrefs(stac.join_href(root, "tree"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=stac_io)

    catalog_path = stac.join_href(root, "tree", stac.CATALOG_NAME)
    reread = pystac.Catalog.from_file(catalog_path, stac_io=stac_io)
    assert [child.id for child in reread.get_children()] == ["sst"]
    assert stac.validate_stac_tree(catalog_path) == []
    # and our own update of a catalog pystac wrote keeps its links
    stac.update_catalog(catalog_path, small_collection("ice"))
    assert children(catalog_path) == [("./sst/collection.json", None), ("./ice/collection.json", "ice")]


def test_bad_documents_are_named(root):
    stac_io = stac.FsspecStacIO()
    for name, text, expected in [("broken.json", "{not json", "is not JSON"),
                                 ("list.json", "[1, 2]", "expected a JSON object, got list")]:
        path = stac.join_href(root, name)
        stac_io.write_text(path, text)
        with pytest.raises(ValueError, match=expected) as raised:
            stac.read_json(path)
        assert path in str(raised.value)
    not_a_catalog = stac.join_href(root, "c.json")
    stac.write_json(not_a_catalog, small_collection("x").to_dict())
    with pytest.raises(ValueError, match="'Collection' document, expected a STAC Catalog"):
        stac.update_catalog(not_a_catalog, small_collection("sst"))


def test_local_writes_are_atomic(tmp_path, monkeypatch):
    """A local document is replaced in one step: a failed write leaves the old one and no temporary file."""
    path = tmp_path / "catalog.json"
    stac.write_json(path, {"version": 1})

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        stac.write_json(path, {"version": 2})
    monkeypatch.undo()
    assert stac.read_json(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json"]
    stac.write_json(path, {"version": 2})
    assert stac.read_json(path) == {"version": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json"]
