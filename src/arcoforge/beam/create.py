"""``beam.Create`` of many inputs, without the runner holding every one of them several times.

A recipe starts with ``beam.Create(pattern.items())``. Beam's Create encodes
every value into the pipeline and then reshuffles them, one element each, so
that inputs spread over workers: Beam's local runner holds the encoded values in
the pipeline, in the stage that emits them and in the reshuffle's buffers.
Measured with 10k and 40k pattern items on the local runner with two workers,
that cost the runner process 3.1 kB per input (1.8 kB once an index pickles
compactly) — most of what a bake of 10^5 inputs grew by in that process.

:class:`CompactCreate` produces the same elements from the same values, in the
same order within each shard: values travel compressed in shards of
:data:`VALUES_PER_SHARD`, and what is reshuffled is the shard numbers, so
workers still share the inputs while the runner holds a few bytes per shard.
:func:`compact_chain` puts it in place of each large ``beam.Create`` of a
recipe's chain before it is applied, and :func:`compact_creates` of those left
in a built pipeline (``arcoforge bake`` does both); smaller ones are left as they are.
The replaced Create keeps its values as :class:`CompactValues`, and the steps
Beam expanded it into, which held every value encoded, are let go: the bake
process then holds a few bytes per input rather than ~0.6 kB.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.pipeline import PTransformOverride

# A Create with fewer values than this is left alone: its cost does not matter.
MIN_VALUES = 1024
VALUES_PER_SHARD = 256


class CompactValues(Sequence[Any]):
    """A Create's values held as zlib-compressed pickles of :data:`VALUES_PER_SHARD` values each.

    A sequence of the same values in the same order, a few bytes a value rather
    than Python objects (an ``(Index, url)`` item is ~370 bytes as objects, ~15
    in a shard); a value is decoded when it is read.

    >>> values = CompactValues(range(1000))
    >>> len(values), values[999], list(values[254:258]), sum(values) == sum(range(1000))
    (1000, 999, [254, 255, 256, 257], True)
    """

    def __init__(self, values: Sequence[Any]):
        values = list(values)
        self.shards: tuple[bytes, ...] = tuple(
            zlib.compress(pickle.dumps(values[i:i + VALUES_PER_SHARD], protocol=5), 6)
            for i in range(0, len(values), VALUES_PER_SHARD))
        self._length = len(values)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Any]:
        for number in range(len(self.shards)):
            yield from _values_of_shard(number, self.shards)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(self._length))]
        position = range(self._length)[item]  # negative positions, and IndexError beyond the end
        shard = pickle.loads(zlib.decompress(self.shards[position // VALUES_PER_SHARD]))
        return shard[position % VALUES_PER_SHARD]


def _values_of_shard(number: int, shards: Sequence[bytes]) -> Iterator[Any]:
    yield from pickle.loads(zlib.decompress(shards[number]))


class CompactCreate(beam.PTransform):
    """The elements of ``beam.Create(values)``, spread over workers in shards rather than one by one."""

    def __init__(self, values: Sequence[Any]):
        super().__init__()
        self.values = values if isinstance(values, CompactValues) else CompactValues(values)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        shards = self.values.shards
        output_type = beam.Create(self.values[:VALUES_PER_SHARD]).get_output_type()
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "Shard numbers" >> beam.FlatMap(lambda _, n: range(n), len(shards))
                | "Spread shards" >> beam.Reshuffle()
                | "Values" >> beam.FlatMap(_values_of_shard, shards=shards).with_output_types(output_type))


def compact_chain(recipe: Any) -> Any:
    """``recipe`` (a chain of steps) with each large ``beam.Create`` in it a :class:`CompactCreate`, before it is applied.

    Beam's Create encodes every value when it is applied; done after, the
    replacement leaves that heap behind. Measured with 100,000 inputs: the bake
    process starts running at 291 MB rather than 312 (290 at 10,000 inputs).
    The recipe's own Create keeps its values compacted, and its label. A Create
    nested in a composite step is left to :func:`compact_creates`.
    """
    from apache_beam.transforms.ptransform import _ChainedPTransform, _NamedPTransform

    if isinstance(recipe, _ChainedPTransform):
        return _ChainedPTransform(*(compact_chain(part) for part in recipe._parts))
    if isinstance(recipe, _NamedPTransform):
        return _NamedPTransform(compact_chain(recipe.transform), recipe.label)
    if _is_large_create(recipe):
        recipe.values = CompactValues(recipe.values)
        compact = CompactCreate(recipe.values)
        compact.label = recipe.label
        return compact
    return recipe


def _is_large_create(transform: Any) -> bool:
    return type(transform) is beam.Create and transform.reshuffle and len(transform.values) >= MIN_VALUES


class _CompactCreates(PTransformOverride):
    def __init__(self) -> None:
        self.replaced: list[Any] = []

    def matches(self, applied: Any) -> bool:
        return _is_large_create(applied.transform)

    def get_replacement_transform_for_applied_ptransform(self, applied: Any) -> beam.PTransform:
        values = CompactValues(applied.transform.values)
        # The recipe's Create keeps the same values, compressed: the recipe object holds
        # them for as long as the bake runs, and a Create reused later sees what it had.
        applied.transform.values = values
        self.replaced.append(applied)
        return CompactCreate(values)


def compact_creates(pipeline: beam.Pipeline) -> None:
    """Put a :class:`CompactCreate` in place of each ``beam.Create`` of at least :data:`MIN_VALUES` values.

    It works on the built pipeline, wherever a Create sits (also inside composite
    transforms); call it once the pipeline is built (and pruned), before running.
    The replaced steps let go of their expansion, which held every value encoded
    (Beam's Create encodes them when it is applied).
    """
    override = _CompactCreates()
    pipeline.replace_all([override])
    for applied in override.replaced:
        _let_go_of_expansion(applied)


def _let_go_of_expansion(applied: Any) -> None:
    """Detach the steps a replaced Create expanded into: their DoFns' closures hold its values, encoded.

    They are out of the pipeline, but its old output (which a recipe may hold)
    still names them as its producer.
    """
    for part in applied.parts:
        _let_go_of_expansion(part)
        part.transform = None
    applied.parts = []
