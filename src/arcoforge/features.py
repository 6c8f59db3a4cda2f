"""netCDF and CF features that do not map one to one onto Zarr: how they are stored, or why they are refused.

Stored (so that the store decodes as its source does, see docs/conformance.md):

- **char arrays** (``char name(station, name_strlen)``): xarray decodes them to
  fixed-width strings (``S8``); the store keeps those strings, not the
  characters along ``name_strlen``, which is not a dimension of the dataset.
- **missing_value different from _FillValue**: xarray masks both when it
  reads, but refuses to encode both; the store writes missing values as
  ``_FillValue`` and keeps ``missing_value`` as an attribute, which masks again.
- **time units** keep their exact string (``seconds since 2020-01-01 00:00:00``),
  where xarray would rewrite it to an equivalent one.

Refused, with one line naming the file, its pattern index and the variable:

- **compound** (structured) and **variable-length numeric** types: Zarr has
  no such type that every reader understands;
- **data only in groups** when no ``group`` was given;
- **times that cannot be decoded**, with the units and what was expected.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .errors import InputError, describe_input

logger = logging.getLogger(__name__)

# xarray's message for time units it cannot decode (xarray.coding.times).
_UNDECODABLE_TIME = re.compile(r"unable to decode time units '(?P<units>[^']*)' with \"calendar '(?P<calendar>[^']*)'")


def check_storable(ds: xr.Dataset, index: object) -> None:
    """Refuse an input holding a variable of a type the store cannot hold (compound, ragged)."""
    where = describe_input(index, ds.encoding.get("source"))
    for name, variable in ds.variables.items():
        dtype = variable.dtype
        if dtype.fields is not None or dtype.kind == "V":
            fields = ", ".join(f"{field} {dtype.fields[field][0]}" for field in dtype.fields or ())
            raise InputError(
                f"{where}: variable {name!r} has a compound type ({fields or dtype}), which Zarr stores cannot "
                f"hold; expected numbers, strings or times: drop it (xarray_open_kwargs={{'drop_variables': "
                f"[{str(name)!r}]}}) or split its fields into variables with a Preprocess"
            )
        if dtype.kind == "O" and variable.size and not _holds_strings_or_times(variable):
            raise InputError(
                f"{where}: variable {name!r} has a variable-length (ragged) numeric type, which Zarr stores "
                f"cannot hold; expected numbers, strings or times: drop it (xarray_open_kwargs="
                f"{{'drop_variables': [{str(name)!r}]}}) or turn it into a padded array with a Preprocess"
            )


def _holds_strings_or_times(variable: xr.Variable) -> bool:
    first = np.asarray(variable[(0,) * variable.ndim].values).item() if variable.ndim else variable.values.item()
    return first is None or isinstance(first, (str, bytes)) or hasattr(first, "calendar")


def data_groups(target: Any) -> list[str]:
    """The groups of an HDF5/NetCDF-4 file (path or file object) that hold variables, outermost first."""
    try:
        import h5py

        with h5py.File(target, "r") as file:
            found: list[str] = []

            def visit(name: str, item: Any) -> None:
                if isinstance(item, h5py.Group) and any(isinstance(v, h5py.Dataset) for v in item.values()):
                    found.append(name)

            file.visititems(visit)
            return found
    except (OSError, ValueError, TypeError):  # not HDF5 (netCDF-3 has no groups)
        return []
    finally:
        if hasattr(target, "seek"):
            target.seek(0)


def check_not_only_groups(ds: xr.Dataset, target: Any, index: object, name: str, open_kwargs: Mapping) -> None:
    """Refuse an input whose root group is empty while its groups hold data, naming the groups."""
    if ds.variables or "group" in open_kwargs:
        return
    groups = data_groups(target)
    if groups:
        raise InputError(
            f"{describe_input(index, name)} has no variables in its root group; its data is in group"
            f"{'s' if len(groups) > 1 else ''} {groups}: expected OpenWithXarray(xarray_open_kwargs="
            f"{{'group': {groups[0]!r}}}) to bake one of them"
        )


def explain_open_error(error: Exception, target: Any, engine: Any, open_kwargs: Mapping, index: object,
                       name: str) -> str | None:
    """A one-line message for an input xarray cannot decode, naming the variable; ``None`` if not known."""
    match = _UNDECODABLE_TIME.search(str(error))
    if not match:
        return None
    units, calendar = match.group("units"), match.group("calendar")
    variables = []
    try:
        kwargs = {**open_kwargs, "decode_times": False}
        with xr.open_dataset(target, engine=engine, chunks=None, **kwargs) as raw:
            variables = [str(n) for n, v in raw.variables.items() if str(v.attrs.get("units")) == units]
    except Exception as reopen_error:  # the message is then less precise, not wrong
        logger.debug("could not reopen %s to find its undecodable time: %s", name, reopen_error)
    which = f"variable {variables[0]!r}" if len(variables) == 1 else f"variables {variables}" if variables \
        else "a variable"
    return (
        f"{describe_input(index, name)}: {which} has time units {units!r} (calendar {calendar!r}) that cannot be "
        f"decoded; expected '<units> since <reference date>', or xarray_open_kwargs={{'decode_times': False}} "
        f"to keep the raw numbers"
    )


def store_encoding(encoding: Mapping[str, Any], decoded_dtype: np.dtype) -> tuple[dict[str, Any], dict[str, Any]]:
    """The encoding xarray can write a variable with, and attributes to add after it has.

    >>> store_encoding({"dtype": "|S1"}, np.dtype("S8"))
    ({}, {})
    >>> store_encoding({"_FillValue": -32768, "missing_value": -999, "dtype": "<i2"}, np.dtype("float32"))
    ({'_FillValue': -32768, 'dtype': '<i2'}, {'missing_value': -999})
    """
    encoding = dict(encoding)
    attrs: dict[str, Any] = {}
    if encoding.get("dtype") is not None and np.dtype(encoding["dtype"]) == np.dtype("S1") \
            and np.dtype(decoded_dtype).kind in "SU" and np.dtype(decoded_dtype).itemsize > 1:
        del encoding["dtype"]  # a char array: the store keeps the strings it decodes to
    fill, missing = encoding.get("_FillValue"), encoding.get("missing_value")
    if fill is not None and missing is not None and not _same_values(fill, missing):
        attrs["missing_value"] = encoding.pop("missing_value")
    return encoding, attrs


def _same_values(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc"))


def keep_time_units(encoded_attrs: dict[str, Any], encoding: Mapping[str, Any]) -> None:
    """Put back the source's own spelling of time units where xarray wrote an equivalent one."""
    wanted, written = encoding.get("units"), encoded_attrs.get("units")
    if not isinstance(wanted, str) or not isinstance(written, str) or wanted == written or " since " not in wanted:
        return
    import cftime

    calendar = str(encoding.get("calendar") or encoded_attrs.get("calendar") or "standard")
    try:
        same = all(cftime.num2date(n, wanted, calendar) == cftime.num2date(n, written, calendar) for n in (0, 1))
    except (ValueError, TypeError):
        return
    if same:
        encoded_attrs["units"] = wanted
