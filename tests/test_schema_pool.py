"""SchemaPool: input schemas stored by column, merged in any order, combined and checked as a list of them would be."""

from __future__ import annotations

import gc
import pickle
import random
import tracemalloc

import dataclasses

import cftime
import numpy as np
import pytest

from arcoforge import ConcatDim, FilePattern, MergeDim, SchemaError
from arcoforge.append import inputs_to_append
from arcoforge.input_checks import check_inputs
from arcoforge.schema import SchemaPool, combine_schemas, input_schema
from arcoforge.store_plan import ExistingStore

from .test_schema import daily, schemas_of, seq


def assert_same_schema(a, b) -> None:
    """Two DatasetSchemas equal field by field (arrays by value and dtype)."""
    for name in ("dims", "attrs", "concat_dims", "merge_dims", "merge_sources", "n_inputs", "urls", "position_base",
                 "offset_base"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("offsets", "lengths"):  # int64 arrays per concat dimension
        assert {dim: (v.dtype, v.tolist()) for dim, v in getattr(a, name).items()} == \
               {dim: (v.dtype, v.tolist()) for dim, v in getattr(b, name).items()}, name
    assert a.variables.keys() == b.variables.keys() and list(a.variables) == list(b.variables)
    for key, variable in a.variables.items():
        other = b.variables[key]
        assert (variable.dims, variable.shape, variable.dtype, variable.is_coord) == \
               (other.dims, other.shape, other.dtype, other.is_coord)
        assert repr(variable.attrs) == repr(other.attrs) and repr(variable.encoding) == repr(other.encoding)
    assert a.concat_coords.keys() == b.concat_coords.keys()
    for dim, values in a.concat_coords.items():
        assert values.dtype == b.concat_coords[dim].dtype and np.array_equal(values, b.concat_coords[dim])


def shuffled_pool(schemas, parts: int = 3, seed: int = 0) -> SchemaPool:
    """The schemas added to several pools in a random order, the pools merged in a random order, pickled."""
    schemas = list(schemas)
    random.Random(seed).shuffle(schemas)
    pools = [SchemaPool() for _ in range(parts)]
    for i, schema in enumerate(schemas):
        pools[i % parts].add(schema)
    pools = [pickle.loads(pickle.dumps(pool)) for pool in pools]
    random.Random(seed + 1).shuffle(pools)
    merged = SchemaPool()
    for pool in pools:
        merged.merge(pool)
    return pickle.loads(pickle.dumps(merged))


def test_a_pool_gives_back_each_schema_it_was_given():
    pattern = seq(4)
    datasets = [daily(0, 2), daily(2, 3), daily(5, 2, calendar="noleap"), daily(7, 1)]
    schemas = schemas_of(pattern, datasets)
    schemas[3].url = None
    del schemas[1].concat_coords["time"]
    pool = shuffled_pool(schemas)
    assert len(pool.schemas()) == 4
    back = sorted(pool.schemas(), key=lambda s: s.index.sort_key())
    for original, rebuilt in zip(schemas, back):
        assert rebuilt.index == original.index and repr(rebuilt.index) == repr(original.index)
        assert (rebuilt.url, rebuilt.dims, rebuilt.attrs) == (original.url, original.dims, original.attrs)
        assert rebuilt.variables.keys() == original.variables.keys()
        assert rebuilt.concat_coords.keys() == original.concat_coords.keys()
        for dim, values in original.concat_coords.items():
            assert rebuilt.concat_coords[dim].dtype == values.dtype
            assert list(rebuilt.concat_coords[dim]) == list(values)
    assert pool.schemas()[-1].url == pool.url(3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_combining_a_pool_merged_in_any_order_equals_combining_the_list(seed):
    pattern = FilePattern(lambda time, var: f"{var}{time}.nc", ConcatDim("time", [0, 1, 2, 3]),
                          MergeDim("var", ["tas", "pr"]))
    datasets = []
    for index, _ in pattern.items():
        start = index.find_position("time").value * 2
        name = ["tas", "pr"][index.find_position("var").value]
        datasets.append(daily(start, 2, name=name, extra_attrs={"history": f"file {start}"}))
    schemas = schemas_of(pattern, datasets)
    expected = combine_schemas(schemas, pattern.combine_dim_keys)
    assert_same_schema(combine_schemas(shuffled_pool(schemas, seed=seed), pattern.combine_dim_keys), expected)
    assert "history" not in expected.attrs and expected.merge_sources == {"tas": (0,), "pr": (1,), "lat": (0,),
                                                                          "time": (0,)}


def test_cftime_and_datetime_coordinates_keep_their_values_and_dtypes():
    pattern = seq(3)
    schemas = schemas_of(pattern, [daily(0, 2, calendar="noleap"), daily(2, 2, calendar="noleap"),
                                   daily(4, 2, calendar="noleap")])
    combined = combine_schemas(shuffled_pool(schemas), pattern.combine_dim_keys)
    assert combined.concat_coords["time"].dtype == object
    assert all(isinstance(t, cftime.datetime) for t in combined.concat_coords["time"])
    assert_same_schema(combined, combine_schemas(schemas, pattern.combine_dim_keys))


def many(n: int, odd: dict[int, dict] | None = None):
    """``n`` one-day inputs sharing one structure, but those in ``odd`` (position -> daily's arguments)."""
    pattern = seq(n)
    return pattern, schemas_of(pattern, [daily(i, 1, **(odd or {}).get(i, {})) for i in range(n)])


def test_errors_name_the_first_differing_input_in_pattern_order_whatever_the_order_added():
    pattern, schemas = many(60, {30: {"nlat": 4}, 45: {"nlat": 4}})
    pool = shuffled_pool(reversed(schemas))
    with pytest.raises(SchemaError, match=r"size 4 in file30\.nc .*but 3 in file0\.nc"):
        combine_schemas(pool, pattern.combine_dim_keys)

    pattern, schemas = many(60, {41: {"name": "pr"}, 50: {"name": "pr"}})
    with pytest.raises(SchemaError, match=r"file41\.nc \(pattern index Index\(time=41\)\) lacks variables \['tas'\]"):
        combine_schemas(shuffled_pool(schemas), pattern.combine_dim_keys)


def test_input_checks_on_a_pool_name_the_first_bad_input():
    pattern, schemas = many(40)
    for i in (25, 33):
        wider = dataclasses.replace(schemas[i].variables["tas"], dtype=np.dtype("float64"))
        schemas[i].variables = {**schemas[i].variables, "tas": wider}
    with pytest.raises(SchemaError, match=r"^file25\.nc .*has dtype float64, expected float32 as in file0\.nc"):
        check_inputs(shuffled_pool(schemas), pattern.combine_dim_keys)
    check_inputs(shuffled_pool(schemas), pattern.combine_dim_keys, {"tas": {"dtype": "float64"}})

    pattern, schemas = many(40)
    schemas[31].concat_coords["time"] = schemas[29].concat_coords["time"]
    with pytest.raises(SchemaError, match=r"^file31\.nc .*goes back to .*the last value of file30\.nc"):
        check_inputs(shuffled_pool(schemas), pattern.combine_dim_keys)


def test_appending_keeps_the_inputs_the_store_lacks_as_a_pool():
    pattern, schemas = many(10)
    existing = ExistingStore("s", "time", 6, {}, {}, {}, {}, None, [f"file{i}.nc" for i in range(6)])
    fresh = inputs_to_append(shuffled_pool(schemas), existing)
    assert isinstance(fresh, SchemaPool) and sorted(fresh.urls()) == [f"file{i}.nc" for i in range(6, 10)]
    combined = combine_schemas(fresh, pattern.combine_dim_keys, first_positions={"time": 6})
    assert combined.urls == tuple(f"file{i}.nc" for i in range(6, 10)) and combined.lengths["time"].tolist() == [1] * 4


def test_a_pool_takes_a_few_bytes_per_input():
    """Measured: ~40 B pickled and ~60 B in memory per input here (2 kB as InputSchema objects)."""
    pattern = seq(3000)

    def pool_of(n: int) -> bytes:
        pool, ds = SchemaPool(), daily(0, 1)
        for index, url in list(pattern.items())[:n]:
            ds = ds.assign_coords(time=ds.time + np.timedelta64(1, "D"))
            ds.encoding["source"] = url
            pool.add(input_schema(ds, index, ["time"]))
        return pickle.dumps(pool)

    small, large = pool_of(1000), pool_of(3000)
    assert (len(large) - len(small)) / 2000 < 80
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pool = pickle.loads(small)
        one = tracemalloc.get_traced_memory()[0] - before
        pool_large = pickle.loads(large)
        three = tracemalloc.get_traced_memory()[0] - before - one
    finally:
        tracemalloc.stop()
    assert (three - one) / 2000 < 150
    assert len(pool) == 1000 and len(pool_large) == 3000


def test_the_beam_combine_seals_what_it_passes_on_and_leaves_its_inputs_sealed():
    """Accumulators cross the shuffle sealed, join without opening their parts and leave sealed."""
    from arcoforge.beam.store import CombineSchemas
    from arcoforge.compressed_pickle import Sealed
    from arcoforge.schema_pool import PoolInParts

    pattern = seq(6)
    schemas = schemas_of(pattern, [daily(2 * i, 2) for i in range(6)])
    combine = CombineSchemas()
    parts = [combine.create_accumulator() for _ in range(3)]
    for i, schema in enumerate(schemas):
        parts[i % 3] = combine.add_input(parts[i % 3], schema)
    sealed = [pickle.loads(pickle.dumps(combine.compact(part))) for part in parts]
    blobs = [seal.blob for seal in sealed]
    assert all(isinstance(seal, Sealed) for seal in sealed)
    merged = combine.merge_accumulators([sealed[2], sealed[0], combine.create_accumulator(), sealed[1]])
    assert [seal.blob for seal in sealed] == blobs and len(merged) == 6
    output = combine.extract_output(merged)
    assert isinstance(output, Sealed) and isinstance(output.open(), PoolInParts)
    assert_same_schema(combine_schemas(output.open().whole(), pattern.combine_dim_keys),
                       combine_schemas(schemas, pattern.combine_dim_keys))


def test_a_pool_in_parts_holds_its_inputs_sealed_while_they_arrive():
    """~10 bytes an input held while a worker reads its inputs, not the ~90 of an open pool; whole() is the same pool."""
    import tracemalloc

    from arcoforge.schema_pool import PoolInParts

    pattern = seq(6_000)
    schemas = schemas_of(pattern, [daily(i, 1) for i in range(6_000)])
    direct = SchemaPool.of(schemas)  # first: reading a schema the first time caches what it pickles to
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parts = PoolInParts(rows_per_part=500)
        for schema in schemas:
            parts.add(schema)
        held = tracemalloc.get_traced_memory()[0] - before
        again = SchemaPool.of(schemas)
        held_open = tracemalloc.get_traced_memory()[0] - before - held
    finally:
        tracemalloc.stop()
    assert len(parts) == 6_000 and len(parts.parts) == 12
    assert held < held_open / 3, (held, held_open)
    assert len(again) == 6_000
    whole = parts.whole()
    assert [whole.url(row) for row in range(0, 6_000, 499)] == [direct.url(row) for row in range(0, 6_000, 499)]
    assert_same_schema(combine_schemas(whole, pattern.combine_dim_keys),
                       combine_schemas(direct, pattern.combine_dim_keys))
