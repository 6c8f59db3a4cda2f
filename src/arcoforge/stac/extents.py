"""Extents of a dataset as STAC writes them: the bounding box, the temporal interval, ISO 8601 steps.

Owns the arithmetic of turning coordinate values into STAC numbers and dates:
longitudes wrapped to -180..180 along the shortest arc (antimeridian crossings
included), cell bounds preferred over centres, dates of any cftime calendar
turned into UTC datetimes, and regular time steps written as ISO 8601
durations (``P1D``, ``P1M``). Missing coordinates give a global box or an open
interval, with a warning, never an error.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pystac
import xarray as xr

from .coordinates import CFCoordinates, describe_source, find_coordinates

logger = logging.getLogger(__name__)

GLOBAL_BBOX = [-180.0, -90.0, 180.0, 90.0]


def json_number(value: Any) -> float | int | None:
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
            describe_source(ds),
        )
        return list(GLOBAL_BBOX)
    lat = _extent_values(ds, coords.latitude)
    lat = lat[np.isfinite(lat)]
    lon = longitude_interval(_extent_values(ds, coords.longitude))
    if lat.size == 0 or lon is None:
        logger.warning("%s: latitude %r or longitude %r holds no finite value; the STAC spatial extent is global",
                       describe_source(ds), coords.latitude, coords.longitude)
        return list(GLOBAL_BBOX)
    south, north = float(np.clip(lat.min(), -90, 90)), float(np.clip(lat.max(), -90, 90))
    return [json_number(lon[0]), json_number(south), json_number(lon[1]), json_number(north)]  # type: ignore[list-item]


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


def iso_datetime(value: dt.datetime | None) -> str | None:
    """An RFC 3339 string of a UTC datetime, as STAC writes dates; None stays None."""
    return pystac.utils.datetime_to_str(value) if value is not None else None


def time_values(ds: xr.Dataset, name: str) -> np.ndarray:
    """The dates of a time variable, flattened, without NaT or None."""
    values = np.asarray(ds[name].values).ravel()
    if values.dtype.kind == "M":
        return values[~np.isnat(values)]
    return np.array([v for v in values if v is not None], dtype=object)


def temporal_interval(ds: xr.Dataset, coords: CFCoordinates | None = None) -> list[dt.datetime | None]:
    """``[start, end]`` of the time coordinate in UTC; ``[None, None]`` (with a warning) without one."""
    coords = coords or find_coordinates(ds)
    if coords.time is None:
        logger.warning("%s has no time coordinate recognisable by CF attributes or decoded dates; "
                       "the STAC temporal extent is an open interval", describe_source(ds))
        return [None, None]
    values = time_values(ds, coords.time)
    if values.size == 0:
        logger.warning("%s: time coordinate %r holds no date; the STAC temporal extent is open",
                       describe_source(ds), coords.time)
        return [None, None]
    start, end = to_utc_datetime(values.min()), to_utc_datetime(values.max())
    if start is None or end is None:
        logger.warning("%s: time coordinate %r has dates outside years 1..9999; that end of the interval is open",
                       describe_source(ds), coords.time)
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

