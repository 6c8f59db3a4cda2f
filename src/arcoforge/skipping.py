"""Going on without bad inputs: records of what was skipped, and stand-ins that fill their places.

With ``on_error="skip"`` an input that cannot be fetched or opened (after
retries) is not fatal. It becomes a :class:`SkippedInput` record (pattern
index, public URL, error text with secrets removed), logged as a warning and
recorded as a progress event for the run summary. OpenWithXarray then puts a
*placeholder* in its place: a dataset with the structure of a good input of the
same merge group, whose data variables are all missing values (read lazily,
so nothing is allocated until a write task reads them) and whose concat
coordinate continues the neighbours' regular spacing. Every dataset then
carries the global attribute :data:`SKIPPED_ATTR`, a JSON list of the records,
so the store records them with no change to StoreToZarr.

A placeholder needs the skipped input's length along each concat dimension:
``nitems_per_file`` when given, else inferred when the input sits between two
good ones on a regularly spaced coordinate. Otherwise the skip is refused with
an error saying what is missing: guessing a length would shift every later
input. Everything here is plain Python (no Beam), so it is tested without it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from .errors import InputError, describe_input
from .patterns import CombineOp, Index

logger = logging.getLogger(__name__)

# Global attribute of the store listing the inputs skipped (a JSON list; "[]" when none were).
SKIPPED_ATTR = "arcoforge_skipped_inputs"
ON_ERROR_CHOICES = ("raise", "skip")


def check_on_error(value: str | None) -> str:
    """``value`` if it is a known ``on_error`` choice (``None`` means ``"raise"``)."""
    from .errors import RecipeError

    value = value or "raise"
    if value not in ON_ERROR_CHOICES:
        raise RecipeError(f"on_error must be one of {ON_ERROR_CHOICES}, got {value!r}")
    return value


@dataclass(frozen=True)
class SkippedInput:
    """An input left out of a bake: where it sits, its public URL, and why (secrets removed)."""

    index: Index
    url: str | None
    error: str
    stage: str = "open"  # "fetch" (OpenURLWithFSSpec) or "open" (OpenWithXarray)

    def record(self) -> dict[str, Any]:
        """The JSON record kept in the store's attributes and the run summary."""
        return {"index": self.index.positions(), "url": self.url, "error": self.error, "stage": self.stage}


def skipped_inputs_attrs(records: Iterable[SkippedInput]) -> dict[str, str]:
    """The global attribute recording skipped inputs, in pattern order.

    >>> from arcoforge.patterns import Dimension, Position
    >>> index = Index({Dimension("time", CombineOp.CONCAT): Position(3)})
    >>> skipped_inputs_attrs([SkippedInput(index, "https://h/d3.nc", "HTTP 404")])
    {'arcoforge_skipped_inputs': '[{"index": {"time": 3}, "url": "https://h/d3.nc", "error": "HTTP 404", "stage": "open"}]'}
    """
    ordered = sorted(records, key=lambda r: r.index.sort_key())
    return {SKIPPED_ATTR: json.dumps([r.record() for r in ordered])}


