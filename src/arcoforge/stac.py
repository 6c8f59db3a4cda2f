"""STAC for every store: a Collection per Zarr store, a root Catalog, offline validation.

:func:`build_collection` describes one store as a STAC 1.1.0 Collection built
with pystac: extents from the data's CF coordinates, the datacube extension
(``cube:dimensions``, ``cube:variables``), and one ``zarr`` asset carrying the
zarr extension fields and the keyword arguments that open it with xarray.
:func:`write_collection` writes it as ``<root>/stac/<id>/collection.json``
beside a quicklook PNG and links it from ``<root>/stac/catalog.json``.
:func:`validate_stac_file` (from :mod:`arcoforge.stac_validation`) checks a
document against the official JSON schemas shipped with arcoforge, offline.
:func:`open_dataset_from_collection`
is the scientist's path back from the document to the data.

Everything here is a plain function (no Beam), so it runs after a bake or on
any existing store. Secrets never reach a document: storage options and URLs
are stripped of anything credential-like before they are written.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import logging
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import xarray as xr

from .stac_validation import (  # noqa: F401  (re-exported: arcoforge.stac.validate_stac_file etc.)
    SCHEMAS_ENV,
    default_schemas_dir,
    schema_urls,
    validate_stac,
    validate_stac_file,
    validate_stac_tree,
)

logger = logging.getLogger(__name__)

STAC_VERSION = "1.1.0"
DATACUBE_EXTENSION = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
ZARR_EXTENSION = "https://stac-extensions.github.io/zarr/v1.0.0/schema.json"
ZARR_MEDIA_TYPE = "application/vnd.zarr"
ZARR_ASSET_KEY = "zarr"
# Asset field holding the keyword arguments of ``xarray.open_zarr``. A plain field: the zarr
# extension forbids unknown ``zarr:`` fields, and ``xarray:open_kwargs`` belongs to the
# deprecated xarray-assets extension.
OPEN_KWARGS_FIELD = "open_kwargs"
PROVENANCE_FIELD = "arcoforge:provenance"
QUICKLOOK_NAME = "quicklook.png"
CATALOG_NAME = "catalog.json"
COLLECTION_NAME = "collection.json"
STAC_FOLDER = "stac"
GLOBAL_BBOX = [-180.0, -90.0, 180.0, 90.0]
# cube:dimensions lists values of an irregular dimension up to this many; beyond, only its extent.
MAX_LISTED_VALUES = 100
PROVIDER_ROLES = ("producer", "licensor", "processor", "host")
_LICENSE_PATTERN = re.compile(r"^[\w\-\.\+]+$")


# ---------------------------------------------------------------------------------------------
# Secrets


def public_storage_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options safe to publish: only keys known to be harmless (see :mod:`arcoforge.redaction`).

    >>> public_storage_options({"anon": False, "key": "AKIA", "pwd": "s",
    ...                         "client_kwargs": {"endpoint_url": "http://h:9000", "aws_session_token": "t"}})
    {'anon': False, 'client_kwargs': {'endpoint_url': 'http://h:9000'}}
    """
    from .io.redaction import public_options

    return public_options(storage_options)


def public_url(url: str) -> str:
    """``url`` without user info or query string (see :func:`arcoforge.redaction.public_url`).

    >>> public_url("https://user:pw@host.org/x.zarr?sig=abc&version=2")
    'https://host.org/x.zarr#q2e0c93214c'
    """
    from .io.redaction import public_url as public

    return public(url)


# ---------------------------------------------------------------------------------------------
# Finding CF coordinates


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


def _is_time_like(values: Any) -> bool:
    """Whether an array holds dates: numpy datetime64, or cftime objects."""
    array = np.asarray(values)
    if array.dtype.kind == "M":
        return True
    if array.dtype.kind == "O" and array.size:
        import cftime

        first = next((v for v in array.flat if v is not None), None)
        return isinstance(first, cftime.datetime)
    return False


def _variable_is_time_like(da: xr.DataArray) -> bool:
    if da.dtype.kind == "M":
        return True
    if da.dtype.kind != "O" or da.size == 0:
        return False
    return _is_time_like(da[(0,) * da.ndim].values)


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
    bounds = _bounds_variables(ds)
    latitude = _pick(ds, (n for n in found.get("latitude", []) if n not in bounds))
    longitude = _pick(ds, (n for n in found.get("longitude", []) if n not in bounds))
    time_names = found.get("time", []) + ds.cf.axes.get("T", []) + [str(n) for n in ds.coords if ds[n].ndim == 1]
    time = _pick(ds, (n for n in time_names
                      if n in ds.variables and n not in bounds and _variable_is_time_like(ds[n])))
    if (latitude is None) != (longitude is None) or (
        latitude is not None and longitude is not None and ds[latitude].ndim != ds[longitude].ndim
    ):
        logger.warning(
            "%s: latitude %r and longitude %r do not form a grid; the spatial extent is global",
            _describe(ds), latitude, longitude,
        )
        latitude = longitude = None
    return CFCoordinates(latitude=latitude, longitude=longitude, time=time)


