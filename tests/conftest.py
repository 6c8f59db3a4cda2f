"""Shared fixtures: small archives generated on the fly."""

from __future__ import annotations

import datetime as dt

import pytest

from arcoforge.demo import write_demo_archive


@pytest.fixture(scope="session")
def daily_archive(tmp_path_factory) -> list[str]:
    """Twelve daily demo files on a small grid (packed int16 SST, NaN land mask, per-file epochs)."""
    directory = tmp_path_factory.mktemp("daily")
    return write_demo_archive(directory, ndays=12, nlat=12, nlon=24, start=dt.date(2000, 2, 24))
