"""The schema of a dataset: what each input holds, and how all inputs combine.

:func:`input_schema` reads the structure of one opened input (no array data
apart from the concat coordinates). :func:`combine_schemas` checks every input
against the others and produces the :class:`DatasetSchema` of the store: sizes,
offsets of each input along the concat dimensions, the full concat coordinates,
and one CF encoding per variable that every input's values can be written with.
All of it is plain Python, so it is tested without Beam.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .errors import SchemaError, describe_input
from .patterns import CombineOp, Dimension, Index
from .schema_parts import DatasetSchema, InputSchema, VariableSchema
from .schema_pool import SchemaPool, first_rows

__all__ = ["DatasetSchema", "InputSchema", "SchemaPool", "VariableSchema", "combine_schemas", "input_schema",
           "schema_as_dataset"]

logger = logging.getLogger(__name__)

# Encoding keys that describe values (CF), as opposed to how an input file stored them.
CF_ENCODING_KEYS = ("units", "calendar", "dtype", "_FillValue", "missing_value", "scale_factor", "add_offset")
PACKING_KEYS = ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned")
# What is read of an input's encoding: the CF keys, and netCDF-3's ``_Unsigned`` (see arcoforge.packing).
SOURCE_ENCODING_KEYS = CF_ENCODING_KEYS + ("_Unsigned",)


def _same(a: Any, b: Any) -> bool:
    """Equality for attribute and encoding values: arrays, NaNs and numpy scalars included."""
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    try:
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if a_arr.shape != b_arr.shape:
            return False
        if a_arr.dtype.kind in "fc" and b_arr.dtype.kind in "fc":
            return bool(np.array_equal(a_arr, b_arr, equal_nan=True))
        return bool(np.array_equal(a_arr, b_arr))
    except (TypeError, ValueError):
        return False


def _normalize_calendar(calendar: str | None) -> str:
    calendar = (calendar or "standard").lower()
    return "standard" if calendar == "gregorian" else calendar


def _cf_encoding(variable: xr.Variable) -> dict[str, Any]:
    encoding = {key: variable.encoding[key] for key in SOURCE_ENCODING_KEYS if key in variable.encoding}
    if "dtype" in encoding:
        encoding["dtype"] = np.dtype(encoding["dtype"]).str
    if "calendar" in encoding:
        encoding["calendar"] = _normalize_calendar(encoding["calendar"])
    elif "units" in encoding and " since " in str(encoding["units"]):
        encoding["calendar"] = "standard"
    return encoding


def input_schema(ds: xr.Dataset, index: Index, concat_dims: Sequence[str]) -> InputSchema:
    """The structure of one opened input, and the values of its concat coordinates."""
    url = ds.encoding.get("source")
    variables = {}
    for name, variable in ds.variables.items():
        variables[str(name)] = VariableSchema(
            name=str(name),
            dims=tuple(str(d) for d in variable.dims),
            shape=tuple(variable.shape),
            dtype=variable.dtype,
            attrs=dict(variable.attrs),
            encoding=_cf_encoding(variable),
            is_coord=name in ds.coords,
        )
    concat_coords = {}
    for dim in concat_dims:
        if dim not in ds.dims:
            raise SchemaError(
                f"{describe_input(index, url)} has no dimension {dim!r}, which the pattern concatenates "
                f"along; its dimensions are {sorted(map(str, ds.dims))}"
            )
        if dim in ds.variables and ds[dim].dims == (dim,):
            concat_coords[dim] = np.asarray(ds[dim].values)
    return InputSchema(
        index=index,
        url=url,
        dims={str(k): int(v) for k, v in ds.sizes.items()},
        variables=variables,
        attrs=dict(ds.attrs),
        concat_coords=concat_coords,
    )


def _merge_attrs(
    attr_sets: Iterable[dict[str, Any]], what: str
) -> dict[str, Any]:
    """Keep the attributes every input agrees on, drop (and log) the ones that conflict."""
    merged: dict[str, Any] = {}
    dropped: set[str] = set()
    for attrs in attr_sets:
        for key, value in attrs.items():
            if key in dropped:
                continue
            if key not in merged:
                merged[key] = value
            elif not _same(merged[key], value):
                dropped.add(key)
                del merged[key]
    if dropped:
        logger.info("%s: attributes that differ between inputs were dropped: %s", what, sorted(dropped))
    return merged


def _consensus_encoding(name: str, schemas: Sequence[tuple[InputSchema, VariableSchema]]) -> dict[str, Any]:
    """One CF encoding for a variable that every input's values can be written with."""
    first_input, first = schemas[0]
    encoding = dict(first.encoding)
    disagree = {
        key
        for _, variable in schemas[1:]
        for key in set(encoding) | set(variable.encoding)
        if not _same(encoding.get(key), variable.encoding.get(key))
    }
    if not disagree:
        return encoding
    if first.is_time_like:
        calendars = {_normalize_calendar(v.encoding.get("calendar")) for _, v in schemas}
        if len(calendars) > 1:
            by_calendar = {}
            for input_, v in schemas:
                by_calendar.setdefault(_normalize_calendar(v.encoding.get("calendar")), input_.name)
            raise SchemaError(
                f"variable {name!r} uses different calendars across inputs: "
                + "; ".join(f"{cal!r} in {where}" for cal, where in by_calendar.items())
            )
        if disagree & {"units", "dtype"}:
            # Inputs count from different epochs: count everything from the first one.
            encoding["dtype"] = np.dtype("float64").str
            logger.info(
                "%s: inputs use different time units; the store uses %r from %s",
                name, encoding.get("units"), first_input.name,
            )
        for key in disagree - {"units", "dtype", "calendar"}:
            encoding.pop(key, None)
        return encoding
    if disagree & {"scale_factor", "add_offset", "dtype", "_Unsigned"}:
        for key in PACKING_KEYS:
            encoding.pop(key, None)
        logger.warning(
            "variable %r is packed differently across inputs (%s); the store keeps decoded values",
            name, ", ".join(sorted(disagree)),
        )
    for key in disagree & {"_FillValue", "missing_value", "units"}:
        encoding.pop(key, None)
        if key != "units":
            logger.warning("variable %r: %s differs across inputs; it is not kept", name, key)
    return encoding


