"""Fused stages for the Dask runner: ParDos that can share a partition run as one dask task.

Beam's runners fuse consecutive ParDos into a stage that passes each element
straight from one DoFn to the next, so an opened input goes to every step that
reads it and is dropped, instead of waiting in a list between steps. The Dask
runner does the same: :func:`plan_stages` groups ParDos into stages — a ParDo
joins the stage of its main input (its producer's, or another ParDo reading the
same PCollection) unless one of its side inputs depends on that stage — and
:func:`run_stage` runs a stage over one partition, element by element, keeping
only the outputs read outside the stage.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform
from apache_beam.runners.common import Receiver
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from .progress import flush_dask_events


def windowed(value: Any) -> WindowedValue:
    return WindowedValue(value, 0, (GlobalWindow(),))


@dataclass
class FusedStage:
    """ParDos run together over the partitions of ``source``; ``parents[k]`` feeds ``nodes[k]``.

    A parent is ``(index of the node in the stage, output tag)``, or ``None`` for the source.
    """

    number: int
    source: pvalue.PCollection
    nodes: list[AppliedPTransform] = field(default_factory=list)
    parents: list[tuple[int, Any] | None] = field(default_factory=list)

    def exports(self, consumers: collections.Counter) -> list[tuple[int, Any]]:
        """``(node index, tag)`` of each output read outside the stage, or by nothing (a leaf)."""
        inside = collections.Counter(parent for parent in self.parents if parent is not None)
        return [(number, tag) for number, node in enumerate(self.nodes) for tag, output in node.outputs.items()
                if consumers[id(output)] == 0 or consumers[id(output)] > inside[number, tag]]


def plan_stages(nodes: Sequence[AppliedPTransform]) -> dict[int, tuple[FusedStage, int, Any]]:
    """For each ParDo output (by ``id``): its stage, the producing node's index in it, and its tag.

    ``nodes`` are a pipeline's primitive transforms in topological order. A ParDo
    joins a stage only if none of its side inputs is computed from that stage, even
    through other stages: a stage's task waits for the side inputs of all its ParDos.
    """
    depends: dict[int, frozenset[int]] = {}  # PCollection id -> the stages it is computed from directly
    stage_depends: list[set[int]] = []  # stage number -> the stages its side inputs and source come from
    produced: dict[int, tuple[FusedStage, int, Any]] = {}
    rooted: dict[int, FusedStage] = {}  # PCollection id -> a stage reading it as its source

    def closure(numbers: Iterable[int]) -> set[int]:
        seen, todo = set(), list(numbers)
        while todo:
            number = todo.pop()
            if number not in seen:
                seen.add(number)
                todo.extend(stage_depends[number])
        return seen

    for node in nodes:
        mains = [value for value in node.main_inputs.values() if isinstance(value, pvalue.PCollection)]
        side_depends = frozenset().union(*(depends.get(id(side.pvalue), ()) for side in node.side_inputs))
        upstream = side_depends.union(*(depends.get(id(value), ()) for value in mains))
        if type(node.transform) is not beam.ParDo:
            for output in node.outputs.values():
                depends[id(output)] = upstream
            continue
        main = mains[0]
        candidates = ([(produced[id(main)][0], produced[id(main)][1:])] if id(main) in produced else []) + (
            [(rooted[id(main)], None)] if id(main) in rooted else [])
        waits_for = closure(side_depends)
        stage, parent = next(((stage, parent) for stage, parent in candidates if stage.number not in waits_for),
                             (None, None))
        if stage is None:
            stage = rooted[id(main)] = FusedStage(len(stage_depends), main)
            stage_depends.append(set(depends.get(id(main), ())))
        stage_depends[stage.number] |= upstream - {stage.number}
        stage.nodes.append(node)
        stage.parents.append(parent)
        for tag, output in node.outputs.items():
            produced[id(output)] = (stage, len(stage.nodes) - 1, tag)
            depends[id(output)] = frozenset({stage.number})
    return produced


class _Deliver(Receiver):
    """A receiver handing each output to the DoFns that read it and, if read outside, to a list."""

    def __init__(self, invokers: list, sink: list | None):
        self.invokers = invokers
        self.sink = sink

    def receive(self, windowed_value: WindowedValue) -> None:
        for invoker in self.invokers:
            invoker.invoke_process(windowed_value)
        if self.sink is not None:
            self.sink.append(windowed_value.value)


class _Discard(dict):
    """Receivers of tags nothing reads."""

    def __missing__(self, tag: Any) -> Receiver:
        receiver = self[tag] = _Deliver([], None)
        return receiver


def _invoker(spec: dict[str, Any], side_values: Sequence[list], receivers: _Discard) -> Any:
    """A Beam invoker of one DoFn, its outputs going to ``receivers`` by tag (``None``: the main one)."""
    from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
    from apache_beam.transforms.sideinputs import SideInputMap

    handler = _OutputHandler(
        window_fn=GlobalWindows(),
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    side_inputs = [
        SideInputMap(view_class, view_options, [windowed(v) for v in values])
        for (view_class, view_options), values in zip(spec["side_views"], side_values)
    ]
    return DoFnInvoker.create_invoker(
        DoFnSignature(spec["fn"]),
        handler,
        context=DoFnContext(spec["label"], state=None),
        side_inputs=side_inputs,
        input_args=list(spec["args"]),
        input_kwargs=dict(spec["kwargs"]),
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )


def stage_spec(node: AppliedPTransform) -> dict[str, Any]:
    """What a worker needs to run one ParDo of a stage."""
    args, kwargs = node.transform.raw_side_inputs
    return {"fn": node.transform.fn, "args": args, "kwargs": kwargs, "label": node.full_label,
            "side_views": [(type(side), side._view_options()) for side in node.side_inputs]}


def run_stage(items: Iterable[Any], layout: Sequence[tuple[dict, tuple[int, Any] | None]],
              exports: Sequence[tuple[int, Any]], *side_values: list) -> tuple[list, ...]:
    """Run a stage's DoFns over one partition; returns one list per ``exports`` entry.

    ``layout`` is ``(spec, parent)`` per DoFn, parents first; ``side_values`` holds every
    DoFn's side inputs in layout order. Each element goes down the stage as it is
    emitted; ``finish_bundle`` runs parents first, so what it emits still flows on.
    Everything mutable is made here, per call, so a task run twice gives the same result.
    """
    sinks = {export: [] for export in exports}
    ends = list(itertools.accumulate(len(spec["side_views"]) for spec, _ in layout))
    invokers: list[Any] = [None] * len(layout)
    for number in reversed(range(len(layout))):
        spec, _ = layout[number]
        receivers = _Discard()
        for tag in {tag for (k, tag) in sinks if k == number} | {parent[1] for _, parent in layout
                                                              if parent is not None and parent[0] == number}:
            children = [invokers[k] for k, (_, parent) in enumerate(layout) if parent == (number, tag)]
            receivers[tag] = _Deliver(children, sinks.get((number, tag)))
        sides = side_values[ends[number] - len(spec["side_views"]):ends[number]]
        invokers[number] = _invoker(spec, sides, receivers)
    for invoker in invokers:
        invoker.invoke_setup()
        invoker.invoke_start_bundle()
    roots = [invokers[k] for k, (_, parent) in enumerate(layout) if parent is None]
    for item in items:
        value = windowed(item)
        for root in roots:
            root.invoke_process(value)
    for invoker in invokers:
        invoker.invoke_finish_bundle()
    for invoker in invokers:
        invoker.invoke_teardown()
    flush_dask_events()  # the task's progress reaches the scheduler before the task ends
    return tuple(sinks[export] for export in exports)


def exported(stage_outputs: tuple[list, ...], position: int) -> list:
    """One exported output of a stage's partition."""
    return stage_outputs[position]
