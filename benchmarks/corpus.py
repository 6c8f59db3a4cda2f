"""The benchmark corpus: daily NetCDF4 files of two float32 variables, zlib level 4.

Fields are smooth with small-scale noise rounded to 0.01, so they compress
about as well as real analysed fields do (neither all-constant nor random).
Files are written by a pool of processes and kept between runs.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr

from arcoforge.io.atomic import replacing

START = dt.date(2001, 1, 1)


def corpus_path(directory: str | os.PathLike, day: int) -> str:
    return os.path.join(str(directory), f"day-{day:04d}.nc")


def _fields(day: int, nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    lat = np.linspace(-89.875, 89.875, nlat, dtype="float32")[:, None]
    lon = np.linspace(-179.875, 179.875, nlon, dtype="float32")[None, :]
    rng = np.random.default_rng(day)
    season = np.float32(np.cos(2 * np.pi * day / 365.0))
    base = 300.0 - 35.0 * np.abs(np.sin(np.deg2rad(lat))) + 2.0 * season * np.sign(lat)
    waves = 0.8 * np.sin(np.deg2rad(3 * lon + day)) * np.cos(np.deg2rad(2 * lat))
    temperature = np.round(base + waves + rng.normal(0, 0.05, (nlat, nlon)), 2).astype("float32")
    wind = np.round(5 + 3 * np.cos(np.deg2rad(lon - day)) * np.sin(np.deg2rad(4 * lat))
                    + rng.normal(0, 0.2, (nlat, nlon)), 2).astype("float32")
    return temperature, wind


def write_day(directory: str, day: int, nlat: int, nlon: int, hdf5_chunks: tuple | None = None) -> str:
    path = corpus_path(directory, day)
    if os.path.exists(path):
        return path
    temperature, wind = _fields(day, nlat, nlon)
    date = START + dt.timedelta(days=day)
    ds = xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), temperature[None], {"units": "K", "standard_name": "air_temperature"}),
            "wind_speed": (("time", "lat", "lon"), wind[None], {"units": "m s-1", "standard_name": "wind_speed"}),
        },
        coords={
            "time": ("time", [np.datetime64(date.isoformat(), "ns")], {"standard_name": "time"}),
            "lat": ("lat", np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat), {"units": "degrees_north"}),
            "lon": ("lon", np.linspace(-180 + 180 / nlon, 180 - 180 / nlon, nlon), {"units": "degrees_east"}),
        },
    )
    for name in ("temperature", "wind_speed"):
        ds[name].encoding.update(zlib=True, complevel=4, chunksizes=hdf5_chunks or (1, nlat, nlon),
                                 _FillValue=np.float32(np.nan))
    ds.time.encoding.update(units="days since 2001-01-01", dtype="int32")
    with replacing(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return path


def write_corpus(directory: str | os.PathLike, nfiles: int, nlat: int = 720, nlon: int = 1440,
                 processes: int = 2, hdf5_chunks: tuple | None = None) -> list[str]:
    """Write (or reuse) ``nfiles`` daily files in ``directory``; returns their paths in order.

    ``hdf5_chunks`` is the files' own chunking (default: one whole field per chunk).
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(write_day, [str(directory)] * nfiles, range(nfiles), [nlat] * nfiles,
                             [nlon] * nfiles, [hdf5_chunks] * nfiles))