def combine_schemas(
    inputs: SchemaPool | Iterable[InputSchema],
    combine_dims: Sequence[Dimension],
    nitems_per_file: dict[str, int | None] | None = None,
    first_positions: dict[str, int] | None = None,
) -> DatasetSchema:
    """Check all inputs against each other and combine them into a :class:`DatasetSchema`.

    Concat dimensions add up (each input's length is read from the input unless
    ``nitems_per_file`` fixes it); merge dimensions union their variables; every
    other dimension must agree. Problems raise :class:`SchemaError` naming the
    first input, in pattern order, that differs. ``first_positions`` (appending)
    says where along each concat dimension the inputs start; otherwise at 0.
    ``inputs`` is a :class:`SchemaPool` (read by column: checks of variables,
    attributes and sizes run once per distinct value) or any iterable of schemas.
    """
    pool = SchemaPool.of(inputs)
    first_positions = dict(first_positions or {})
    if not len(pool):
        raise SchemaError("the pattern produced no inputs")
    order = pool.order()
    concat_dims = tuple(d.name for d in combine_dims if d.operation == CombineOp.CONCAT)
    merge_dims = tuple(d.name for d in combine_dims if d.operation == CombineOp.MERGE)
    known = {d.name for d in combine_dims}
    names = pool.layout_names()
    wrong = np.array([set(layout) != known for layout in names], dtype=bool)[pool.layout_ids()[order]]
    if wrong.any():
        row = int(order[np.argmax(wrong)])
        raise SchemaError(
            f"{pool.name(row)} is keyed by dimensions {sorted(names[pool.layout_ids()[row]])}, "
            f"but StoreToZarr was given combine_dims {sorted(known)}"
        )
    offsets: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    concat_coords: dict[str, np.ndarray] = {}
    for dim in concat_dims:
        references = _concat_references(pool, order, dim, dict(nitems_per_file or {}).get(dim),
                                        first_positions.get(dim, 0))
        lengths[dim] = pool.sizes_along(dim)[references]  # by column: no Python int per input
        offsets[dim] = np.concatenate([[0], np.cumsum(lengths[dim])[:-1]]).astype(np.int64)
        if (pool.coordinate_lengths(dim)[references] != -1).all():
            concat_coords[dim] = pool.gather_coordinate(dim, references)
    dims = _sizes(pool, order, concat_dims, lengths)
    variables, merge_sources = _combine_variables(pool, order, merge_dims, dims)
    attr_rows = first_rows(pool.attrs_ids(), order)
    urls = pool.packed_urls(order)  # ~8 bytes a URL beyond its own, not ~120
    return DatasetSchema(
        dims=dims,
        variables=variables,
        attrs=_merge_attrs((pool.attrs(row) for row in attr_rows.tolist()), "global attributes"),
        concat_dims=concat_dims,
        merge_dims=merge_dims,
        offsets=offsets,
        lengths=lengths,
        concat_coords=concat_coords,
        merge_sources=merge_sources,
        n_inputs=len(pool),
        urls=urls,
        position_base={dim: first_positions.get(dim, 0) for dim in concat_dims if dim in first_positions},
    )


