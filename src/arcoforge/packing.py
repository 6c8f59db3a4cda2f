"""How a packed (scaled integer) or ``_Unsigned`` variable is stored, so it decodes as its source does.

xarray decodes an int16 variable whose ``scale_factor`` and ``add_offset`` are
float32 to float32 values. A Zarr store keeps attributes as JSON, which has only
one number type: read back, the same attributes are float64 and xarray decodes
to float64 — other values in the last bits, and twice the memory. So by
default a packed variable whose source decodes to anything but float64 is
stored *unpacked*, as its decoded values (bit-exact, NaN where missing).
Packs that decode to float64 (float64 scale or offset, int32 data, ...) decode
to float64 from the store too, and keep their packing.

A recipe keeps the packing anyway by naming an integer ``dtype`` in
``StoreToZarr(encoding={var: {"dtype": "int16", "_FillValue": -32768}})``
(the source's ``scale_factor``/``add_offset`` are kept unless given too); the
store then decodes to float64.

``_Unsigned`` (netCDF-3's way to store unsigned bytes in signed types) is
resolved: Zarr has unsigned types, so the store holds the unsigned dtype and
fill value themselves, and decodes to what the source decodes to.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SCALING_KEYS = ("scale_factor", "add_offset")
# What is dropped when a variable is stored as its decoded values.
UNPACKED_KEYS = ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned")


def resolve_unsigned(encoding: Mapping[str, Any]) -> dict[str, Any]:
    """The encoding with ``_Unsigned`` replaced by the dtype it stands for.

    >>> enc = resolve_unsigned({"dtype": "|i1", "_FillValue": np.int8(-1), "_Unsigned": "true"})
    >>> enc["dtype"], int(enc["_FillValue"])
    ('|u1', 255)
    """
    encoding = dict(encoding)
    flag = encoding.pop("_Unsigned", None)
    if flag is None or "dtype" not in encoding:
        return encoding
    stored = np.dtype(encoding["dtype"])
    wanted = {"true": "u", "false": "i"}.get(str(flag).strip().lower())
    if stored.kind not in "iu" or wanted is None or stored.kind == wanted:
        return encoding
    target = np.dtype(f"{wanted}{stored.itemsize}").newbyteorder(stored.byteorder)
    encoding["dtype"] = target.str
    for key in ("_FillValue", "missing_value"):
        value = np.asarray(encoding.get(key))
        # Only integer fill values are reinterpreted (a NaN fill on an integer variable is left as it is).
        if key in encoding and value.dtype.kind in "iu":
            try:
                encoding[key] = value.astype(stored).view(target)[()]
            except (OverflowError, TypeError, ValueError):
                pass
    return encoding


def is_packed(encoding: Mapping[str, Any]) -> bool:
    return any(key in encoding for key in SCALING_KEYS)


def store_value_encoding(name: str, decoded_dtype: np.dtype, source: Mapping[str, Any],
                         requested: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The CF encoding a variable is stored with, from its source's and the recipe's ``requested`` one.

    ``decoded_dtype`` is what xarray decodes the source to. A pack that the
    store would decode to another dtype is dropped unless the recipe asks for
    an integer ``dtype``; requested keys always win.
    """
    requested = dict(requested or {})
    encoding = resolve_unsigned(source)
    asks_packing = ("dtype" in requested and np.dtype(requested["dtype"]).kind in "iu") or is_packed(requested)
    if is_packed(encoding) and np.dtype(decoded_dtype) != np.float64 and not asks_packing:
        for key in UNPACKED_KEYS:
            encoding.pop(key, None)
        logger.info("variable %r is stored unpacked, as its decoded %s values: a packed Zarr array "
                    "would decode to float64", name, np.dtype(decoded_dtype))
    elif "dtype" in requested and np.dtype(requested["dtype"]).kind == "f" and not is_packed(requested):
        for key in SCALING_KEYS:  # a float dtype asked for: the values, not a pack of them
            encoding.pop(key, None)
    encoding.update(requested)
    return encoding
