"""A large beam.Create of pattern items runs as shards: the same elements, on a real Beam runner."""

from __future__ import annotations

import gc
import pickle

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from arcoforge import pattern_from_file_sequence
from arcoforge.beam.create import MIN_VALUES, CompactCreate, CompactValues, compact_creates
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


def _encoded_lists(n: int) -> list:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, list) and len(o) == n and isinstance(o[0], bytes)]


def test_replaced_creates_let_go_of_their_encoded_values():
    """Beam's Create encodes every value when applied; once replaced, nothing may keep that copy (issue 16)."""
    items = _items(MIN_VALUES + 123)  # a length no other test's Create has
    create = beam.Create(items)
    first = beam.Pipeline(runner=local_runner(1))
    _ = first | "Inputs" >> create
    assert len(_encoded_lists(len(items))) == 1  # Create.expand's copy, while the Create is in the pipeline
    compact_creates(first)
    assert _encoded_lists(len(items)) == []
    assert isinstance(create.values, CompactValues) and list(create.values) == items
    assert len(pickle.dumps(create.values)) < 40 * len(items)  # ~370 bytes an item as objects
    assert list(pickle.loads(pickle.dumps(create)).values) == items  # Beam pickles a Create value by value
    first.run().wait_until_finish()


def test_dataflow_checks_see_the_inputs_of_compact_creates():
    """A Dataflow bake refuses local inputs: the check must read them after the Creates are compact."""
    from arcoforge.bake import _pattern_inputs, _pattern_urls

    items = _items(MIN_VALUES + 1)
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(items)
    compact_creates(pipeline)
    assert _pattern_urls(pipeline) == [url for _, url in items]
    assert _pattern_inputs(pipeline) == len(items)


def test_a_recipe_chain_compacts_its_large_creates_before_they_are_applied():
    """No encoded copy is ever made; labels, the recipe's own Create, pruning and the elements are as before."""
    from apache_beam.transforms.ptransform import _ChainedPTransform

    from arcoforge.beam.create import compact_chain
    from arcoforge.feedstock import prune_pipeline

    items = _items(MIN_VALUES + 77)  # a length no other test's Create has
    create = beam.Create(items)
    recipe = create | beam.Map(lambda item: item[1]) | "Named" >> beam.Create(items[:3])
    compacted = compact_chain(recipe)
    assert isinstance(compacted, _ChainedPTransform) and compacted.label == recipe.label
    assert type(compacted._parts[0]) is CompactCreate and compacted._parts[0].label == "Create"
    assert type(compacted._parts[2].transform) is beam.Create  # small: left alone
    assert isinstance(create.values, CompactValues) and list(create.values) == items

    pipeline = beam.Pipeline(runner=local_runner(2))
    urls = pipeline | compact_chain(create | beam.Map(lambda item: item[1]))
    assert _encoded_lists(len(items)) == []
    assert_that(urls, equal_to([url for _, url in items]))
    pipeline.run().wait_until_finish()

    pruned = beam.Pipeline()
    _ = pruned | compact_chain(beam.Create(items))
    assert prune_pipeline(pruned, 2).kept == 2