def _concat_references(pool: SchemaPool, order: np.ndarray, dim: str, expected: int | None,
                       first: int) -> np.ndarray:
    """The first input (row) at each position along concat dimension ``dim``, by position.

    Every input must have ``expected`` items along ``dim`` (when given) and as many
    as the other inputs at its position; the positions must run on from ``first``.
    """
    sizes = pool.sizes_along(dim)[order]
    if (sizes < 0).any():
        raise KeyError(dim)  # an input without the dimension (input_schema refuses those)
    positions = pool.positions(dim)[order]
    distinct, first_of, inverse = np.unique(positions, return_index=True, return_inverse=True)
    wrong_length = sizes != expected if expected is not None else np.zeros(len(sizes), dtype=bool)
    differ = sizes != sizes[first_of[inverse.reshape(-1)]]
    bad = wrong_length | differ
    if bad.any():
        at = int(np.argmax(bad))
        row = int(order[at])
        if wrong_length[at]:
            raise SchemaError(f"{pool.name(row)} has {sizes[at]} items along {dim!r}, "
                              f"but the pattern says nitems_per_file={expected}")
        reference = int(order[first_of[inverse.reshape(-1)[at]]])
        raise SchemaError(
            f"inputs at the same {dim!r} position differ in length along {dim!r}: "
            f"{pool.dims(reference)[dim]} in {pool.name(reference)}, {sizes[at]} in {pool.name(row)}"
        )
    if distinct[0] != first or distinct[-1] != first + len(distinct) - 1:
        present = set(distinct.tolist())
        missing = sorted(set(range(first, int(distinct[-1]) + 1)) - present)
        raise SchemaError(f"no input was given for positions {missing} along {dim!r}")
    return order[first_of]


def _sizes(pool: SchemaPool, order: np.ndarray, concat_dims: tuple[str, ...],
           lengths: dict[str, np.ndarray]) -> dict[str, int]:
    """The store's size along each dimension: concat dimensions add up, every other one must agree."""
    dims: dict[str, int] = {dim: int(lengths[dim].sum()) for dim in concat_dims}
    owner_of: dict[str, int] = {}
    for row in first_rows(pool.dims_ids(), order).tolist():
        for dim, size in pool.dims(row).items():
            if dim in concat_dims:
                continue
            owner = owner_of.setdefault(dim, row)
            if pool.dims(owner)[dim] != size:
                raise SchemaError(
                    f"dimension {dim!r} has size {size} in {pool.name(row)}, "
                    f"but {pool.dims(owner)[dim]} in {pool.name(owner)}; only concat dimensions may differ"
                )
            dims[dim] = size
    return dims


