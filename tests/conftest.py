"""Shared fixtures: small archives generated on the fly."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from arcoforge import stac
from arcoforge.demo import write_demo_archive

# The official STAC schemas, laid out by URL: shared/stac-schemas beside the repository in CI.
SCHEMAS_DIR = Path(os.environ.get(stac.SCHEMAS_ENV) or Path(__file__).parents[1].parent / "shared" / "stac-schemas")


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    if not SCHEMAS_DIR.is_dir():
        pytest.skip(f"the official STAC JSON schemas are not at {SCHEMAS_DIR}: put the shared/stac-schemas "
                    f"folder beside the repository, or point {stac.SCHEMAS_ENV} at a copy")
    return SCHEMAS_DIR


@pytest.fixture(scope="session")
def daily_archive(tmp_path_factory) -> list[str]:
    """Twelve daily demo files on a small grid (packed int16 SST, NaN land mask, per-file epochs)."""
    directory = tmp_path_factory.mktemp("daily")
    return write_demo_archive(directory, ndays=12, nlat=12, nlon=24, start=dt.date(2000, 2, 24))