def _bounds_variables(ds: xr.Dataset) -> set[str]:
    """Variables named by another variable's ``bounds`` or ``climatology`` attribute."""
    names = set()
    for variable in ds.variables.values():
        for key in ("bounds", "climatology"):
            value = variable.attrs.get(key)
            if isinstance(value, str) and value in ds.variables:
                names.add(value)
    return names


def _describe(ds: xr.Dataset) -> str:
    source = ds.encoding.get("source")
    return f"store {source}" if source else "dataset"


# ---------------------------------------------------------------------------------------------
# Extents


def _number(value: Any) -> float | int | None:
    """A JSON number with at most 12 significant digits, or None when not finite."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)
    if not np.isfinite(number):
        return None
    return float(f"{number:.12g}")


def longitude_interval(values: Any) -> tuple[float, float] | None:
    """West and east bounds of longitudes in degrees east, in -180..180.

    Longitudes in 0..360 are converted, and the interval is the shortest arc
    holding every value; one that crosses the antimeridian has west > east, as
    STAC bounding boxes do.

    >>> longitude_interval([0.0, 360.0])
    (-180.0, 180.0)
    >>> longitude_interval([0.0, 90.0, 357.5])
    (-2.5, 90.0)
    >>> longitude_interval(np.arange(0.0, 360.0, 2.5))
    (-180.0, 177.5)
    >>> longitude_interval([160.0, 170.0, 190.0, 200.0])
    (160.0, -160.0)
    >>> longitude_interval([-10.5, 20.0])
    (-10.5, 20.0)
    """
    array = np.asarray(values, dtype="f8").ravel()
    array = array[np.isfinite(array)]
    if array.size == 0:
        return None
    if array.max() - array.min() >= 360.0:
        return (-180.0, 180.0)
    wrapped = np.unique((array + 180.0) % 360.0 - 180.0)
    if wrapped.size == 1:
        return (float(wrapped[0]), float(wrapped[0]))
    gaps = np.diff(wrapped)
    largest = int(np.argmax(gaps))
    wrap_gap = wrapped[0] + 360.0 - wrapped[-1]
    if gaps[largest] <= wrap_gap:
        return (float(wrapped[0]), float(wrapped[-1]))
    west, east = float(wrapped[largest + 1]), float(wrapped[largest])
    if east == -180.0:  # the data ends exactly at the antimeridian: no crossing
        east = 180.0
    if west > east and (west - east) < 1e-9:
        return (-180.0, 180.0)
    return (west, east)


def _extent_values(ds: xr.Dataset, name: str) -> np.ndarray:
    """The values of a coordinate, and of its cell bounds when it names some."""
    values = [np.asarray(ds[name].values, dtype="f8").ravel()]
    bounds = ds[name].attrs.get("bounds")
    if isinstance(bounds, str) and bounds in ds.variables:
        values.append(np.asarray(ds[bounds].values, dtype="f8").ravel())
    return np.concatenate(values)


def spatial_bbox(ds: xr.Dataset, coords: CFCoordinates | None = None) -> list[float]:
    """``[west, south, east, north]`` of the data in degrees, from its latitude/longitude.

    Cell bounds are used when the coordinates name them, cell centres otherwise.
    Without recognisable latitude/longitude the box is global (with a warning).
    """
    coords = coords or find_coordinates(ds)
    if coords.latitude is None or coords.longitude is None:
        logger.warning(
            "%s has no latitude/longitude recognisable by CF attributes "
            "(standard_name latitude/longitude or units degrees_north/degrees_east); "
            "the STAC spatial extent is global",
            _describe(ds),
        )
        return list(GLOBAL_BBOX)
    lat = _extent_values(ds, coords.latitude)
    lat = lat[np.isfinite(lat)]
    lon = longitude_interval(_extent_values(ds, coords.longitude))
    if lat.size == 0 or lon is None:
        logger.warning("%s: latitude %r or longitude %r holds no finite value; the STAC spatial extent is global",
                       _describe(ds), coords.latitude, coords.longitude)
        return list(GLOBAL_BBOX)
    south, north = float(np.clip(lat.min(), -90, 90)), float(np.clip(lat.max(), -90, 90))
    return [_number(lon[0]), _number(south), _number(lon[1]), _number(north)]  # type: ignore[list-item]


def to_utc_datetime(value: Any) -> dt.datetime | None:
    """A timezone-aware UTC datetime for a numpy datetime64 or cftime date, or None.

    Dates of non-standard calendars keep their labels; a day past the end of a
    real month (30 February of a 360-day calendar) becomes that month's last day.
    Years outside 1..9999 cannot be written as RFC 3339 and give None.

    >>> to_utc_datetime(np.datetime64("2000-02-24T12:00"))
    datetime.datetime(2000, 2, 24, 12, 0, tzinfo=datetime.timezone.utc)
    >>> import cftime
    >>> to_utc_datetime(cftime.Datetime360Day(2001, 2, 30)).isoformat()
    '2001-02-28T00:00:00+00:00'
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if value is None:
        return None
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        item = np.datetime64(value, "us").item()
        return item.replace(tzinfo=dt.timezone.utc) if isinstance(item, dt.datetime) else None
    if isinstance(value, dt.datetime) and not hasattr(value, "calendar"):
        return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    year, month, day = int(value.year), int(value.month), int(value.day)
    if not 1 <= year <= 9999:
        return None
    day = min(day, calendar.monthrange(year, month)[1])
    return dt.datetime(year, month, day, int(value.hour), int(value.minute), int(value.second),
                       int(getattr(value, "microsecond", 0)), tzinfo=dt.timezone.utc)


