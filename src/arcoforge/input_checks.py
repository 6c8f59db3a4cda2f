"""Checks of the inputs against each other, run when the store is planned, before anything is written.

Real archives hold mistakes that still combine into *a* dataset: a file given
twice (a timestamp repeated), files out of order (time going backwards), one
file whose variable was written with another dtype (the whole variable would
be widened silently), an attribute of megabytes (it would land in the store's
root metadata, read by every client). The first three stop the bake with one
line naming the file, its pattern index, the variable and what was expected;
oversized attributes are dropped with a warning naming the file and attribute.

Only *time-like* concat coordinates (decoded datetimes or cftime values) must
strictly increase: other coordinates along a concat dimension may repeat on
purpose (NEMO's ``time_counter`` is 0 in every monthly file; its time is
``time_centered``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import SchemaError
from .patterns import CombineOp, Dimension
from .schema_parts import InputSchema
from .schema_pool import SchemaPool, first_rows

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTR_BYTES = 64 * 2**10


def check_inputs(schemas: SchemaPool | Iterable[InputSchema], combine_dims: Sequence[Dimension],
                 encoding: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Every check of this module that needs all inputs; raises :class:`SchemaError` on the first problem.

    ``schemas`` is a :class:`~arcoforge.schema_pool.SchemaPool` (read by column) or any iterable of schemas.
    """
    pool = SchemaPool.of(schemas)
    check_dtypes(pool, encoding)
    for dim in combine_dims:
        if dim.operation == CombineOp.CONCAT:
            check_time_increases(pool, dim.name)


def check_dtypes(schemas: SchemaPool | Iterable[InputSchema],
                 encoding: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Refuse a numeric variable whose decoded dtype differs between inputs.

    Unless the recipe chose the store's dtype for it
    (``StoreToZarr(encoding={name: {"dtype": ...}})``): then the values are
    combined in the widest dtype and written in the chosen one. Each distinct
    set of variables is looked at once, as the first input (in pattern order) holding it.
    """
    pool = SchemaPool.of(schemas)
    chosen = {name for name, keys in (encoding or {}).items() if "dtype" in keys}
    first: dict[str, int] = {}
    for row in first_rows(pool.variables_ids(), pool.order()).tolist():
        for name, variable in pool.variables(row).items():
            if name in chosen or variable.dtype.kind not in "biufc":
                continue
            reference = first.setdefault(name, row)
            expected = pool.variables(reference)[name].dtype
            if variable.dtype != expected and expected.kind in "biufc":
                raise SchemaError(
                    f"{pool.name(row)}: variable {name!r} has dtype {variable.dtype}, expected {expected} as in "
                    f"{pool.name(reference)}; to combine them, choose the store's dtype with "
                    f"StoreToZarr(encoding={{{name!r}: {{'dtype': ...}}}})"
                )


def _positions(dim: str, pool: SchemaPool) -> list[int]:
    """One input (row) per position along ``dim`` (the first of each merge group), in order."""
    order = pool.order()
    _, first = np.unique(pool.positions(dim)[order], return_index=True)
    return order[first].tolist()


def _present(values: np.ndarray) -> np.ndarray:
    """Indices of the values that are times (NaT and missing cftime values are not compared)."""
    if values.dtype.kind in "mM":
        return np.flatnonzero(~np.isnat(values))
    return np.array([i for i, v in enumerate(values) if v is not None and v == v], dtype=int)


def check_time_increases(schemas: SchemaPool | Iterable[InputSchema], dim: str) -> None:
    """Refuse a time-like coordinate along concat dimension ``dim`` that repeats or goes back.

    Walks the inputs in pattern order and names the first input holding a value
    not after the one before it (in the same input or the previous one).
    """
    pool = SchemaPool.of(schemas)
    previous: tuple[Any, int] | None = None
    for row in _positions(dim, pool):
        variable = pool.variables(row).get(dim)
        values = pool.concat_coords(row).get(dim)
        if variable is None or not variable.is_time_like or values is None:
            return  # not a time axis: values along it may repeat on purpose
        values = np.asarray(values)
        kept = _present(values)
        try:
            for i in kept:
                value = values[i]
                if previous is not None and not value > previous[0]:
                    before, where = previous
                    origin = "" if where == row else f" (the last value of {pool.name(where)})"
                    what = "repeats" if value == before else "goes back to"
                    raise SchemaError(
                        f"{pool.name(row)}: time coordinate {dim!r} {what} {value} at item {i}, expected a time "
                        f"after {before}{origin}; inputs must follow each other in time, without overlap"
                    )
                previous = (value, row)
        except TypeError:  # times of different calendars: combine_schemas names the calendars
            return


def attr_size(value: Any) -> int:
    """About how many bytes an attribute value takes in the store's JSON metadata."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "replace"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes) if value.dtype.kind != "O" else sum(attr_size(v) for v in value.ravel())
    if isinstance(value, (list, tuple)):
        return sum(attr_size(v) for v in value)
    return len(repr(value))


def _small(attrs: Mapping[str, Any], max_bytes: int, what: str) -> dict[str, Any]:
    kept = {}
    for key, value in attrs.items():
        size = attr_size(value)
        if size > max_bytes:
            logger.warning("%s: attribute %r (%d bytes) is larger than max_attr_bytes=%d and is dropped",
                           what, key, size, max_bytes)
            continue
        kept[key] = value
    return kept


def drop_large_attrs(schema: InputSchema, max_bytes: int | None = DEFAULT_MAX_ATTR_BYTES) -> InputSchema:
    """The input's schema without global or variable attributes larger than ``max_bytes`` (None: keep all)."""
    if max_bytes is None:
        return schema
    variables = {
        name: dataclasses.replace(variable, attrs=_small(variable.attrs, max_bytes, f"{schema.name}, variable {name!r}"))
        for name, variable in schema.variables.items()
    }
    return dataclasses.replace(schema, variables=variables, attrs=_small(schema.attrs, max_bytes, schema.name))
