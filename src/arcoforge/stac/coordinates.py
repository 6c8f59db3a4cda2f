"""Finding the CF coordinates of a dataset: latitude, longitude, time, and which variables are cell bounds.

Every other part of the STAC package (extents, datacube dimensions, quicklooks)
asks the same questions of a dataset — which variable is latitude, which is
time, which are only bounds of another — so the answers live here once, found
by CF attributes (through cf_xarray) and by values that decode to dates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CFCoordinates:
    """Names of the variables holding latitude, longitude and time (None where absent)."""

    latitude: str | None
    longitude: str | None
    time: str | None

    def horizontal_dims(self, ds: xr.Dataset) -> tuple[str, ...]:
        """The dimensions latitude and longitude span: (y, x) of a grid, or the one dimension of points."""
        if self.latitude is None or self.longitude is None:
            return ()
        lat_dims, lon_dims = ds[self.latitude].dims, ds[self.longitude].dims
        if len(lat_dims) == 1 and len(lon_dims) == 1:
            if lat_dims == lon_dims:  # points (stations, a trajectory) along one dimension
                return (str(lat_dims[0]),)
            return (str(lat_dims[0]), str(lon_dims[0]))
        return tuple(str(d) for d in lon_dims)


def is_time_like(values: Any) -> bool:
    """Whether an array holds dates: numpy datetime64, or cftime objects."""
    array = np.asarray(values)
    if array.dtype.kind == "M":
        return True
    if array.dtype.kind == "O" and array.size:
        import cftime

        first = next((v for v in array.flat if v is not None), None)
        return isinstance(first, cftime.datetime)
    return False


def variable_is_time_like(da: xr.DataArray) -> bool:
    """Whether a variable holds dates, looking at one value only when it is of object dtype."""
    if da.dtype.kind == "M":
        return True
    if da.dtype.kind != "O" or da.size == 0:
        return False
    return is_time_like(da[(0,) * da.ndim].values)


def _pick(ds: xr.Dataset, names: Iterable[str]) -> str | None:
    """Prefer a coordinate over a data variable, and fewer dimensions over more."""
    candidates = [n for n in dict.fromkeys(names) if n in ds.variables and ds[n].ndim >= 1]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (n not in ds.coords, ds[n].ndim, n not in ds.dims))


def find_coordinates(ds: xr.Dataset) -> CFCoordinates:
    """Latitude, longitude and time of ``ds``, found by CF attributes (cf_xarray).

    Latitude and longitude are recognised by ``standard_name``, ``units``
    (``degrees_north``/``degrees_east``), ``_CoordinateAxisType`` or
    ``long_name``; time by those, ``axis: T``, or by values that decode to dates.
    """
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    found = ds.cf.coordinates
    bounds = bounds_variables(ds)
    latitude = _pick(ds, (n for n in found.get("latitude", []) if n not in bounds))
    longitude = _pick(ds, (n for n in found.get("longitude", []) if n not in bounds))
    time_names = found.get("time", []) + ds.cf.axes.get("T", []) + [str(n) for n in ds.coords if ds[n].ndim == 1]
    time = _pick(ds, (n for n in time_names
                      if n in ds.variables and n not in bounds and variable_is_time_like(ds[n])))
    if (latitude is None) != (longitude is None) or (
        latitude is not None and longitude is not None and ds[latitude].ndim != ds[longitude].ndim
    ):
        logger.warning(
            "%s: latitude %r and longitude %r do not form a grid; the spatial extent is global",
            describe_source(ds), latitude, longitude,
        )
        latitude = longitude = None
    return CFCoordinates(latitude=latitude, longitude=longitude, time=time)


def bounds_variables(ds: xr.Dataset) -> set[str]:
    """Variables named by another variable's ``bounds`` or ``climatology`` attribute."""
    names = set()
    for variable in ds.variables.values():
        for key in ("bounds", "climatology"):
            value = variable.attrs.get(key)
            if isinstance(value, str) and value in ds.variables:
                names.add(value)
    return names


def describe_source(ds: xr.Dataset) -> str:
    """How log messages name ``ds``: its store (``encoding["source"]``) when known."""
    source = ds.encoding.get("source")
    return f"store {source}" if source else "dataset"


def attrs_description(attrs: Mapping[str, Any]) -> str | None:
    """A human description from CF attributes: ``long_name``, else ``standard_name``, else ``description``."""
    for key in ("long_name", "standard_name", "description"):
        value = attrs.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
