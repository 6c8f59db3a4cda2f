from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from arcoforge import ConcatDim, FilePattern, SchemaError
from arcoforge.rechunk import combine_fragments, split_fragments
from arcoforge.schema import combine_schemas, input_schema


def build(lengths, nlat):
    pattern = FilePattern(lambda time: f"f{time}.nc", ConcatDim("time", list(range(len(lengths)))))
    total = sum(lengths)
    full = np.arange(total * nlat, dtype="float64").reshape(total, nlat)
    datasets, start = [], 0
    for n in lengths:
        ds = xr.Dataset({"v": (("time", "lat"), full[start:start + n])},
                        coords={"time": np.arange(start, start + n), "lat": np.arange(nlat)})
        datasets.append(ds)
        start += n
    schemas = [input_schema(ds, index, ["time"]) for index, ds in zip(pattern, datasets)]
    return pattern, datasets, combine_schemas(schemas, pattern.combine_dim_keys), full


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    nlat=st.integers(1, 7),
    time_chunk=st.integers(1, 12),
    lat_chunk=st.integers(1, 8),
)
def test_split_then_combine_rebuilds_every_element_exactly_once(lengths, nlat, time_chunk, lat_chunk):
    pattern, datasets, schema, full = build(lengths, nlat)
    chunks = {"v": (time_chunk, lat_chunk), "lat": (nlat,), "time": (sum(lengths),)}
    groups: dict = {}
    for index, ds in zip(pattern, datasets):
        for key, fragment in split_fragments(index, ds, schema, chunks):
            groups.setdefault(key, []).append(fragment)
    rebuilt = np.full_like(full, np.nan)
    written = np.zeros(full.shape, dtype=int)
    for key, fragments in groups.items():
        if key[0] != "v":
            continue
        region, values = combine_fragments(key, fragments, schema, chunks)
        rebuilt[region] = values
        written[region] += 1
    np.testing.assert_array_equal(rebuilt, full)
    assert (written == 1).all()
    # 'lat' has no concat dim: only the first input contributes it
    assert [len(v) for k, v in groups.items() if k[0] == "lat"] == [1]


def test_a_missing_fragment_is_reported():
    pattern, datasets, schema, _ = build([3, 3], 2)
    chunks = {"v": (6, 2), "lat": (2,), "time": (6,)}
    fragments = list(split_fragments(next(iter(pattern)), datasets[0], schema, chunks))
    key, fragment = [f for f in fragments if f[0][0] == "v"][0]
    with pytest.raises(SchemaError, match=r"received 6 of its 12 elements"):
        combine_fragments(key, [fragment], schema, chunks)