def _iso(value: dt.datetime | None) -> str | None:
    return pystac.utils.datetime_to_str(value) if value is not None else None


def _time_values(ds: xr.Dataset, name: str) -> np.ndarray:
    values = np.asarray(ds[name].values).ravel()
    if values.dtype.kind == "M":
        return values[~np.isnat(values)]
    return np.array([v for v in values if v is not None], dtype=object)


def temporal_interval(ds: xr.Dataset, coords: CFCoordinates | None = None) -> list[dt.datetime | None]:
    """``[start, end]`` of the time coordinate in UTC; ``[None, None]`` (with a warning) without one."""
    coords = coords or find_coordinates(ds)
    if coords.time is None:
        logger.warning("%s has no time coordinate recognisable by CF attributes or decoded dates; "
                       "the STAC temporal extent is an open interval", _describe(ds))
        return [None, None]
    values = _time_values(ds, coords.time)
    if values.size == 0:
        logger.warning("%s: time coordinate %r holds no date; the STAC temporal extent is open",
                       _describe(ds), coords.time)
        return [None, None]
    start, end = to_utc_datetime(values.min()), to_utc_datetime(values.max())
    if start is None or end is None:
        logger.warning("%s: time coordinate %r has dates outside years 1..9999; that end of the interval is open",
                       _describe(ds), coords.time)
    return [start, end]


def iso_duration(values: Sequence[Any]) -> str | None:
    """The ISO 8601 duration between regularly spaced dates, or None if irregular.

    Calendar months and years count as regular (``P1M``, ``P1Y``) whatever the
    number of days in them.

    >>> iso_duration(np.array(["2000-01-01", "2000-01-02", "2000-01-03"], dtype="datetime64[ns]"))
    'P1D'
    >>> iso_duration(np.array(["2000-01-01", "2000-02-01", "2000-03-01"], dtype="datetime64[ns]"))
    'P1M'
    >>> iso_duration(np.array(["2000-01-01T00", "2000-01-01T06", "2000-01-01T12"], dtype="datetime64[ns]"))
    'PT6H'
    """
    values = np.asarray(values)
    if values.size < 2:
        return None
    if values.dtype.kind == "M":
        steps = {int(s) for s in np.diff(values.astype("datetime64[us]")).astype("int64")}
        labels = [_labels(v) for v in values.astype("datetime64[us]").tolist()]
    else:
        steps = {round((b - a).total_seconds() * 1e6) for a, b in zip(values[:-1], values[1:])}
        labels = [_labels(v) for v in values]
    if all(label is not None for label in labels):
        months = {(b[0] * 12 + b[1]) - (a[0] * 12 + a[1]) for a, b in zip(labels[:-1], labels[1:])}
        same_day = len({label[2:] for label in labels}) == 1
        if len(months) == 1 and same_day:
            (months_step,) = months
            if months_step > 0:
                return f"P{months_step // 12}Y" if months_step % 12 == 0 else f"P{months_step}M"
    if len(steps) == 1:
        (step,) = steps
        return _format_duration(step / 1e6) if step > 0 else None
    return None


def _labels(value: Any) -> tuple[int, ...] | None:
    if not hasattr(value, "year"):
        return None
    return (value.year, value.month, value.day, value.hour, value.minute, value.second,
            getattr(value, "microsecond", 0))


def _format_duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    secs_total = secs + (seconds - whole)
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (
        f"{secs_total:g}S" if secs_total else "")
    return "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")


# ---------------------------------------------------------------------------------------------
# Datacube extension


