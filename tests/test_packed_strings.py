"""Packed URLs and compressed pickles: what a plan of many inputs holds per input, and what crosses the runner."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys

import numpy as np
import pytest

from arcoforge.io.state import StoreState, fingerprint
from arcoforge.packed_strings import PackedStrings, pack_if_strings, pack_strings
from arcoforge.schema import SchemaPool, combine_schemas
from arcoforge.store_plan import recorded_description

from .test_schema import daily, schemas_of, seq

URLS = [f"s3://archive/sst/{i:07d}.nc" for i in range(5_000)]


def test_packed_strings_behave_as_the_tuple_they_pack():
    values = ["a.nc", None, "", "dé/ü.nc", "x\udcff.nc"]  # None, empty, non-ASCII, a lone surrogate
    packed = pack_strings(values)
    assert len(packed) == 5 and list(packed) == values and packed == tuple(values) and tuple(values) == packed
    assert packed[-1] == values[-1] and packed[1:3] == values[1:3] and isinstance(packed[1:3], PackedStrings)
    assert packed != values[:4] and packed != ["a.nc", "b", "", "dé/ü.nc", "x\udcff.nc"]
    assert pickle.loads(pickle.dumps(packed)) == packed and hash(pickle.loads(pickle.dumps(packed))) == hash(packed)
    with pytest.raises(IndexError):
        packed[5]
    with pytest.raises(TypeError, match="str or None, not int"):
        pack_strings(["a.nc", 3])
    assert pack_strings([]) == () and not pack_strings([])


def test_packed_urls_take_a_fraction_of_strs():
    packed = pack_strings(URLS)
    as_strs = sys.getsizeof(URLS) + sum(sys.getsizeof(url) for url in URLS)
    held = len(packed._buffer) + packed._ends.nbytes
    assert held < as_strs / 2, (held, as_strs)


def test_a_plan_records_packed_urls_as_the_list_it_recorded_before(tmp_path):
    """Fingerprints and plan.json are the same for packed URLs as for a tuple: resumes still match."""
    description = {"inputs": tuple(URLS[:10]), "lengths": [1] * 10}
    packed = {**description, "inputs": pack_strings(URLS[:10])}
    assert fingerprint(packed) == fingerprint(description)
    state = StoreState(str(tmp_path / "s.zarr"))
    state.write_json("plan.json", packed)
    assert state.read_json("plan.json")["inputs"] == URLS[:10]


def test_a_combined_schema_packs_its_urls():
    pattern = seq(30)
    combined = combine_schemas(schemas_of(pattern, [daily(i, 1) for i in range(30)]), pattern.combine_dim_keys)
    assert isinstance(combined.urls, PackedStrings)
    assert list(combined.urls) == [url for _, url in pattern.items()]


def test_pools_pickle_compressed():
    pool = SchemaPool.of(schemas_of(seq(2_000), [daily(i, 1) for i in range(2_000)]))
    blob = pickle.dumps(pool)
    plain = pickle.dumps({**pool.__dict__, "_cache": {}}, protocol=5)
    assert len(blob) < len(plain) / 3, (len(blob), len(plain))
    again = pickle.loads(blob)
    assert list(again.urls()) == list(pool.urls()) and np.array_equal(again.positions("time"), pool.positions("time"))


def test_plan_json_records_long_lists_by_count_ends_and_digest():
    description = {"inputs": pack_strings(URLS), "lengths": [1] * len(URLS), "dims": {"time": len(URLS)},
                   "chunks": {"sst": (1000, 4)}, "encoding": [("dtype", "float32")]}
    record = recorded_description(description)
    assert record["inputs"]["count"] == len(URLS) and record["inputs"]["first"] == URLS[0]
    assert record["inputs"]["last"] == URLS[-1] and record["lengths"]["count"] == len(URLS)
    assert record["dims"] == {"time": len(URLS)} and record["chunks"] == {"sst": [1000, 4]}
    assert record["encoding"] == [["dtype", "float32"]] and json.loads(json.dumps(record)) == record
    changed = recorded_description({**description, "inputs": pack_strings([*URLS[:-2], "other.nc", URLS[-1]])})
    assert changed["inputs"]["sha256"] != record["inputs"]["sha256"]


def test_odd_sources_keep_the_urls_a_tuple():
    """A preprocessor may set an input's encoding["source"] to something else than a str: kept as it is."""
    assert pack_if_strings(["a.nc", None, ("b.nc", "c.nc"), "d.nc"]) == ("a.nc", None, ("b.nc", "c.nc"), "d.nc")
    assert isinstance(pack_if_strings(["a.nc", None]), PackedStrings)


def test_a_pool_packs_the_urls_of_rows_as_it_holds_them():
    schemas = schemas_of(seq(12), [daily(i, 1) for i in range(12)])
    schemas[3] = dataclasses.replace(schemas[3], url=None)
    schemas[7] = dataclasses.replace(schemas[7], url="dé/ü.nc")
    pool = SchemaPool.of(schemas)
    rows = np.array([11, 3, 0, 7, 7, 5])
    packed = pool.packed_urls(rows)
    assert isinstance(packed, PackedStrings) and packed == tuple(pool.urls(rows.tolist()))
    assert packed == (schemas[11].url, None, schemas[0].url, "dé/ü.nc", "dé/ü.nc", schemas[5].url)
    assert pool.packed_urls(np.array([], dtype=np.int64)) == ()
    odd = SchemaPool.of([*schemas[:2], dataclasses.replace(schemas[2], url=("a.nc", "b.nc"))])
    assert odd.packed_urls(np.array([2, 0])) == (("a.nc", "b.nc"), schemas[0].url)


@pytest.mark.parametrize("values", [["a.nc", "b.nc"], ["a.nc", None], ["", "b.nc"], [None], [""], []])
def test_all_present_is_all_without_decoding(values):
    assert pack_strings(values).all_present() is all(values)