def read_skipped_inputs(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The skipped-input records of a store's global attributes (``[]`` when there are none)."""
    value = attrs.get(SKIPPED_ATTR)
    return json.loads(value) if isinstance(value, str) else []


def report_skipped(record: SkippedInput, progress_dir: str | None = None) -> None:
    """Say that an input is skipped: a warning, and an event for the run summary."""
    from .runtime.progress import record_event

    where = describe_input(record.index, record.url)
    logger.warning("skipping an input: %s", record.error if where in record.error else f"{where}: {record.error}")
    record_event(progress_dir, "skipped", index=repr(record.index), positions=record.index.positions(),
                 url=record.url, error=record.error, stage=record.stage)


# ---------------------------------------------------------------------------------------------
# Where a skipped input's values go


@dataclass(frozen=True)
class InputOutline:
    """What gap filling needs to know of a good input: lengths and the ends of its concat coordinates."""

    index: Index
    lengths: dict[str, int]
    # per concat dimension with a 1-D coordinate: its first two and last two values
    heads: dict[str, np.ndarray]
    tails: dict[str, np.ndarray]


def outline(index: Index, ds: xr.Dataset) -> InputOutline:
    """The :class:`InputOutline` of an opened input (reads only the ends of its concat coordinates)."""
    lengths, heads, tails = {}, {}, {}
    for dim in index:
        if dim.operation != CombineOp.CONCAT:
            continue
        lengths[dim.name] = int(ds.sizes.get(dim.name, 0))
        if dim.name in ds.variables and ds[dim.name].dims == (dim.name,):
            heads[dim.name] = np.asarray(ds[dim.name][:2].values)
            tails[dim.name] = np.asarray(ds[dim.name][-2:].values)
    return InputOutline(index=index, lengths=lengths, heads=heads, tails=tails)


def _line_key(index: Index, dim: str) -> tuple:
    """Positions of an index along every dimension but ``dim``: inputs on one line along ``dim``."""
    return tuple((d.name, p.value) for d, p in sorted(index.items()) if d.name != dim)


def _common_step(steps: Sequence[Any]) -> Any | None:
    """The one step all ``steps`` equal (floats to rounding), or None when they differ or are zero."""
    if not steps:
        return None
    first = steps[0]
    for step in steps[1:]:
        if isinstance(first, (float, np.floating)):
            if not np.isclose(float(step), float(first), rtol=1e-9, atol=0):
                return None
        elif step != first:
            return None
    ratio = _ratio(first, first)
    return first if ratio is not None and _ratio(first * 0, first) == 0 else None


def _ratio(span: Any, step: Any) -> float | None:
    try:
        if isinstance(span, np.timedelta64) or isinstance(step, np.timedelta64):
            return float(np.timedelta64(span) / np.timedelta64(step))
        if hasattr(span, "total_seconds"):
            return span.total_seconds() / step.total_seconds()
        return float(span) / float(step)
    except (TypeError, ZeroDivisionError, ValueError):
        return None


@dataclass(frozen=True)
class GapLayout:
    """Where a skipped input sits: its length and concat coordinate values along each concat dimension."""

    lengths: dict[str, int]
    coords: dict[str, np.ndarray]


def gap_layout(
    index: Index,
    known: Sequence[InputOutline],
    skipped: Iterable[Index],
    nitems_per_file: Mapping[str, int | None] | None = None,
    name: str | None = None,
) -> GapLayout:
    """The length and coordinate values a skipped input would have had, from its good neighbours.

    The length is ``nitems_per_file`` when given; otherwise, for an input
    between two good ones on a regularly spaced coordinate, the number of
    steps between them (split evenly when several neighbours in a row were
    skipped and every good input has one length). Coordinates continue the
    regular spacing from the nearest good neighbour; on an irregular axis they
    are missing values (NaT/NaN) and a warning says so. Raises
    :class:`InputError` when the length cannot be known.
    """
    nitems_per_file = dict(nitems_per_file or {})
    skipped_set = set(skipped)
    where = describe_input(index, name)
    lengths: dict[str, int] = {}
    coords: dict[str, np.ndarray] = {}
    for dim in sorted(index):
        if dim.operation != CombineOp.CONCAT:
            continue
        position = index[dim].value
        line = sorted((o for o in known if _line_key(o.index, dim.name) == _line_key(index, dim.name)),
                      key=lambda o: o.index.find_position(dim.name).value)
        before = [o for o in line if o.index.find_position(dim.name).value < position]
        after = [o for o in line if o.index.find_position(dim.name).value > position]
        left, right = (before[-1] if before else None), (after[0] if after else None)
        step = _axis_step(line, dim.name)
        length = nitems_per_file.get(dim.name)
        if length is None:
            length = _length_between(left, right, dim.name, step, position, skipped_set, line)
        if length is None:
            raise InputError(
                f"{where} was to be skipped, but its length along {dim.name!r} cannot be known "
                f"(it is not between two good inputs on an evenly spaced {dim.name!r}); "
                f"give ConcatDim(..., nitems_per_file=N) to OpenWithXarray(nitems_per_file=...) "
                f"or fix the input"
            )
        lengths[dim.name] = int(length)
        # Inputs skipped between a neighbour and this one have this length too (given, or inferred as uniform).
        values = _gap_coordinate(left, right, dim.name, step, position, int(length), line)
        if values is not None:
            coords[dim.name] = values
    return GapLayout(lengths=lengths, coords=coords)


def _axis_step(line: Sequence[InputOutline], dim: str) -> Any | None:
    """The spacing of ``dim`` if every good input and every join between neighbours agree on it."""
    steps = []
    for o in line:
        if dim not in o.heads:
            return None
        if o.lengths[dim] >= 2:
            steps += [o.heads[dim][1] - o.heads[dim][0], o.tails[dim][-1] - o.tails[dim][-2]]
    for a, b in zip(line[:-1], line[1:]):
        if b.index.find_position(dim).value == a.index.find_position(dim).value + 1:
            steps.append(b.heads[dim][0] - a.tails[dim][-1])
    return _common_step(steps)


def _length_between(left, right, dim, step, position, skipped, line) -> int | None:
    if left is None or right is None or step is None:
        return None
    span = _ratio(right.heads[dim][0] - left.tails[dim][-1], step)
    if span is None or abs(span - round(span)) > 1e-6:
        return None
    missing_steps = int(round(span)) - 1
    lo, hi = left.index.find_position(dim).value, right.index.find_position(dim).value
    n_missing = hi - lo - 1
    if n_missing == 1:
        return missing_steps if missing_steps >= 1 else None
    lengths = {o.lengths[dim] for o in line}
    if len(lengths) == 1 and missing_steps == n_missing * next(iter(lengths)):
        return next(iter(lengths))
    return None


def _gap_coordinate(left, right, dim, step, position, length, line) -> np.ndarray | None:
    """Coordinate values of a gap: continued from the nearest neighbour, else missing values."""
    reference = left or right
    if reference is None or dim not in reference.heads:
        return None
    sample = reference.heads[dim]
    if step is not None:  # continue the spacing from the nearest good neighbour
        if left is not None:
            offset = _steps_between(left, position, dim, length, from_left=True)
            start = left.tails[dim][-1]
            return np.array([start + step * (offset + 1 + k) for k in range(length)], dtype=sample.dtype)
        offset = _steps_between(right, position, dim, length, from_left=False)
        start = right.heads[dim][0]
        return np.array([start - step * (offset + length - k) for k in range(length)], dtype=sample.dtype)
    if sample.dtype.kind in "mM":
        fill = np.array(["NaT"] * length, dtype=sample.dtype)
    elif sample.dtype.kind in "fc":
        fill = np.full(length, np.nan, dtype=sample.dtype)
    else:
        raise InputError(
            f"the {dim!r} values of a skipped input at position {position} cannot be inferred "
            f"(the axis is not evenly spaced) and {sample.dtype} has no missing value; fix the input"
        )
    logger.warning("the %r values of the skipped input at position %d are unknown (uneven spacing); "
                   "they are stored as missing values", dim, position)
    return fill


def _steps_between(neighbour, position, dim, length, from_left: bool) -> int:
    """Elements between the neighbour and the gap: the inputs skipped in between, each ``length`` long."""
    start = neighbour.index.find_position(dim).value
    between = range(start + 1, position) if from_left else range(position + 1, start)
    return length * len(between)


# ---------------------------------------------------------------------------------------------
# Placeholders


class MissingValues(BackendArray):
    """A lazily read array of one fill value: what a placeholder's variables hold."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, fill: Any):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.fill = fill

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        shape = np.empty(self.shape, dtype=bool)[key].shape  # no data: a view of nothing, for its shape
        return np.full(shape, self.fill, dtype=self.dtype)


def missing_value(variable: xr.Variable) -> Any:
    """The decoded value that stands for "missing" in a variable of this dtype and encoding."""
    kind = variable.dtype.kind
    if kind in "fc":
        return np.nan
    if kind in "mM":
        return np.array("NaT", dtype=variable.dtype)
    fill = variable.encoding.get("_FillValue", variable.encoding.get("missing_value"))
    if fill is not None and kind in "biu":
        return fill
    return None


def placeholder_dataset(template: xr.Dataset, index: Index, layout: GapLayout, name: str | None = None) -> xr.Dataset:
    """A dataset shaped like ``template`` but sized by ``layout``, holding only missing values.

    Variables without concat dimensions are taken from the template as they
    are (they are written from the first input anyway). A variable that has no
    missing value (integers without ``_FillValue``, strings, cftime objects)
    cannot be filled: that is an :class:`InputError` naming it.
    """
    variables = {}
    for var_name, variable in template.variables.items():
        concat = [d for d in variable.dims if d in layout.lengths]
        if not concat:
            variables[var_name] = variable
            continue
        if var_name in layout.coords and variable.dims == (var_name,):
            data: Any = layout.coords[var_name]
        else:
            fill = missing_value(variable)
            if fill is None:
                raise InputError(
                    f"{describe_input(index, name)} was to be skipped, but variable {var_name!r} "
                    f"({variable.dtype}, no _FillValue) has no missing value to fill its place with"
                )
            shape = tuple(layout.lengths.get(d, s) for d, s in zip(variable.dims, variable.shape))
            data = indexing.LazilyIndexedArray(MissingValues(shape, variable.dtype, fill))
        variables[var_name] = xr.Variable(variable.dims, data, attrs=dict(variable.attrs),
                                          encoding=dict(variable.encoding))
    ds = xr.Dataset(variables, attrs=dict(template.attrs))
    ds = ds.set_coords([n for n in template.coords if n in ds.variables])
    ds.encoding["source"] = name
    return ds