def _description(attrs: Mapping[str, Any]) -> str | None:
    for key in ("long_name", "standard_name", "description"):
        value = attrs.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _numeric_dimension(values: np.ndarray) -> dict[str, Any] | None:
    """extent, and step (regular) or values (few), of a numeric 1-D coordinate."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return None
    info: dict[str, Any] = {"extent": [_number(finite.min()), _number(finite.max())]}
    if values.size > 1 and finite.size == values.size:
        steps = np.diff(values.astype("f8"))
        if steps[0] != 0 and np.allclose(steps, steps[0], rtol=1e-6, atol=0):
            info["step"] = _number(steps[0])
            return info
        if values.size <= MAX_LISTED_VALUES:
            info["values"] = [_number(v) for v in values]
        info["step"] = None
    return info


def _index_dimension(size: int, description: str) -> dict[str, Any]:
    return {"type": "other", "extent": [0, max(size - 1, 0)], "step": 1, "description": description}


def _temporal_dimension(ds: xr.Dataset, name: str) -> dict[str, Any]:
    values = _time_values(ds, name)
    start, end = (to_utc_datetime(values.min()), to_utc_datetime(values.max())) if values.size else (None, None)
    info: dict[str, Any] = {"type": "temporal", "extent": [_iso(start), _iso(end)]}
    description = _description(ds[name].attrs)
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
        listed = [_iso(to_utc_datetime(v)) for v in values]
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
    description = _description(ds[name].attrs)
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
        elif dim == coords.time or _variable_is_time_like(ds[dim]):
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
    description = _description(ds[dim].attrs)
    if description:
        info["description"] = description
    return info


def cube_variables(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """``cube:variables``: data variables, and auxiliary ones (non-dimension coordinates, cell bounds).

    Each gives its dimensions, ``unit`` (CF ``units``) and ``description``
    (``long_name``, ``standard_name`` or ``description``).
    """
    bounds = _bounds_variables(ds)
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
        description = _description(variable.attrs)
        if description:
            info["description"] = description
        variables[name] = info
    return variables


# ---------------------------------------------------------------------------------------------
# Descriptive metadata (feedstock meta.yaml) and provenance


def read_meta_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A pangeo-forge feedstock ``meta.yaml`` as a dict (for ``build_collection(metadata=...)``)."""
    import yaml

    with open(path, encoding="utf-8") as file:
        meta = yaml.safe_load(file) or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a mapping at the top of meta.yaml, got {type(meta).__name__}")
    return meta


def _license(value: Any, links: list[pystac.Link]) -> str:
    if value is None or not str(value).strip():
        logger.warning("no license given (meta.yaml provenance.license or license=...); the collection says 'other'")
        return "other"
    text = str(value).strip()
    if _LICENSE_PATTERN.match(text):
        return text
    if re.match(r"^https?://", text):
        links.append(pystac.Link("license", text, title="License"))
        return "other"
    logger.warning("license %r is not an SPDX identifier; the collection says 'other'", text)
    return "other"


def _providers(value: Any) -> list[pystac.Provider]:
    providers = []
    for index, entry in enumerate(value or []):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not str(entry.get("name") or "").strip():
            logger.warning("provider #%d %r has no name; it is left out", index, entry)
            continue
        roles = entry.get("roles") or []
        roles = [roles] if isinstance(roles, str) else list(roles)
        bad = [r for r in roles if r not in PROVIDER_ROLES]
        if bad:
            logger.warning("provider %r: roles %s are not STAC roles %s; they are left out",
                           entry["name"], bad, list(PROVIDER_ROLES))
        providers.append(pystac.Provider(
            name=str(entry["name"]).strip(),
            description=str(entry["description"]) if entry.get("description") else None,
            roles=[pystac.ProviderRole(r) for r in roles if r in PROVIDER_ROLES] or None,
            url=str(entry["url"]) if entry.get("url") else None,
        ))
    return providers


def _keywords(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    keywords = [str(v).strip() for v in value if str(v).strip()]
    return keywords or None


def provenance(
    *,
    recipe_file: str | os.PathLike | None = None,
    recipe_source: str | bytes | None = None,
    pattern: Any = None,
    n_inputs: int | None = None,
    recipe_id: str | None = None,
    bake_time: dt.datetime | None = None,
) -> dict[str, Any]:
    """Where a store came from, as a flat JSON-ready dict (for STAC and for store attributes).

    Keys: ``recipe_id``, ``recipe_sha256`` (of the recipe file's bytes, or of
    ``recipe_source``), ``pattern_sha256`` (:meth:`FilePattern.sha256`, which
    leaves secrets out), ``n_inputs`` (defaults to the pattern's length),
    ``arcoforge_version``, ``xarray_version``, ``zarr_version`` and ``bake_time``
    (UTC, RFC 3339; now when not given). Unknown items are left out.
    """
    import zarr

    from . import __version__

    result: dict[str, Any] = {}
    if recipe_id is not None:
        result["recipe_id"] = str(recipe_id)
    if recipe_file is not None:
        result["recipe_sha256"] = hashlib.sha256(Path(recipe_file).read_bytes()).hexdigest()
    elif recipe_source is not None:
        source = recipe_source.encode() if isinstance(recipe_source, str) else recipe_source
        result["recipe_sha256"] = hashlib.sha256(source).hexdigest()
    if pattern is not None:
        result["pattern_sha256"] = pattern.sha256().hex()
        if n_inputs is None:
            n_inputs = len(pattern)
    if n_inputs is not None:
        result["n_inputs"] = int(n_inputs)
    result["arcoforge_version"] = __version__
    result["xarray_version"] = xr.__version__
    result["zarr_version"] = zarr.__version__
    when = bake_time or dt.datetime.now(dt.timezone.utc)
    when = when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)
    result["bake_time"] = pystac.utils.datetime_to_str(when)
    return result


