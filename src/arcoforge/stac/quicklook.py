"""Quicklooks: a PNG of the first step of a store's main variable, linked from its Collection.

Owns which variable is shown (:func:`main_variable`) and how it is drawn: on
its latitude/longitude grid when there is one (2-D coordinates and station
points too), else over its last two dimensions, reading at most a thousand
points per axis so a quicklook of a large store stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import numpy as np
import xarray as xr

from .catalog_io import FsspecStacIO
from .coordinates import attrs_description, bounds_variables, describe_source, find_coordinates

logger = logging.getLogger(__name__)

QUICKLOOK_NAME = "quicklook.png"


def main_variable(ds: xr.Dataset) -> str | None:
    """The variable a quicklook shows: the first numeric data variable spanning the horizontal grid.

    Without latitude/longitude, the first numeric data variable of two or more
    dimensions, else of one; None when there is none.
    """
    bounds = bounds_variables(ds)
    numeric = [str(n) for n, v in ds.data_vars.items()
               if v.dtype.kind in "biuf" and v.ndim >= 1 and str(n) not in bounds]
    horizontal = set(find_coordinates(ds).horizontal_dims(ds))
    for rule in (lambda v: horizontal and horizontal <= set(v.dims), lambda v: v.ndim >= 2, lambda v: True):
        for name in numeric:
            if rule(ds[name]):
                return name
    return None


def _label(da: xr.DataArray, fallback: str) -> str:
    name = attrs_description(da.attrs) or fallback
    units = da.attrs.get("units")
    return f"{name} [{units}]" if units not in (None, "") else name


def _format_coordinate(value: Any) -> str:
    """A coordinate value for a plot title; dates as 'YYYY-MM-DD HH:MM'."""
    value = value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="m")).replace("T", " ")
    if hasattr(value, "calendar") and hasattr(value, "year"):  # cftime: the calendar's own label
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}"
    return str(value.item() if isinstance(value, np.generic) else value)


def _axis_values(da: xr.DataArray, dim: str, set_ticks: Any) -> np.ndarray:
    """Positions along ``dim`` for a plot: numeric coordinate values, else indices (labelled when few)."""
    if dim in da.coords and da[dim].dtype.kind in "biuf":
        return np.asarray(da[dim].values)
    positions = np.arange(da.sizes[dim])
    if dim in da.coords and da.sizes[dim] <= 30:
        set_ticks(positions, [_format_coordinate(v) for v in da[dim].values])
    return positions


def write_quicklook(
    ds: xr.Dataset,
    path: str,
    variable: str | None = None,
    max_pixels: int = 1000,
    storage_options: Mapping[str, Any] | None = None,
) -> str | None:
    """Write a PNG of the first step of ``variable`` (default :func:`main_variable`) to ``path``.

    Drawn on a latitude/longitude grid when there is one (2-D coordinates too),
    else over the variable's last two dimensions. Title, colour-bar label and
    units come from CF attributes; missing values show as light grey. Every
    other dimension is taken at index 0, and at most ``max_pixels`` points per
    axis are read. Returns ``path``, or None when nothing numeric can be drawn.
    The PNG's ``Title`` and ``Description`` text chunks name the variable.
    """
    name = variable or main_variable(ds)
    if name is None:
        logger.warning("%s has no numeric data variable to draw; no quicklook is written", describe_source(ds))
        return None
    da = ds[name]
    coords = find_coordinates(ds)
    horizontal = coords.horizontal_dims(ds)
    on_map = bool(horizontal) and set(horizontal) <= set(da.dims)
    plot_dims = horizontal if on_map else tuple(str(d) for d in da.dims[-2:])
    selection = {str(d): 0 for d in da.dims if d not in plot_dims}
    stride = {d: slice(None, None, max(1, -(-da.sizes[d] // max_pixels))) for d in plot_dims}
    da = da.isel(selection).isel(stride).transpose(*plot_dims).load()
    when = ", ".join(f"{d} = {_format_coordinate(da[d].values) if d in da.coords else 0}" for d in selection)
    long_name = attrs_description(ds[name].attrs) or name
    units = ds[name].attrs.get("units")
    units_label = str(units) if units not in (None, "") else ""

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    values = np.ma.masked_invalid(np.asarray(da.values, dtype="f8"))
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    if on_map:
        def coordinate(name: str) -> np.ndarray:
            var = ds[name]
            var = var.isel({d: s for d, s in stride.items() if d in var.dims})
            return np.asarray(var.transpose(*[d for d in plot_dims if d in var.dims]).values)

        x, y = coordinate(coords.longitude), coordinate(coords.latitude)  # type: ignore[arg-type]
        axes.set_xlabel(_label(ds[coords.longitude], "longitude"))  # type: ignore[index]
        axes.set_ylabel(_label(ds[coords.latitude], "latitude"))  # type: ignore[index]
        if len(plot_dims) == 1:  # points (stations, trajectories) along one dimension
            shown = axes.scatter(x, y, c=values, cmap=cmap, plotnonfinite=True, s=12)
        else:
            shown = axes.pcolormesh(x, y, values, cmap=cmap, shading="auto")
        figure.colorbar(shown, ax=axes).set_label(units_label)
    elif len(plot_dims) == 2:
        y_dim, x_dim = plot_dims
        x, y = _axis_values(da, x_dim, axes.set_xticks), _axis_values(da, y_dim, axes.set_yticks)
        shown = axes.pcolormesh(x, y, values, cmap=cmap, shading="auto")
        figure.colorbar(shown, ax=axes).set_label(units_label)
        axes.set_xlabel(_label(ds[x_dim], x_dim) if x_dim in ds.variables else x_dim)
        axes.set_ylabel(_label(ds[y_dim], y_dim) if y_dim in ds.variables else y_dim)
    else:
        (x_dim,) = plot_dims
        axes.plot(_axis_values(da, x_dim, axes.set_xticks), values)
        axes.set_xlabel(_label(ds[x_dim], x_dim) if x_dim in ds.variables else x_dim)
        axes.set_ylabel(units_label or name)
    if values.mask.all():
        when = f"{when}; all values missing" if when else "all values missing"
    axes.set_title(long_name + (f"\n{when}" if when else ""), fontsize=10)
    metadata = {
        "Title": long_name,
        "Description": f"arcoforge quicklook of variable {name!r}" + (f" at {when}" if when else ""),
        "Software": "arcoforge",
    }
    png = BytesIO()
    figure.savefig(png, format="png", metadata=metadata)
    FsspecStacIO(storage_options).write_bytes(path, png.getvalue())
    logger.info("quicklook of %r written to %s", name, path)
    return path

