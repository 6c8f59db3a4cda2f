"""A store's template: its structure as a lazy, CF-encoded Dataset, and the files that renders to.

The template holds every array's metadata (dimension names, attributes, CF
encoding, chunking) and the full values of the concat coordinates. It is
rendered in memory (see :mod:`arcoforge.documents`); nothing here writes a
store. Chunks are CF-encoded (:func:`encode_variable`) with the same encoding
the template was rendered with, so every worker writes values the store's
metadata describes, whatever epoch, packing or fill value its own input used.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from .documents import render_template
from .features import keep_time_units, store_encoding
from .schema import DatasetSchema, VariableSchema
from .zarr_encoding import ZARR_ENCODING_KEYS

if TYPE_CHECKING:
    from .store_plan import StorePlan


def default_compressors(zarr_format: int) -> tuple:
    """Blosc LZ4 with byte shuffle, the default of zarr-python 2 and so of most published stores.

    It compresses about 7x faster than zarr-python 3's default (Zstd level 0)
    at a somewhat lower ratio; recipes choose another codec with
    ``encoding={var: {"compressors": ...}}``.
    """
    if zarr_format == 2:
        import numcodecs

        return (numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),)
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)


def encode_variable(name: str, data: Any, variable: VariableSchema) -> xr.Variable:
    """CF-encode decoded values of a variable with the store's encoding for it (see :mod:`arcoforge.features`)."""
    encoding, extra_attrs = store_encoding(variable.encoding, variable.dtype)
    decoded = xr.Variable(variable.dims, data, encoding=encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=xr.SerializationWarning)
        encoded = xr.conventions.encode_cf_variable(decoded, name=name)
    encoded.attrs.update(extra_attrs)
    keep_time_units(encoded.attrs, encoding)
    return encoded


def _sample_value(variable: VariableSchema) -> Any:
    """A value of the variable's decoded type, to learn its encoded dtype and attributes."""
    if variable.dtype.kind == "M":
        return np.array(["2000-01-01"], dtype=variable.dtype)
    if variable.dtype.kind == "m":
        return np.array([0], dtype=variable.dtype)
    if variable.is_time_like:
        import cftime

        return np.array([cftime.datetime(2000, 1, 1, calendar=variable.encoding["calendar"])], dtype=object)
    if variable.dtype.kind in "OUS":
        return np.array(["a"], dtype=variable.dtype if variable.dtype.kind != "O" else object)
    return np.zeros(1, dtype=variable.dtype)


def template_dataset(
    schema: DatasetSchema,
    chunks: Mapping[str, tuple[int, ...]],
    attrs: Mapping[str, Any] | None = None,
    zarr_encoding: Mapping[str, Mapping[str, Any]] | None = None,
    zarr_format: int = 3,
    shards: Mapping[str, tuple[int, ...] | None] | None = None,
) -> xr.Dataset:
    """A lazy, already CF-encoded Dataset with the store's structure.

    Data variables are lazy zeros (never computed); concat coordinates carry
    their real values, so they are written with the template.
    """
    import dask.array  # here, not at the top: 0.2 s to import, and only the worker writing the template needs it

    zarr_encoding = dict(zarr_encoding or {})
    variables: dict[str, xr.Variable] = {}
    coord_names = []
    for name, variable in schema.variables.items():
        if name in schema.concat_coords:
            encoded = encode_variable(name, schema.concat_coords[name], variable)
            data: Any = np.asarray(encoded.values)
        else:
            sample_shape = (1,) * len(variable.dims)
            sample = _sample_value(variable).reshape(sample_shape)  # 0-d too: a numpy scalar would lose S/U widths
            encoded = encode_variable(name, sample, variable)
            lazy_chunks = (shards or {}).get(name) or chunks[name] or ()
            data = dask.array.zeros(variable.shape, dtype=encoded.dtype, chunks=lazy_chunks)
        var_attrs = dict(encoded.attrs)
        for key, value in variable.attrs.items():
            var_attrs.setdefault(key, value)
        encoding: dict[str, Any] = {"chunks": chunks[name]}
        if shards and shards.get(name):
            encoding["shards"] = shards[name]
        if "_FillValue" in var_attrs:
            encoding["_FillValue"] = var_attrs.pop("_FillValue")
            if zarr_format == 3:
                # Let chunks never written read as missing rather than as zeros.
                encoding["fill_value"] = encoding["_FillValue"]
        elif encoded.dtype.kind in "fc" and not variable.is_coord:
            encoding["_FillValue"] = np.nan
        else:
            encoding["_FillValue"] = None
        if encoded.dtype.kind in "biufcmM":
            encoding["compressors"] = default_compressors(zarr_format)
        encoding.update({k: v for k, v in zarr_encoding.get(name, {}).items() if k in ZARR_ENCODING_KEYS})
        variables[name] = xr.Variable(variable.dims, data, attrs=var_attrs, encoding=encoding)
        if variable.is_coord:
            coord_names.append(name)
    ds = xr.Dataset(variables, attrs={**schema.attrs, **dict(attrs or {})})
    return ds.set_coords(coord_names)


def render_plan(plan: "StorePlan") -> dict[str, bytes]:
    """Every file of the plan's template: metadata documents and concat coordinate chunks."""
    template = template_dataset(plan.schema, plan.chunks, plan.attrs, plan.zarr_encoding, plan.zarr_format,
                                plan.shards)
    return render_template(template, plan.zarr_format)