def provenance_attrs(record: Mapping[str, Any], prefix: str = "arcoforge_") -> dict[str, Any]:
    """A provenance dict as flat global attributes (``arcoforge_recipe_sha256``, ...) for a store.

    >>> provenance_attrs({"n_inputs": 3, "bake_time": "2026-01-01T00:00:00Z"})
    {'arcoforge_n_inputs': 3, 'arcoforge_bake_time': '2026-01-01T00:00:00Z'}
    """
    return {f"{prefix}{key}": value for key, value in record.items()}


# ---------------------------------------------------------------------------------------------
# The Collection


@dataclass(frozen=True)
class ZarrStoreInfo:
    """What the zarr extension says about a store: format, consolidation, root node type."""

    zarr_format: int
    consolidated: bool
    node_type: str = "group"


def inspect_zarr_store(url: str, storage_options: dict | None = None) -> ZarrStoreInfo:
    """Read the root metadata of a Zarr store (v2 or v3) at a path or fsspec URL."""
    import zarr

    from .writers import open_store

    try:
        group = zarr.open_group(store=open_store(url, storage_options, read_only=True), mode="r")
    except Exception as error:
        raise ValueError(f"{public_url(url)} is not a readable Zarr group: {type(error).__name__}: {error}") from error
    consolidated = group.metadata.consolidated_metadata is not None
    return ZarrStoreInfo(zarr_format=int(group.metadata.zarr_format), consolidated=consolidated)


def open_store_dataset(url: str, storage_options: dict | None = None, consolidated: bool | None = None) -> xr.Dataset:
    """The store opened with xarray, lazily (as ``xarray.open_zarr`` does)."""
    from .writers import open_store

    ds = xr.open_zarr(open_store(url, storage_options, read_only=True), consolidated=consolidated)
    ds.encoding.setdefault("source", public_url(url))
    return ds


def _absolute_href(url: str) -> str:
    if "://" in url:
        return url
    return os.path.abspath(url)


def _check_collection_id(collection_id: str) -> str:
    text = str(collection_id).strip()
    if not text or text in (".", "..") or "/" in text or "\\" in text:
        raise ValueError(
            f"collection id {collection_id!r} cannot name a folder of the STAC catalog; "
            "expected a non-empty recipe id without '/'"
        )
    return text


def build_collection(
    store_url: str | os.PathLike,
    collection_id: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    storage_options: dict | None = None,
    provenance: Mapping[str, Any] | None = None,
    dataset: xr.Dataset | None = None,
    title: str | None = None,
    description: str | None = None,
    license: str | None = None,
    providers: Sequence[Mapping[str, Any] | str] | None = None,
    keywords: Sequence[str] | str | None = None,
) -> pystac.Collection:
    """A STAC 1.1.0 Collection describing the Zarr store at ``store_url``.

    ``collection_id`` is the recipe id. ``title``, ``description``, ``license``,
    ``providers`` and ``keywords`` come from the keyword arguments, else from a
    feedstock ``meta.yaml`` dict (``title``, ``description``,
    ``provenance.license``, ``provenance.providers``, ``keywords``/``tags``), else
    from the store's global attributes. ``storage_options`` open the store; only
    their non-secret part is written, into the asset's ``open_kwargs``.
    ``dataset`` may be given when the store is already open.
    """
    collection_id = _check_collection_id(collection_id)
    store_url = str(store_url)
    meta = dict(metadata or {})
    meta_provenance = meta.get("provenance") if isinstance(meta.get("provenance"), Mapping) else {}
    info = inspect_zarr_store(store_url, storage_options)
    ds = dataset if dataset is not None else open_store_dataset(store_url, storage_options, info.consolidated)

    coords = find_coordinates(ds)
    bbox = spatial_bbox(ds, coords)
    interval = temporal_interval(ds, coords)
    extra_links: list[pystac.Link] = []
    license_id = _license(license if license is not None else meta_provenance.get("license", meta.get("license")),
                          extra_links)
    title = title or meta.get("title") or ds.attrs.get("title") or collection_id
    description = (description or meta.get("description") or ds.attrs.get("summary")
                   or ds.attrs.get("description") or ds.attrs.get("comment")
                   or f"Zarr store {collection_id!r} written by arcoforge.")
    collection = pystac.Collection(
        id=collection_id,
        title=str(title),
        description=str(description).strip(),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval])),
        license=license_id,
        providers=_providers(providers if providers is not None else meta_provenance.get("providers")) or None,
        keywords=_keywords(keywords if keywords is not None else meta.get("keywords", meta.get("tags"))),
    )
    for link in extra_links:
        collection.add_link(link)

    from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable

    cube = DatacubeExtension.ext(collection, add_if_missing=True)
    cube.apply(
        dimensions={name: Dimension(props) for name, props in cube_dimensions(ds, coords).items()},
        variables={name: Variable(props) for name, props in cube_variables(ds).items()},
    )
    # Declare the datacube version whose schema we validate with, whichever one this pystac writes.
    collection.stac_extensions = [url for url in collection.stac_extensions if "/datacube/" not in url]
    collection.stac_extensions.append(DATACUBE_EXTENSION)

    href = public_url(_absolute_href(store_url))
    open_kwargs: dict[str, Any] = {"consolidated": info.consolidated, "zarr_format": info.zarr_format}
    public_options = public_storage_options(storage_options)
    if public_options and "://" in href and not href.startswith("file://"):
        open_kwargs["storage_options"] = public_options
    collection.add_asset(ZARR_ASSET_KEY, pystac.Asset(
        href=href,
        title=f"Zarr store {href.rstrip('/').rsplit('/', 1)[-1]}",
        description="Open with xarray.open_zarr(href, **open_kwargs).",
        media_type=ZARR_MEDIA_TYPE,
        roles=["data"],
        extra_fields={
            "zarr:zarr_format": info.zarr_format,
            "zarr:consolidated": info.consolidated,
            "zarr:node_type": info.node_type,
            OPEN_KWARGS_FIELD: open_kwargs,
        },
    ))
    if ZARR_EXTENSION not in collection.stac_extensions:
        collection.stac_extensions.append(ZARR_EXTENSION)
    if provenance:
        collection.extra_fields[PROVENANCE_FIELD] = dict(provenance)
    return collection


