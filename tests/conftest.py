"""Shared fixtures: small archives generated on the fly."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path

import pytest

from arcoforge.demo import write_demo_archive
from arcoforge.stac import packaged_schemas_dir


# Modules whose module-scoped fixtures bake for all their tests (or start a cluster). Under
# `pytest -n 2` each runs on one worker (`--dist loadgroup` in pyproject.toml): split over
# two, both computed the fixture (measured: ~2 min of the suite's CPU went to the conformance
# corpus baked twice). Their tests still run beside the other modules'.
ONE_WORKER_MODULES = frozenset({"test_conformance", "test_fault_matrix", "test_state", "test_multistage_bake",
                                "test_runners", "test_dask_cluster"})


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    """The official STAC JSON schemas shipped inside the arcoforge package (laid out by URL)."""
    folder = packaged_schemas_dir()
    assert (folder / "SOURCES.md").is_file(), f"the packaged STAC schemas are missing from {folder}"
    return folder


@pytest.fixture(scope="session")
def daily_archive(tmp_path_factory) -> list[str]:
    """Twelve daily demo files on a small grid (packed int16 SST, NaN land mask, per-file epochs)."""
    directory = tmp_path_factory.mktemp("daily")
    return write_demo_archive(directory, ndays=12, nlat=12, nlon=24, start=dt.date(2000, 2, 24))


def _load_servers():
    """tests/_servers.py (real HTTP and S3 servers on 127.0.0.1), loaded once; tests are not a package."""
    name = "arcoforge_tests_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_servers.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_servers = _load_servers()
file_server, moto_endpoint, s3 = _servers.file_server, _servers.moto_endpoint, _servers.s3


@pytest.fixture
def s3_filesystem():
    """A function giving an s3fs filesystem for storage options (of the moto server)."""
    return _servers.s3_filesystem


@pytest.fixture
def private_default_cache(tmp_path, monkeypatch):
    """Inputs cached without a cache_root go to this test's folder, not the machine's temp folder."""
    monkeypatch.setenv("ARCOFORGE_CACHE_DIR", str(tmp_path / "default-cache"))
