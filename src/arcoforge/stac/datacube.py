"""The datacube extension: ``cube:dimensions`` and ``cube:variables`` of a dataset.

Owns how each dimension is classified (spatial x/y/z, temporal, other, or a
bare index) and how much of its values is written: the extent always, the step
when regular, the values when irregular and few. Projected x/y take the CRS of
the grid mapping; the index dimensions of a curvilinear grid say which 2-D
variables hold their latitude and longitude.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .coordinates import (
    CFCoordinates,
    attrs_description,
    bounds_variables,
    find_coordinates,
    variable_is_time_like,
)
from .extents import iso_datetime, iso_duration, json_number, time_values, to_utc_datetime

# cube:dimensions lists values of an irregular dimension up to this many; beyond, only its extent.
MAX_LISTED_VALUES = 100


def _numeric_dimension(values: np.ndarray) -> dict[str, Any] | None:
    """extent, and step (regular) or values (few), of a numeric 1-D coordinate."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return None
    info: dict[str, Any] = {"extent": [json_number(finite.min()), json_number(finite.max())]}
    if values.size > 1 and finite.size == values.size:
        steps = np.diff(values.astype("f8"))
        if steps[0] != 0 and np.allclose(steps, steps[0], rtol=1e-6, atol=0):
            info["step"] = json_number(steps[0])
            return info
        if values.size <= MAX_LISTED_VALUES:
            info["values"] = [json_number(v) for v in values]
        info["step"] = None
    return info


def _index_dimension(size: int, description: str) -> dict[str, Any]:
    return {"type": "other", "extent": [0, max(size - 1, 0)], "step": 1, "description": description}


def _temporal_dimension(ds: xr.Dataset, name: str) -> dict[str, Any]:
    values = time_values(ds, name)
    start, end = (to_utc_datetime(values.min()), to_utc_datetime(values.max())) if values.size else (None, None)
    info: dict[str, Any] = {"type": "temporal", "extent": [iso_datetime(start), iso_datetime(end)]}
    description = attrs_description(ds[name].attrs)
    calendar_name = ds[name].encoding.get("calendar") or getattr(values[0] if values.size else None, "calendar", None)
    if calendar_name and calendar_name not in ("standard", "gregorian", "proleptic_gregorian"):
        note = (f"calendar {calendar_name}: dates are the calendar's own labels, "
                "a day past a real month's end shown as its last day")
        description = f"{description}; {note}" if description else note
    if description:
        info["description"] = description
    step = iso_duration(values)
    if step:
        info["step"] = step
    elif values.size <= MAX_LISTED_VALUES:
        listed = [iso_datetime(to_utc_datetime(v)) for v in values]
        if listed and all(listed):
            info["values"] = listed
        info["step"] = None
    return info


def _spatial_dimension(ds: xr.Dataset, name: str, axis: str, reference_system: Any) -> dict[str, Any] | None:
    numeric = _numeric_dimension(np.asarray(ds[name].values))
    if numeric is None:
        return None
    info: dict[str, Any] = {"type": "spatial", "axis": axis, **numeric}
    if axis == "z":
        units = ds[name].attrs.get("units")
        if units is not None:
            info["unit"] = str(units)
    if reference_system is not None:
        info["reference_system"] = reference_system
    description = attrs_description(ds[name].attrs)
    if description:
        info["description"] = description
    return info


def _grid_mapping_wkt(ds: xr.Dataset) -> str | None:
    """The ``crs_wkt`` of the first grid mapping a data variable names, if any."""
    for variable in ds.data_vars.values():
        mapping = variable.attrs.get("grid_mapping") or variable.encoding.get("grid_mapping")
        if isinstance(mapping, str) and mapping in ds.variables:
            wkt = ds[mapping].attrs.get("crs_wkt") or ds[mapping].attrs.get("spatial_ref")
            if isinstance(wkt, str) and wkt.strip():
                return wkt
    return None