# ---------------------------------------------------------------------------------------------
# Quicklook


def main_variable(ds: xr.Dataset) -> str | None:
    """The variable a quicklook shows: the first numeric data variable spanning the horizontal grid.

    Without latitude/longitude, the first numeric data variable of two or more
    dimensions, else of one; None when there is none.
    """
    bounds = _bounds_variables(ds)
    numeric = [str(n) for n, v in ds.data_vars.items()
               if v.dtype.kind in "biuf" and v.ndim >= 1 and str(n) not in bounds]
    horizontal = set(find_coordinates(ds).horizontal_dims(ds))
    for rule in (lambda v: horizontal and horizontal <= set(v.dims), lambda v: v.ndim >= 2, lambda v: True):
        for name in numeric:
            if rule(ds[name]):
                return name
    return None


def _label(da: xr.DataArray, fallback: str) -> str:
    name = _description(da.attrs) or fallback
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
        logger.warning("%s has no numeric data variable to draw; no quicklook is written", _describe(ds))
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
    long_name = _description(ds[name].attrs) or name
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
    fs, fs_path = _json_filesystem(path, storage_options)
    fs.makedirs(fs._parent(fs_path), exist_ok=True)
    with fs.open(fs_path, "wb") as file:
        figure.savefig(file, format="png", metadata=metadata)
    logger.info("quicklook of %r written to %s", name, path)
    return path


# ---------------------------------------------------------------------------------------------
# Writing the catalog tree


