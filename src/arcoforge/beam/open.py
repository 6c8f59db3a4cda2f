"""Fetching and opening inputs: ``(index, url)`` -> ``(index, source)`` -> ``(index, Dataset)``.

With ``on_error="skip"`` an input that fails is a :class:`~arcoforge.skipping.SkippedInput`
record instead, and :class:`FillSkippedInputs` puts a placeholder of missing values in its place.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import xarray as xr

from ..compat.storage import apply_fsspec_sync_patch
from ..errors import InputError, describe_input
from ..io import (InputCache, RetryPolicy, concurrency_slots, public_url, redact, register_secrets, secret_values,
                  with_deadline)
from ..openers import open_with_xarray, prepare_input, resolve_cache
from ..patterns import FileType, Index
from ..runtime.context import BakeContext, resolve_context
from ..runtime.memory import limit_netcdf_chunk_cache
from ..skipping import (SkippedInput, check_on_error, gap_layout, outline, placeholder_dataset, report_skipped,
                        skipped_inputs_attrs)
from .common import count

logger = logging.getLogger(__name__)


def _prepare_or_skip(element: tuple[Index, str], settings: dict[str, Any], skip: bool,
                     progress_dir: str | None, sync_patch: bool = False) -> tuple[Index, Any]:
    """Fetch one input (see :func:`~arcoforge.openers.prepare_input`); with ``skip``, a failure is a record.

    ``sync_patch``: apply pangeo-forge's ``fsspec_sync_patch`` in this (worker) process first.
    """
    if sync_patch:
        apply_fsspec_sync_patch()
    index, url = element
    count("inputs_found")
    try:
        return index, prepare_input(url, index, **settings)
    except InputError as error:
        if not skip:
            raise
        record = SkippedInput(index, public_url(url), redact(str(error)), stage="fetch")
        report_skipped(record, progress_dir)
        count("inputs_skipped")
        return index, record


def _open_slot(index: Index, slots: int) -> int:
    """Which of ``slots`` sequential lanes an input is fetched in (stable across processes)."""
    return zlib.crc32(repr(index.sort_key()).encode()) % slots


def _open_or_skip(element: tuple[Index, Any], options: dict[str, Any], skip: bool,
                  progress_dir: str | None) -> tuple[Index, Any]:
    """Open one fetched input with xarray; with ``skip``, a failure (or an input not fetched) is a record."""
    index, source = element
    if isinstance(source, SkippedInput):
        if skip:
            return index, source
        raise InputError(f"{describe_input(index, source.url)}: {source.error}")
    limit_netcdf_chunk_cache()  # before any input is opened in this process (see rechunk)
    try:
        ds = open_with_xarray(source, index=index, **options)
    except InputError as error:
        if not skip:
            raise
        record = SkippedInput(index, getattr(source, "source_name", None) or str(source), redact(str(error)),
                              stage="open")
        report_skipped(record, progress_dir)
        count("inputs_skipped")
        return index, record
    count("inputs_opened")
    return index, ds


def _merge_key(index: Index) -> tuple:
    return tuple(p.value for d, p in sorted(index.items()) if d.operation.name == "MERGE")


def _earliest(items: Any) -> Any:
    return min(items, key=lambda item: item[0].sort_key())


def _placeholder(record: SkippedInput, templates: dict, outlines: list, skipped: list,
                 nitems_per_file: dict[str, int | None]) -> tuple[Index, xr.Dataset]:
    """Missing values in the place of a skipped input, shaped like an opened input of its merge group."""
    key = _merge_key(record.index)
    if key not in templates:
        raise InputError(f"{describe_input(record.index, record.url)} was to be skipped, but no input "
                         f"of its merge group {key} could be opened to stand in for its structure")
    layout = gap_layout(record.index, outlines, [r.index for r in skipped], nitems_per_file, record.url)
    logger.info("filling the place of %s with missing values (%s)", describe_input(record.index, record.url),
                ", ".join(f"{d}={n}" for d, n in layout.lengths.items()))
    return record.index, placeholder_dataset(templates[key][1], record.index, layout, record.url)


def _with_record(element: tuple[Index, xr.Dataset], skipped: list) -> tuple[Index, xr.Dataset]:
    index, ds = element
    ds = ds.copy()
    ds.attrs.update(skipped_inputs_attrs(skipped))
    return index, ds


@dataclass
class OpenURLWithFSSpec(beam.PTransform):
    """Turn each ``(index, url)`` into ``(index, source)`` that OpenWithXarray reads.

    Remote inputs (``http(s)://``, ``s3://``, any fsspec URL) and compressed ones
    (``.nc.gz``) are fetched once into a cache, checked (size, checksum, not an
    HTML page) and retried on transient failures; local files pass as paths.
    Values not given here come from the bake context (``arcoforge bake`` options).

    ``cache``: a folder (path or URL, or a
    :class:`~arcoforge.storage.CacheFSSpecTarget`) every worker can read, an
    :class:`~arcoforge.io.InputCache`, ``True`` for the runner's ``--cache-root``
    or else a folder of this machine's own, or ``False`` to read remote inputs
    over the network while they are used. ``None`` (the default) is
    pangeo-forge-recipes 0.10's "no cache", unless the bake context names a
    cache root (``arcoforge bake --cache-root``, as pangeo-forge-runner injects
    one). ``secrets`` are added to each URL's query string (pass
    ``pattern.query_string_secrets``); ``open_kwargs`` (a pattern's
    ``fsspec_open_kwargs``) are filesystem options and ``compression``.
    ``max_concurrency`` caps the inputs fetched at once, over all workers.
    ``fsspec_sync_patch`` applies pangeo-forge's synchronous-HTTP patch when
    ``httpfs_sync`` is installed (our reader is synchronous already).
    ``retries`` is a number of tries or a :class:`~arcoforge.io.RetryPolicy`.
    ``on_error="skip"`` goes on without inputs that fail (see :mod:`arcoforge.skipping`).

    Each output value works like the fsspec OpenFile pangeo-forge emits:
    ``with value as f:`` (or ``value.open()``) reads the input.
    """

    cache: str | InputCache | bool | None = None
    secrets: dict | None = None
    open_kwargs: dict | None = None
    max_concurrency: int | None = None
    fsspec_sync_patch: bool = False
    retries: int | RetryPolicy | None = None
    on_error: str | None = None
    context: BakeContext | None = None

    def _settings(self, context: BakeContext) -> dict[str, Any]:
        """What every fetch needs, resolved in the process that builds the pipeline."""
        source_options = context.source_storage_options
        # None: pangeo-forge's "no cache", True: our default one; the runner's --cache-root fills both.
        wanted = context.choose("cache_root", None if self.cache is True else self.cache, self.cache is True)
        cache = resolve_cache(wanted, context.storage_options)
        retries = context.choose("retries", self.retries)
        register_secrets(secret_values(source_options, [], (self.secrets or {}).values())
                         | secret_values(self.open_kwargs) | secret_values(context.storage_options))
        return dict(cache=cache if cache is not None else False, storage_options=source_options,
                    open_kwargs=self.open_kwargs, secrets=self.secrets,
                    max_concurrency=context.choose("max_concurrency", self.max_concurrency),
                    retry=with_deadline(RetryPolicy.of(retries), context.input_deadline))

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        context = resolve_context(self.context)
        settings = self._settings(context)
        lanes = settings["max_concurrency"]
        concurrency_slots(lanes)  # checks the value now rather than on a worker
        on_error = check_on_error(context.choose("on_error", self.on_error))
        prepare = dict(settings=settings, skip=on_error == "skip", progress_dir=context.progress_dir,
                       sync_patch=self.fsspec_sync_patch)
        if lanes:
            sources = (
                pcoll
                | "Assign fetch lanes" >> beam.Map(lambda element: (_open_slot(element[0], lanes), element))
                | "Group by lane" >> beam.GroupByKey()
                | "Open URLs" >> beam.FlatMap(lambda lane: [_prepare_or_skip(e, **prepare) for e in lane[1]])
            )
        else:
            sources = pcoll | "Open URLs" >> beam.Map(_prepare_or_skip, **prepare)
        return sources


@dataclass
class FillSkippedInputs(beam.PTransform):
    """Put placeholders of missing values in the places of skipped inputs, and record them on every dataset."""

    nitems_per_file: dict[str, int | None] | None = None

    def expand(self, opened: beam.PCollection) -> beam.PCollection:
        good = opened | "Opened" >> beam.Filter(lambda element: not isinstance(element[1], SkippedInput))
        skipped = (opened | "Skipped" >> beam.Filter(lambda element: isinstance(element[1], SkippedInput))
                   | "Skip records" >> beam.Values())
        outlines = good | "Outline inputs" >> beam.MapTuple(outline)
        templates = (good | "Key by merge group" >> beam.MapTuple(lambda i, ds: (_merge_key(i), (i, ds)))
                     | "One input per merge group" >> beam.CombinePerKey(_earliest))
        placeholders = skipped | "Placeholders" >> beam.Map(
            _placeholder, templates=beam.pvalue.AsDict(templates), outlines=beam.pvalue.AsList(outlines),
            skipped=beam.pvalue.AsList(skipped), nitems_per_file=dict(self.nitems_per_file or {}))
        return (
            (good, placeholders)
            | "Inputs and placeholders" >> beam.Flatten()
            | "Record skipped inputs" >> beam.Map(_with_record, skipped=beam.pvalue.AsList(skipped))
        )


@dataclass
class OpenWithXarray(beam.PTransform):
    """Open each ``(index, source)`` as ``(index, xarray.Dataset)``, lazily unless ``load``.

    With ``on_error="skip"`` (here, on OpenURLWithFSSpec, or from the bake
    context) an input that fails is replaced by a placeholder of missing values,
    and every dataset records the skipped inputs in its
    ``arcoforge_skipped_inputs`` attribute (see :mod:`arcoforge.skipping`).
    ``nitems_per_file`` (as in ``ConcatDim``) tells a skipped input's length when
    its neighbours cannot.
    """

    file_type: FileType | str = FileType.unknown
    load: bool = False
    copy_to_local: bool = False
    xarray_open_kwargs: dict | None = field(default_factory=dict)
    on_error: str | None = None
    nitems_per_file: dict[str, int | None] | None = None
    context: BakeContext | None = None

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        context = resolve_context(self.context)
        on_error = check_on_error(context.choose("on_error", self.on_error))
        options = dict(file_type=self.file_type, load=self.load, copy_to_local=self.copy_to_local,
                       xarray_open_kwargs=self.xarray_open_kwargs)
        opened = pcoll | "Open with xarray" >> beam.Map(
            _open_or_skip, options=options, skip=on_error == "skip", progress_dir=context.progress_dir)
        if on_error != "skip":
            return opened
        return opened | "Fill skipped inputs" >> FillSkippedInputs(self.nitems_per_file)