def _combine_variables(pool: SchemaPool, order: np.ndarray, merge_dims: tuple[str, ...],
                       dims: dict[str, int]) -> tuple[dict[str, VariableSchema], dict[str, tuple[int, ...]]]:
    """The store's variables (the same set within a merge group, one structure everywhere), and which
    merge position writes each."""
    groups = np.stack([pool.positions(d) for d in merge_dims] + [pool.variables_ids()], axis=1)
    group_reference: dict[tuple[int, ...], int] = {}
    merge_sources: dict[str, tuple[int, ...]] = {}
    for row in first_rows(groups, order).tolist():  # each (merge group, variables) once: the first input
        group = tuple(int(p) for p in groups[row, :-1])
        reference = group_reference.setdefault(group, row)
        missing = set(pool.variables(reference)) - set(pool.variables(row))
        extra = set(pool.variables(row)) - set(pool.variables(reference))
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"lacks variables {sorted(missing)} that {pool.name(reference)} has")
            if extra:
                problems.append(f"has variables {sorted(extra)} that {pool.name(reference)} lacks")
            raise SchemaError(f"{pool.name(row)} " + " and ".join(problems))
        for name in pool.variables(row):
            merge_sources.setdefault(name, group)
    occurrences: dict[str, list[tuple[InputSchema, VariableSchema]]] = defaultdict(list)
    for row in first_rows(pool.variables_ids(), order).tolist():  # each distinct set of variables once
        schema = pool.schema(row)
        for name, variable in schema.variables.items():
            occurrences[name].append((schema, variable))
    variables: dict[str, VariableSchema] = {}
    for name in merge_sources:
        found = occurrences[name]
        first_input, first = found[0]
        dtype = first.dtype
        for schema, variable in found[1:]:
            if variable.dims != first.dims:
                raise SchemaError(
                    f"variable {name!r} has dimensions {variable.dims} in {schema.name}, "
                    f"but {first.dims} in {first_input.name}"
                )
            if variable.dtype != dtype:
                if variable.dtype.kind in "biuf" and dtype.kind in "biuf":
                    dtype = np.promote_types(dtype, variable.dtype)
                else:
                    raise SchemaError(
                        f"variable {name!r} has dtype {variable.dtype} in {schema.name}, "
                        f"but {first.dtype} in {first_input.name}"
                    )
        variables[name] = VariableSchema(
            name=name,
            dims=first.dims,
            shape=tuple(dims[d] for d in first.dims),
            dtype=np.dtype(dtype),
            attrs=_merge_attrs((v.attrs for _, v in found), f"variable {name!r}"),
            encoding=_consensus_encoding(name, found),
            is_coord=first.is_coord,
        )
    return variables, merge_sources


def schema_as_dataset(schema: DatasetSchema) -> xr.Dataset:
    """A lazy Dataset with the combined structure: what ``dynamic_chunking_fn`` is given.

    Data are dask arrays that are never computed; concat coordinates hold their values.
    """
    import dask.array

    variables = {}
    for name, variable in schema.variables.items():
        if name in schema.concat_coords:
            data = schema.concat_coords[name]
        else:
            data = dask.array.empty(variable.shape, dtype=variable.dtype, chunks=-1)
        variables[name] = xr.Variable(variable.dims, data, attrs=variable.attrs, encoding=dict(variable.encoding))
    ds = xr.Dataset(variables, attrs=schema.attrs)
    return ds.set_coords([name for name, v in schema.variables.items() if v.is_coord])