def cube_dimensions(ds: xr.Dataset, coords: CFCoordinates | None = None) -> dict[str, dict[str, Any]]:
    """``cube:dimensions`` of the datacube extension: one entry per dimension of ``ds``.

    Latitude/longitude dimensions are ``spatial`` (axis y/x, EPSG:4326), the time
    dimension ``temporal``, a vertical coordinate (CF ``axis: Z``, ``positive``, or
    a vertical ``standard_name`` such as depth or air_pressure) ``spatial`` with
    axis z; other axis X/Y coordinates are ``spatial`` in the CRS of the grid
    mapping; everything else (including the index dimensions of a curvilinear
    grid, whose latitude/longitude are 2-D) is ``other``.
    Extents are in the dimension's own values (longitudes are not wrapped here).
    """
    import cf_xarray  # noqa: F401

    coords = coords or find_coordinates(ds)
    axes = ds.cf.axes
    vertical = set(axes.get("Z", [])) | set(ds.cf.coordinates.get("vertical", []))
    projected_wkt = _grid_mapping_wkt(ds)
    curvilinear = set(coords.horizontal_dims(ds)) if coords.latitude and ds[coords.latitude].ndim == 2 else set()
    dimensions: dict[str, dict[str, Any]] = {}
    for dim, size in ds.sizes.items():
        dim = str(dim)
        has_coord = dim in ds.variables and ds[dim].dims == (dim,)
        info: dict[str, Any] | None = None
        if not has_coord:
            if dim in curvilinear:
                which = "x" if dim == coords.horizontal_dims(ds)[-1] else "y"
                info = _index_dimension(size, f"{which} index of a curvilinear grid; its latitude and longitude "
                                              f"are the 2-D variables {coords.latitude!r} and {coords.longitude!r}")
            else:
                info = _index_dimension(size, "index dimension without coordinate values")
        elif dim == coords.time or variable_is_time_like(ds[dim]):
            info = _temporal_dimension(ds, dim)
        elif dim == coords.longitude:
            info = _spatial_dimension(ds, dim, "x", 4326)
        elif dim == coords.latitude:
            info = _spatial_dimension(ds, dim, "y", 4326)
        elif dim in vertical:
            info = _spatial_dimension(ds, dim, "z", None)
        elif dim in axes.get("X", []) or dim in axes.get("Y", []):
            axis = "x" if dim in axes.get("X", []) else "y"
            info = _spatial_dimension(ds, dim, axis, projected_wkt)
            if info is not None and projected_wkt is None:
                info["description"] = (info.get("description", dim) +
                                       "; projected coordinate, CRS unknown (no grid_mapping with crs_wkt)")
        if info is None:
            info = _other_dimension(ds, dim, size) if has_coord else _index_dimension(size, "index dimension")
        dimensions[dim] = info
    return dimensions


def _other_dimension(ds: xr.Dataset, dim: str, size: int) -> dict[str, Any]:
    values = np.asarray(ds[dim].values)
    info: dict[str, Any] = {"type": "other"}
    if values.dtype.kind in "biuf":
        numeric = _numeric_dimension(values)
        info.update(numeric or {"extent": [None, None]})
        units = ds[dim].attrs.get("units")
        if units is not None:
            info["unit"] = str(units)
    elif values.dtype.kind in "US" or (values.dtype.kind == "O" and all(isinstance(v, str) for v in values)):
        if size <= 10 * MAX_LISTED_VALUES:
            info["values"] = [str(v) for v in values]
        else:
            info["extent"] = [None, None]
    else:
        info["extent"] = [None, None]
    description = attrs_description(ds[dim].attrs)
    if description:
        info["description"] = description
    return info


def cube_variables(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """``cube:variables``: data variables, and auxiliary ones (non-dimension coordinates, cell bounds).

    Each gives its dimensions, ``unit`` (CF ``units``) and ``description``
    (``long_name``, ``standard_name`` or ``description``).
    """
    bounds = bounds_variables(ds)
    variables: dict[str, dict[str, Any]] = {}
    for name, variable in ds.variables.items():
        name = str(name)
        if variable.dims == (name,) and name in ds.coords:
            continue  # a dimension coordinate: described in cube:dimensions
        auxiliary = name in ds.coords or name in bounds
        info: dict[str, Any] = {"type": "auxiliary" if auxiliary else "data",
                                "dimensions": [str(d) for d in variable.dims]}
        units = variable.attrs.get("units")
        if units is not None:
            info["unit"] = str(units)
        description = attrs_description(variable.attrs)
        if description:
            info["description"] = description
        variables[name] = info
    return variables

