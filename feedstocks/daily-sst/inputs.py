"""Where this feedstock's inputs come from: a small daily archive generated on first use.

A real feedstock's format function points at a data provider; this one writes its
files under ``$ARCOFORGE_FEEDSTOCK_DATA`` (default: the system's temporary folder)
so that the feedstock bakes without a network.
"""

import datetime as dt
import os
import tempfile

from arcoforge.demo import demo_days, demo_path, write_demo_archive

START = dt.date(2001, 1, 1)
NDAYS = 20
FOLDER = os.path.join(os.environ.get("ARCOFORGE_FEEDSTOCK_DATA") or tempfile.gettempdir(),
                      "arcoforge-feedstocks", "daily-sst")
DAYS = demo_days(NDAYS, START)


def ensure_archive() -> str:
    """Write the daily files that are missing; returns their folder."""
    write_demo_archive(FOLDER, ndays=NDAYS, nlat=45, nlon=90, start=START)
    return FOLDER


def path_of(day: dt.date) -> str:
    return demo_path(FOLDER, day)