def _join(root: str | os.PathLike, *parts: str) -> str:
    root = str(root)
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def _json_filesystem(path: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The filesystem and path of a STAC document; options apply to remote URLs only."""
    from .io.filesystems import filesystem, options_for

    return filesystem(str(path), options_for(str(path), storage_options))


def _write_json(path: str, document: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> None:
    """Write JSON at a path or fsspec URL (with ``storage_options``); local files are replaced atomically."""
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    fs, fs_path = _json_filesystem(path, storage_options)
    fs.makedirs(fs._parent(fs_path), exist_ok=True)
    if "://" not in str(path) or str(path).startswith("file://"):
        tmp = f"{fs_path}.tmp-{os.getpid()}"
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, fs_path)
    else:
        fs.pipe_file(fs_path, text.encode("utf-8"))


def _read_json(path: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON object at a path or fsspec URL (read with ``storage_options``), or None if there is none."""
    fs, fs_path = _json_filesystem(path, storage_options)
    if not fs.exists(fs_path):
        return None
    try:
        document = json.loads(fs.cat_file(fs_path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(document).__name__}")
    return document


def _normalize_relative(href: str) -> str:
    return href[2:] if href.startswith("./") else href


def update_catalog(
    catalog_path: str,
    collection: pystac.Collection | Mapping[str, Any],
    *,
    catalog_id: str = "arcoforge",
    title: str = "arcoforge stores",
    description: str = "Zarr stores baked by arcoforge, one STAC Collection each.",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Link ``collection`` from the root catalog at ``catalog_path``, creating it if needed.

    ``collection`` is a pystac Collection or its dict (a collection.json read
    back). The child link of a collection already listed is replaced where it
    stands, so re-running a recipe updates its entry instead of adding a
    duplicate. Returns the catalog as written.
    """
    if isinstance(collection, pystac.Collection):
        collection_id, collection_title = collection.id, collection.title
    else:
        collection_id, collection_title = str(collection["id"]), collection.get("title")
    existing = _read_json(catalog_path, storage_options)
    if existing is not None and existing.get("type") != "Catalog":
        raise ValueError(f"{catalog_path} is a {existing.get('type')!r} document, expected a STAC Catalog")
    catalog = (pystac.Catalog.from_dict(existing, migrate=False, preserve_dict=True) if existing
               else pystac.Catalog(id=catalog_id, description=description, title=title))
    child_href = f"./{collection_id}/{COLLECTION_NAME}"
    child = pystac.Link("child", child_href, media_type=pystac.MediaType.JSON, title=collection_title or collection_id)
    links = [link for link in catalog.links if link.rel not in ("self", "root")]
    for position, link in enumerate(links):
        href = _normalize_relative(str(link.get_href(transform_href=False)))
        if link.rel == "child" and href == _normalize_relative(child_href):
            links[position] = child
            break
    else:
        links.append(child)
    catalog.links = [pystac.Link("root", f"./{CATALOG_NAME}", media_type=pystac.MediaType.JSON)] + links
    document = catalog.to_dict(include_self_link=False, transform_hrefs=False)
    _write_json(catalog_path, document, storage_options)
    return document


def write_collection(
    collection: pystac.Collection,
    output_root: str | os.PathLike,
    *,
    dataset: xr.Dataset | None = None,
    storage_options: dict | None = None,
    quicklook: bool = True,
    quicklook_variable: str | None = None,
    catalog: bool = True,
    **catalog_fields: str,
) -> str:
    """Write ``<output_root>/stac/<id>/collection.json`` (+ quicklook) and link it from the root catalog.

    The quicklook is drawn from ``dataset``, or from the store the collection's
    zarr asset points to, opened with ``storage_options`` (which may hold
    credentials: they are used, never written). It is linked as ``rel: preview``
    (see docs/stac.md for why not as an asset). Links are relative, so the
    ``stac`` folder is self-contained and can be moved. With ``catalog=False``
    the root catalog is left to the caller (:func:`update_catalog`), e.g. to
    update it from one process; ``catalog_fields`` (``catalog_id``, ``title``,
    ``description``) apply when the catalog is new. Returns the collection's path.
    """
    from .names import safe_relative_path

    collection = collection.clone()
    stac_root = _join(output_root, STAC_FOLDER)
    folder = _join(stac_root, safe_relative_path(collection.id, "collection id", single_segment=True))
    collection.links = [link for link in collection.links if link.rel not in ("self", "root", "parent", "preview")]
    collection.add_link(pystac.Link("root", f"../{CATALOG_NAME}", media_type=pystac.MediaType.JSON))
    collection.add_link(pystac.Link("parent", f"../{CATALOG_NAME}", media_type=pystac.MediaType.JSON))
    if quicklook:
        if dataset is None:
            asset = collection.assets.get(ZARR_ASSET_KEY)
            if asset is None:
                raise ValueError(
                    f"collection {collection.id!r} has no {ZARR_ASSET_KEY!r} asset to draw a quicklook from")
            consolidated = asset.extra_fields.get("zarr:consolidated")
            dataset = open_store_dataset(asset.href, storage_options, consolidated)
        written = write_quicklook(dataset, _join(folder, QUICKLOOK_NAME), variable=quicklook_variable,
                                  storage_options=storage_options)
        if written:
            variable = quicklook_variable or main_variable(dataset)
            collection.add_link(pystac.Link("preview", f"./{QUICKLOOK_NAME}", media_type=pystac.MediaType.PNG,
                                            title=f"Quicklook of {variable}"))
    path = _join(folder, COLLECTION_NAME)
    _write_json(path, collection.to_dict(include_self_link=False, transform_hrefs=False), storage_options)
    if catalog:
        update_catalog(_join(stac_root, CATALOG_NAME), collection, storage_options=storage_options, **catalog_fields)
    logger.info("STAC collection %r written to %s", collection.id, path)
    return path


def collection_id_for(store_url: str) -> str:
    """The default collection id of a store: its name without ``.zarr``.

    >>> collection_id_for("s3://bucket/out/daily-sst.zarr/")
    'daily-sst'
    """
    name = str(store_url).rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".zarr")] if name.endswith(".zarr") else name


def write_store_collection(
    store_url: str,
    output_root: str,
    *,
    collection_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    storage_options: dict | None = None,
    provenance: Mapping[str, Any] | None = None,
    schemas_dir: str | os.PathLike | None = None,
    quicklook: bool = True,
    update_catalog: bool = True,
) -> str:
    """Build, write and validate the collection of one finished store.

    What ``arcoforge bake`` and :class:`~arcoforge.transforms.WriteSTAC` do per
    store. Validation is offline, against ``schemas_dir``, else
    ``$ARCOFORGE_STAC_SCHEMAS``, else the schemas shipped with arcoforge. An invalid
    document is an :class:`~arcoforge.errors.ArcoforgeError` naming the failing fields.
    Returns the collection's path.
    """
    from .errors import ArcoforgeError

    record = dict(provenance or {})
    dataset = open_store_dataset(store_url, storage_options)
    for key in ("n_inputs", "bake_time", "recipe_sha256", "pattern_sha256"):
        stored = dataset.attrs.get(f"arcoforge_{key}")
        if stored is not None:
            record.setdefault(key, stored.item() if hasattr(stored, "item") else stored)
    collection = build_collection(
        store_url,
        collection_id or collection_id_for(store_url),
        metadata=metadata,
        storage_options=storage_options,
        provenance=record or None,
        dataset=dataset,
    )
    path = write_collection(collection, output_root, dataset=dataset, storage_options=storage_options,
                            quicklook=quicklook, catalog=update_catalog)
    errors = validate_stac_file(path, schemas_dir, storage_options)
    if update_catalog:
        errors += validate_stac_file(_join(output_root, STAC_FOLDER, CATALOG_NAME), schemas_dir, storage_options)
    if errors:
        raise ArcoforgeError("STAC documents do not validate: " + "; ".join(errors))
    return path


def link_collection(output_root: str, collection_path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Link a written collection from ``<output_root>/stac/catalog.json``."""
    document = _read_json(collection_path, storage_options)
    if document is None:
        raise ValueError(f"{collection_path}: no such collection")
    return update_catalog(_join(output_root, STAC_FOLDER, CATALOG_NAME), document, storage_options=storage_options)


# ---------------------------------------------------------------------------------------------
# The scientist's path


def _resolve_href(href: str, document_path: str | None) -> str:
    """An asset or link href made usable: relative ones are taken relative to the document."""
    if "://" in href or os.path.isabs(href) or document_path is None:
        return href
    if "://" in document_path:
        scheme, rest = document_path.split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(posixpath.dirname(rest), href))
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(document_path)), href))


