from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcoforge import RecipeError
from arcoforge.chunking import (
    chunk_bounds,
    chunks_overlapping,
    resolve_target_chunks,
    resolve_target_shards,
    variable_chunks,
    variable_shards,
)
from arcoforge.schema import DatasetSchema, VariableSchema
import numpy as np


def make_schema(time_lengths=(12, 12, 12), nlat=10) -> DatasetSchema:
    total = sum(time_lengths)
    offsets = np.concatenate([[0], np.cumsum(time_lengths)[:-1]]).astype(np.int64)
    variables = {
        "tas": VariableSchema("tas", ("time", "lat"), (total, nlat), np.dtype("f4"), {}, {}, False),
        "time": VariableSchema("time", ("time",), (total,), np.dtype("M8[ns]"), {}, {}, True),
        "lat": VariableSchema("lat", ("lat",), (nlat,), np.dtype("f8"), {}, {}, True),
        "lat_bnds": VariableSchema("lat_bnds", ("lat", "bnds"), (nlat, 2), np.dtype("f8"), {}, {}, False),
    }
    return DatasetSchema(
        dims={"time": total, "lat": nlat, "bnds": 2}, variables=variables, attrs={},
        concat_dims=("time",), merge_dims=(), offsets={"time": offsets}, lengths={"time": np.array(time_lengths, dtype=np.int64)},
        concat_coords={}, merge_sources={}, n_inputs=len(time_lengths),
    )


@given(size=st.integers(0, 500), chunk=st.integers(1, 100))
def test_chunk_bounds_tile_the_dimension(size, chunk):
    bounds = chunk_bounds(size, chunk)
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(size))
    assert all(0 < stop - start <= chunk for start, stop in bounds)


@given(start=st.integers(0, 300), length=st.integers(0, 100), chunk=st.integers(1, 50))
def test_chunks_overlapping_are_exactly_those_touched(start, length, chunk):
    stop = start + length
    touched = {i // chunk for i in range(start, stop)}
    assert set(chunks_overlapping(start, stop, chunk)) == touched


def test_defaults_cut_concat_dims_at_file_length_and_keep_others_whole():
    assert resolve_target_chunks(make_schema(), {}) == {"time": 12, "lat": 10, "bnds": 2}


def test_requested_chunks_and_whole_dimension():
    chunks = resolve_target_chunks(make_schema(), {"time": 5, "lat": -1})
    assert chunks == {"time": 5, "lat": 10, "bnds": 2}
    assert resolve_target_chunks(make_schema(), {"time": 1000})["time"] == 36


def test_one_dimensional_coordinates_are_one_chunk():
    schema = make_schema()
    chunks = variable_chunks(schema, resolve_target_chunks(schema, {"time": 5, "lat": 3}))
    assert chunks == {"tas": (5, 3), "time": (36,), "lat": (10,), "lat_bnds": (3, 2)}


@pytest.mark.parametrize(
    "target, message",
    [({"depth": 3}, r"dimensions \['depth'\] that the dataset does not have"),
     ({"time": 0}, "positive integer"), ({"time": "10"}, "has no unit"), ({"time": "ten MB"}, "byte size like"), ({"time": 2.5}, "positive integer")],
)
def test_bad_target_chunks_are_named(target, message):
    with pytest.raises(RecipeError, match=message):
        resolve_target_chunks(make_schema(), target)


def big_schema():
    # 365 daily steps of a 720 x 1440 float32 grid: 4 MB a step
    schema = make_schema(time_lengths=(1,) * 365, nlat=720)
    schema.dims["lon"] = 1440
    schema.variables["tas"].dims = ("time", "lat", "lon")
    schema.variables["tas"].shape = (365, 720, 1440)
    return schema


def test_byte_size_for_one_dimension():
    chunks = resolve_target_chunks(big_schema(), {"time": "100MB"})
    assert chunks["time"] == 100_000_000 // (720 * 1440 * 4) == 24
    assert chunks["lat"] == 720 and chunks["lon"] == 1440


def test_one_byte_size_for_the_whole_chunk():
    chunks = resolve_target_chunks(big_schema(), "50MB")
    assert chunks == {"time": 12, "lat": 720, "bnds": 2, "lon": 1440}
    small = resolve_target_chunks(big_schema(), "1MB")  # one step is 4 MB: split the grid
    assert small["time"] == 1 and small["lat"] * small["lon"] * 4 <= 1_000_000


def test_shards_are_multiples_of_chunks():
    schema = big_schema()
    dim_chunks = resolve_target_chunks(schema, {"time": 10, "lat": 360})
    shards = resolve_target_shards(schema, dim_chunks, {"time": 30, "lat": -1})
    assert shards == {"time": 30, "lat": 720, "bnds": 2, "lon": 1440}
    per_var = variable_shards(schema, variable_chunks(schema, dim_chunks), shards)
    assert per_var["tas"] == (30, 720, 1440)
    assert per_var["time"] is None  # coordinates stay single unsharded chunks
    with pytest.raises(RecipeError, match=r"target_shards\['time'\] must be a multiple of its chunk length 10"):
        resolve_target_shards(schema, dim_chunks, {"time": 25})
