"""The inputs: one file per variable and day, generated on first use (no network needed).

The sea-ice files hold concentration in percent, as several providers publish it;
the recipe's preprocessor turns it into the fraction the store holds.
"""

import datetime as dt
import os
import tempfile

from arcoforge.demo import demo_dataset, demo_days
from arcoforge.io.atomic import replacing

START = dt.date(2003, 6, 1)
NDAYS = 12
VARIABLES = {"sst": "analysed_sst", "ice": "sea_ice_fraction"}
FOLDER = os.path.join(os.environ.get("ARCOFORGE_FEEDSTOCK_DATA") or tempfile.gettempdir(),
                      "arcoforge-feedstocks", "sst-ice-merge")
DAYS = demo_days(NDAYS, START)


def path_of(variable: str, day: dt.date) -> str:
    return os.path.join(FOLDER, variable, f"{variable}_{day:%Y%m%d}.nc")


def write_day(variable: str, day: dt.date) -> None:
    ds = demo_dataset(day, nlat=30, nlon=60)[[VARIABLES[variable]]]
    if variable == "ice":
        ds["sea_ice_fraction"] = (ds["sea_ice_fraction"] * 100).astype("float32")
        ds["sea_ice_fraction"].attrs.update(units="%", long_name="sea ice area concentration",
                                            standard_name="sea_ice_area_fraction")
        ds["sea_ice_fraction"].encoding.update(dtype="float32", _FillValue=float("nan"))
    path = path_of(variable, day)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with replacing(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def ensure_archive() -> None:
    for variable in VARIABLES:
        for day in DAYS:
            if not os.path.exists(path_of(variable, day)):
                write_day(variable, day)