def open_dataset_from_collection(
    collection: str | os.PathLike | Mapping[str, Any] | pystac.Collection,
    *,
    asset_key: str | None = None,
    storage_options: dict | None = None,
    **open_kwargs: Any,
) -> xr.Dataset:
    """Open the Zarr store a STAC Collection describes, exactly as ``xarray.open_zarr`` on the store would.

    ``collection`` is a path or URL of collection.json, its dict, or a pystac
    Collection. The asset is ``asset_key``, else the ``zarr`` asset, else the
    only asset of media type ``application/vnd.zarr``. Its ``open_kwargs``
    (``xarray:open_kwargs``/``xarray:storage_options`` of older documents too)
    are used; ``storage_options`` adds what the document may not hold, such as
    credentials; ``open_kwargs`` override.
    """
    location: str | None = None
    if isinstance(collection, pystac.Collection):
        location = collection.get_self_href()
        document = collection.to_dict(include_self_link=False)
    elif isinstance(collection, Mapping):
        document = dict(collection)
    else:
        location = str(collection)
        document = _read_json(location, storage_options)
        if document is None:
            raise FileNotFoundError(f"no STAC collection at {location}")
    name = location or f"collection {document.get('id')!r}"
    assets = document.get("assets") or {}
    if asset_key is None:
        zarr_assets = [k for k, a in assets.items() if a.get("type") in (ZARR_MEDIA_TYPE, "application/vnd+zarr")]
        asset_key = ZARR_ASSET_KEY if ZARR_ASSET_KEY in assets else (zarr_assets[0] if len(zarr_assets) == 1 else None)
        if asset_key is None:
            raise ValueError(
                f"{name}: expected one asset of type {ZARR_MEDIA_TYPE}, found {sorted(zarr_assets) or 'none'}")
    if asset_key not in assets:
        raise KeyError(f"{name} has no asset {asset_key!r}; its assets are {sorted(assets)}")
    asset = assets[asset_key]
    kwargs: dict[str, Any] = {}
    if "zarr:consolidated" in asset:
        kwargs["consolidated"] = asset["zarr:consolidated"]
    if "zarr:zarr_format" in asset:
        kwargs["zarr_format"] = asset["zarr:zarr_format"]
    kwargs.update(asset.get("xarray:open_kwargs") or {})
    if asset.get("xarray:storage_options"):
        kwargs["storage_options"] = dict(asset["xarray:storage_options"])
    kwargs.update(asset.get(OPEN_KWARGS_FIELD) or {})
    if storage_options:
        kwargs["storage_options"] = _deep_merge(kwargs.get("storage_options") or {}, storage_options)
    kwargs.update(open_kwargs)
    href = _resolve_href(str(asset["href"]), location)
    if "://" not in href or href.startswith("file://"):
        kwargs.pop("storage_options", None)  # local paths take none
    return xr.open_zarr(href, **kwargs)


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
