from __future__ import annotations

import pickle

import pytest

from arcoforge import CombineOp, ConcatDim, Dimension, FilePattern, FileType, MergeDim, Position
from arcoforge.patterns import Index, pattern_from_file_sequence


def make_url(variable, time):
    return f"https://example.org/{variable}/{variable}_{time}.nc"


@pytest.fixture
def pattern():
    return FilePattern(
        make_url,
        MergeDim("variable", ["tas", "pr"]),
        ConcatDim("time", [2000, 2001, 2002], nitems_per_file=12),
    )


def test_dims_shape_and_keys(pattern):
    assert pattern.dims == {"variable": 2, "time": 3}
    assert pattern.shape == (2, 3)
    assert len(pattern) == 6
    assert pattern.concat_dims == ["time"]
    assert pattern.merge_dims == ["variable"]
    assert pattern.combine_dim_keys == [
        Dimension("variable", CombineOp.MERGE),
        Dimension("time", CombineOp.CONCAT),
    ]
    assert pattern.concat_sequence_lens == {"time": 36}
    assert pattern.nitems_per_input == {"time": 12}
    assert pattern.file_type == FileType.netcdf4


def test_items_enumerate_every_input_in_order(pattern):
    items = list(pattern.items())
    assert [url for _, url in items] == [
        make_url(v, t) for v in ["tas", "pr"] for t in [2000, 2001, 2002]
    ]
    index, url = items[4]
    assert index[Dimension("variable", CombineOp.MERGE)] == Position(1)
    assert index[Dimension("time", CombineOp.CONCAT)] == Position(1)
    assert pattern[index] == url == make_url("pr", 2001)


def test_index_is_hashable_picklable_and_readable(pattern):
    index = next(iter(pattern))
    assert hash(index) == hash(pickle.loads(pickle.dumps(index)))
    assert {index: 1}[pickle.loads(pickle.dumps(index))] == 1
    assert repr(index) == "Index(time=0, variable=0)"
    assert index.find_position("time") == Position(0)
    assert isinstance(index, Index)


def test_prune_keeps_first_keys_of_concat_dims_only(pattern):
    pruned = pattern.prune(2)
    assert pruned.dims == {"variable": 2, "time": 2}
    assert pattern.dims == {"variable": 2, "time": 3}
    assert [u for _, u in pruned.items()][:2] == [make_url("tas", 2000), make_url("tas", 2001)]
    with pytest.raises(ValueError, match="nkeep"):
        pattern.prune(0)


def test_sha256_changes_with_urls_and_not_with_secrets(pattern):
    same = FilePattern(
        make_url,
        MergeDim("variable", ["tas", "pr"]),
        ConcatDim("time", [2000, 2001, 2002], nitems_per_file=12),
        query_string_secrets={"token": "s3cr3t"},
    )
    other = FilePattern(make_url, MergeDim("variable", ["tas"]), ConcatDim("time", [2000], 12))
    assert pattern.sha256() == same.sha256()
    assert pattern.sha256() != other.sha256()
    assert len(pattern.sha256()) == 32


def test_query_string_secrets_stay_out_of_the_patterns_urls():
    # pangeo-forge-recipes 0.10: OpenURLWithFSSpec(secrets=pattern.query_string_secrets) adds them.
    pattern = FilePattern(
        lambda time: f"https://example.org/{time}.nc?x=1",
        ConcatDim("time", [1]),
        query_string_secrets={"token": "abc"},
    )
    assert [u for _, u in pattern.items()] == ["https://example.org/1.nc?x=1"]
    assert pattern[next(iter(pattern))] == "https://example.org/1.nc?x=1"
    assert pattern.query_string_secrets == {"token": "abc"}


def test_a_pattern_without_combine_dimensions_is_one_file():
    pattern = FilePattern(lambda: "https://example.org/all.nc")
    assert list(pattern.items()) == [(Index(), "https://example.org/all.nc")]
    assert pattern.dims == {} and len(pattern) == 1 and pattern.combine_dim_keys == []


def test_pattern_from_file_sequence():
    pattern = pattern_from_file_sequence(["a.nc", "b.nc", "c.nc"], "time", nitems_per_file=2, file_type="netcdf3")
    assert [u for _, u in pattern.items()] == ["a.nc", "b.nc", "c.nc"]
    assert pattern.file_type == FileType.netcdf3
    assert pattern.concat_sequence_lens == {"time": 6}



def test_a_file_sequence_pattern_keeps_its_paths_packed_and_takes_any_path_like():
    import pathlib
    import tracemalloc

    paths = [f"/archive/sst/hourly/{i:07d}.nc" for i in range(20_000)]
    tracemalloc.start()
    # Paths made afresh (as from a listing), so that what the pattern holds is its own.
    pattern = pattern_from_file_sequence((f"/archive/sst/hourly/{i:07d}.nc" for i in range(20_000)), "time",
                                         nitems_per_file=1)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # ~30 bytes of path and 8 of offset each; a list of str and of int keys is ~130 bytes a path.
    assert held < 50 * len(paths), held
    assert [u for _, u in pattern.items()] == paths
    assert pattern.prune(2).shape == (2,)
    mixed = pattern_from_file_sequence([pathlib.Path("a.nc"), "b.nc"], "time")
    assert [u for _, u in mixed.items()] == [pathlib.Path("a.nc"), "b.nc"]

@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: FilePattern(make_url, ConcatDim("time", [])), "no keys"),
        (lambda: FilePattern(make_url, ConcatDim("t", [1]), ConcatDim("t", [2])), "unique"),
        (lambda: FilePattern(make_url, ConcatDim("time", [1]), file_type="netcdf5"), "netcdf5"),
        (lambda: ConcatDim("time", [1], nitems_per_file=0), "nitems_per_file"),
    ],
)
def test_bad_patterns_are_refused_clearly(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()
