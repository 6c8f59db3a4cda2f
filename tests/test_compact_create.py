"""A large beam.Create of pattern items runs as shards: the same elements, on a real Beam runner."""

from __future__ import annotations

import pickle

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from arcoforge import pattern_from_file_sequence
from arcoforge.beam.create import MIN_VALUES, CompactCreate, compact_creates
from arcoforge.runtime.runners import local_runner


def _items(n: int) -> list:
    return list(pattern_from_file_sequence([f"/data/f-{i:05d}.nc" for i in range(n)], "time", 1).items())


def test_an_index_pickles_small_and_equal():
    index, _ = _items(4)[3]
    again = pickle.loads(pickle.dumps(index))
    assert again == index and hash(again) == hash(index) and repr(again) == "Index(time=3)"
    assert len(pickle.dumps(index)) < 100  # 182 bytes as objects


def test_large_creates_become_compact_and_give_the_same_elements():
    items = _items(MIN_VALUES + 300)  # two shards and a part, over two worker processes
    pipeline = beam.Pipeline(runner=local_runner(2))
    large = pipeline | "Large" >> beam.Create(items)
    small = pipeline | "Small" >> beam.Create(items[:10])
    assert_that(large | "Index of large" >> beam.Map(lambda item: (item[0].sort_key(), item[1])),
                equal_to([(i.sort_key(), url) for i, url in items]), label="large")
    assert_that(small | beam.Map(lambda item: item[1]), equal_to([url for _, url in items[:10]]), label="small")
    compact_creates(pipeline)  # on the built pipeline, as `arcoforge bake` does
    kinds = {t.full_label: type(t.transform).__name__ for t in pipeline.transforms_stack[0].parts}
    assert kinds["Large"] == "CompactCreate" and kinds["Small"] == "Create"
    pipeline.run().wait_until_finish()


def test_compact_create_alone():
    with beam.Pipeline() as pipeline:
        assert_that(pipeline | CompactCreate(list(range(700))), equal_to(list(range(700))))
