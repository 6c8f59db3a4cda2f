"""Real sample archives for end-to-end tests, from PyPI sample-data packages.

``esmvaltool_sample_data`` ships small CMIP6 time series (a few grid points,
but real CF encodings, calendars and file splits); ``iris_sample_data`` ships
three monthly NEMO ocean files. Tests that need them are skipped when the
package is not installed (``pip install arcoforge[test]`` installs both).

tests/conftest.py belongs to other tests, so these fixtures live here and a test
module imports them into its namespace (see tests/test_end_to_end.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cmip6_sample_dir() -> Path:
    """Root of the CMIP6 time series shipped by ``esmvaltool_sample_data``."""
    package = pytest.importorskip(
        "esmvaltool_sample_data",
        reason="real CMIP6 sample files come from the esmvaltool-sample-data package "
        "(pip install 'arcoforge[test]')",
    )
    root = Path(package.__file__).parent / "data" / "timeseries" / "CMIP6"
    if not root.is_dir():
        pytest.skip(f"esmvaltool_sample_data has no CMIP6 time series at {root}")
    return root


@pytest.fixture(scope="session")
def cmip6_files(cmip6_sample_dir: Path):
    """``cmip6_files(glob)``: the sorted sample files whose name matches ``glob``."""

    def find(glob: str) -> list[Path]:
        files = sorted(cmip6_sample_dir.rglob(glob))
        if not files:
            pytest.skip(f"esmvaltool_sample_data has no files matching {glob!r}")
        return files

    return find


@pytest.fixture(scope="session")
def nemo_files() -> list[Path]:
    """The monthly NEMO files of ``iris_sample_data`` (stacked along ``time_counter``)."""
    package = pytest.importorskip(
        "iris_sample_data",
        reason="real NEMO sample files come from the iris-sample-data package "
        "(pip install 'arcoforge[test]')",
    )
    files = sorted((Path(package.__file__).parent / "sample_data" / "NEMO").glob("nemo_1m_*.nc"))
    if len(files) < 2:
        pytest.skip("iris_sample_data has no NEMO monthly files")
    return files
