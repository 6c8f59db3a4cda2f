"""End to end: real NetCDF archives -> Beam pipeline -> Zarr, checked against xarray.

Each test bakes a recipe written exactly as a user would write it::

    beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray(...) | StoreToZarr(...)

runs it with :func:`arcoforge.run_local`, and compares every value, coordinate,
attribute and decoded time of ``xr.open_zarr(store)`` with what
``xr.open_mfdataset`` makes of the same files. It then checks the store itself:
concat coordinates in one chunk, consolidated metadata, dimension names, one
time ``units`` string whatever epochs the inputs used.

The inputs are real archives from PyPI sample-data packages (see
tests/_sample_data.py): CMIP6 series from ``esmvaltool_sample_data`` with
proleptic_gregorian, 365_day and 360_day calendars, files counting time from
different epochs, leap-year daily files of different lengths; and NEMO ocean
files from ``iris_sample_data`` concatenated along ``time_counter``.

Bad inputs (a missing variable, a different grid, a file that is not NetCDF)
must fail the pipeline with a message naming the file and its pattern index,
and must not leave a store behind.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
import cftime
import numpy as np
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.store_plan import coordinate_capacity


def _load_sample_data_fixtures():
    """Import tests/_sample_data.py (tests/ is not a package and not on sys.path)."""
    name = "arcoforge_tests_sample_data"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_sample_data.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_fixtures = _load_sample_data_fixtures()
cmip6_sample_dir = _fixtures.cmip6_sample_dir
cmip6_files = _fixtures.cmip6_files
nemo_files = _fixtures.nemo_files

pytestmark = [
    # Some CMIP6 files carry attributes that xarray warns about; they are not what is tested.
    pytest.mark.filterwarnings("ignore::xarray.SerializationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

CFTIME = xr.coders.CFDatetimeCoder(use_cftime=True)
STORE_NAME = "store.zarr"


# --------------------------------------------------------------------------- helpers


def bake(
    pattern: af.FilePattern,
    target_root: Path,
    target_chunks: dict[str, int],
    zarr_format: int,
    num_workers: int = 1,
) -> Path:
    """Build the recipe the way a user writes it, run it locally, return the store path."""
    recipe = (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type)
        | af.StoreToZarr(
            target_root=str(target_root),
            store_name=STORE_NAME,
            combine_dims=pattern.combine_dim_keys,
            target_chunks=target_chunks,
            zarr_format=zarr_format,
        )
    )
    af.run_local(recipe, num_workers=num_workers)
    return target_root / STORE_NAME


def open_reference(paths: Sequence[Path], concat_dim: str, decode_times=CFTIME) -> xr.Dataset:
    """What xarray itself makes of the inputs, loaded into memory."""
    with xr.open_mfdataset(
        [str(p) for p in paths],
        engine="h5netcdf",
        combine="nested",
        concat_dim=concat_dim,
        data_vars="minimal",
        coords="minimal",
        compat="override",
        decode_times=decode_times,
    ) as ds:
        return ds.load()


def open_result(store: Path, decode_times=CFTIME) -> xr.Dataset:
    """The baked store as a user opens it (consolidated metadata required)."""
    with xr.open_zarr(store, consolidated=True, decode_times=decode_times) as ds:
        return ds.load()


def _attr_equal(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind in "fc"))
    except TypeError:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def agreed_global_attrs(paths: Sequence[Path]) -> dict:
    """Global attributes every input has with the same value (what the store keeps)."""
    attr_sets = []
    for path in paths:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            attr_sets.append(dict(ds.attrs))
    first = attr_sets[0]
    return {
        key: value
        for key, value in first.items()
        if all(key in other and _attr_equal(value, other[key]) for other in attr_sets[1:])
    }


_CALENDAR_ALIASES = {"gregorian": "standard", "365_day": "noleap", "366_day": "all_leap"}


def _calendar(name: str | None) -> str:
    """A calendar's canonical name (cftime reports ``365_day`` as ``noleap``)."""
    name = (name or "standard").lower()
    return _CALENDAR_ALIASES.get(name, name)


def _array_metadata(store: Path, name: str, zarr_format: int) -> dict:
    if zarr_format == 3:
        return json.loads((store / name / "zarr.json").read_text())
    metadata = json.loads((store / name / ".zarray").read_text())
    metadata["attributes"] = json.loads((store / name / ".zattrs").read_text())
    return metadata


def check_store_layout(
    store: Path,
    reference: xr.Dataset,
    zarr_format: int,
    concat_dim: str,
    expected_chunks: dict[str, tuple[int, ...]],
) -> None:
    """Zarr-level checks: format, consolidation, dimension names, chunking."""
    group = zarr.open_group(str(store), mode="r")
    assert group.metadata.zarr_format == zarr_format
    names = set(map(str, reference.variables))
    assert {name for name, _ in group.arrays()} == names

    # Consolidated metadata, listing every array.
    if zarr_format == 3:
        root = json.loads((store / "zarr.json").read_text())
        consolidated = root.get("consolidated_metadata")
        assert consolidated, "root zarr.json has no consolidated_metadata"
        assert set(consolidated["metadata"]) >= names
    else:
        zmetadata = store / ".zmetadata"
        assert zmetadata.is_file(), ".zmetadata is missing"
        listed = json.loads(zmetadata.read_text())["metadata"]
        assert {key.split("/")[0] for key in listed if key.endswith("/.zarray")} >= names

    for name in names:
        array = group[name]
        metadata = _array_metadata(store, name, zarr_format)
        if zarr_format == 3:
            dims = metadata.get("dimension_names")
        else:
            dims = metadata["attributes"].get("_ARRAY_DIMENSIONS")
        assert tuple(dims or ()) == reference[name].dims, f"dimension names of {name!r}"
        assert array.shape == reference[name].shape, f"shape of {name!r}"

    # The concat coordinate (and every 1-D dimension coordinate) sits in one chunk; the concat
    # coordinate's has room to append as many again (twice its length, rounded up to a power of 2).
    for name in names:
        if reference[name].dims == (name,):
            assert group[name].chunks[0] >= group[name].shape[0], f"{name!r} is not in one chunk"
    assert group[concat_dim].chunks == (coordinate_capacity(reference.sizes[concat_dim]),)

    for name, chunks in expected_chunks.items():
        assert group[name].chunks == chunks, f"chunks of {name!r}"


def check_time_variables(store: Path, result: xr.Dataset, reference: xr.Dataset) -> list[str]:
    """Each CF time variable: one units string, same calendar, same decoded values."""
    group = zarr.open_group(str(store), mode="r")
    checked = []
    for name, variable in reference.variables.items():
        if "calendar" not in variable.encoding and " since " not in str(variable.encoding.get("units", "")):
            continue
        name = str(name)
        checked.append(name)
        expected = np.asarray(variable.values)
        assert expected.dtype == object and isinstance(expected.flat[0], cftime.datetime)
        calendar = _calendar(variable.encoding.get("calendar"))

        # How the store encodes it: a single units string and the inputs' calendar.
        attrs = dict(group[name].attrs)
        units = attrs.get("units")
        assert isinstance(units, str) and " since " in units, f"{name!r} units {units!r}"
        assert _calendar(attrs.get("calendar")) == calendar
        raw = np.asarray(group[name][...])
        decoded_by_hand = cftime.num2date(raw, units, calendar=calendar)
        assert np.array_equal(decoded_by_hand, expected), f"{name!r} encoded with {units!r} does not decode back"

        # How xarray decodes it.
        got = np.asarray(result[name].values)
        assert got.dtype == object
        assert {_calendar(d.calendar) for d in got.flat} == {calendar}
        assert {_calendar(d.calendar) for d in expected.flat} == {calendar}
        assert np.array_equal(got, expected), f"decoded {name!r} differs"
        assert _calendar(result[name].encoding.get("calendar")) == calendar
    assert checked, "no time variable was checked"
    return checked


def check_against_reference(
    store: Path,
    paths: Sequence[Path],
    concat_dim: str,
    zarr_format: int,
    expected_chunks: dict[str, tuple[int, ...]],
) -> xr.Dataset:
    """Every value, coordinate, attribute and time of the store vs open_mfdataset."""
    reference = open_reference(paths, concat_dim)
    result = open_result(store)

    # Values, coordinates, names and dims of everything.
    xr.testing.assert_equal(result, reference)
    assert set(result.coords) == set(reference.coords)
    assert set(result.data_vars) == set(reference.data_vars)
    # Attributes of every variable, too.
    for name in reference.variables:
        xr.testing.assert_identical(result.variables[name], reference.variables[name])
    # Global attributes: those every input agrees on (per-file ids and dates are dropped).
    agreed = agreed_global_attrs(paths)
    provenance = {key for key in result.attrs if key.startswith("arcoforge_")}
    assert {"arcoforge_n_inputs", "arcoforge_bake_time", "arcoforge_version", "arcoforge_xarray_version"} <= provenance
    assert result.attrs["arcoforge_n_inputs"] == len(paths)
    assert set(result.attrs) - provenance == set(agreed)
    for key, value in agreed.items():
        assert _attr_equal(result.attrs[key], value), f"global attribute {key!r}"

    check_time_variables(store, result, reference)

    # Default decoding (numpy datetime64 where the calendar allows it) agrees as well.
    xr.testing.assert_equal(
        open_result(store, decode_times=True), open_reference(paths, concat_dim, decode_times=True)
    )

    check_store_layout(store, reference, zarr_format, concat_dim, expected_chunks)
    return result


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=[2, 3], ids=["zarr2", "zarr3"])
def zarr_format(request) -> int:
    return request.param


@pytest.fixture
def awi_cm_monthly(cmip6_files) -> list[Path]:
    """AWI-CM-1-1-MR Amon ta: one file per year (12 months); the first 6 years."""
    files = cmip6_files("ta_Amon_AWI-CM-1-1-MR_*.nc")
    assert len(files) >= 6
    return files[:6]


@pytest.fixture
def bcc_monthly(cmip6_files) -> list[Path]:
    """BCC-CSM2-MR Amon ta: three files counting days from 1930, 1970 and 2010 (365_day)."""
    files = cmip6_files("ta_Amon_BCC-CSM2-MR_*.nc")
    assert len(files) == 3
    return files


@pytest.fixture
def awi_esm_daily(cmip6_files) -> list[Path]:
    """AWI-ESM-1-1-LR day ta: 2000 (366 days), 2001, 2002 (365 days each)."""
    files = cmip6_files("ta_day_AWI-ESM-1-1-LR_*.nc")
    assert len(files) == 3
    return files


# --------------------------------------------------------------------------- real archives


# Runs in several worker processes are slower to start: one per Zarr format, not every combination.
def _formats_and_workers(multiprocess_format: int):
    return pytest.mark.parametrize(
        ("zarr_format", "num_workers"),
        [(2, 1), (3, 1), (multiprocess_format, 2)],
        ids=["zarr2", "zarr3", f"zarr{multiprocess_format}-2workers"],
    )


@_formats_and_workers(multiprocess_format=3)
def test_awi_cm_monthly_chunks_across_files(awi_cm_monthly, tmp_path, zarr_format, num_workers):
    """72 months in 6 yearly files, target chunks of 18 months that straddle file boundaries."""
    pattern = af.pattern_from_file_sequence([str(p) for p in awi_cm_monthly], "time", nitems_per_file=12)
    store = bake(pattern, tmp_path / "out", {"time": 18}, zarr_format, num_workers=num_workers)

    result = check_against_reference(
        store, awi_cm_monthly, "time", zarr_format,
        expected_chunks={"ta": (18, 2, 2, 3), "time_bnds": (18, 2), "lat_bnds": (2, 2)},
    )
    assert result.sizes["time"] == 72
    assert result.time.encoding["calendar"] == "proleptic_gregorian"
    group = zarr.open_group(str(store), mode="r")
    assert group["time"].attrs["units"].startswith("days since 1850-01-01")


@_formats_and_workers(multiprocess_format=2)
def test_bcc_monthly_files_with_different_epochs(bcc_monthly, tmp_path, zarr_format, num_workers):
    """Files count days since 1930, 1970 and 2010: the store uses one units string."""
    epochs = []
    for path in bcc_monthly:
        with xr.open_dataset(path, engine="h5netcdf", decode_times=CFTIME) as ds:
            epochs.append(ds.time.encoding["units"])
            assert ds.time.encoding["calendar"] == "365_day"
    assert len(set(epochs)) == 3, f"the sample files no longer differ in epoch: {epochs}"

    pattern = af.pattern_from_file_sequence([str(p) for p in bcc_monthly], "time")
    store = bake(pattern, tmp_path / "out", {"time": 100}, zarr_format, num_workers=num_workers)

    result = check_against_reference(
        store, bcc_monthly, "time", zarr_format, expected_chunks={"ta": (100, 2, 2, 2), "time_bnds": (100, 2)}
    )
    assert result.sizes["time"] == 480 + 480 + 60
    group = zarr.open_group(str(store), mode="r")
    units = {group[name].attrs["units"] for name in ("time", "time_bnds")}
    assert units == {epochs[0]}, units
    # Spot checks across the epoch changes, in the 365_day calendar.
    assert result.time.values[479] == cftime.datetime(1969, 12, 16, 12, calendar="365_day")
    assert result.time.values[480] == cftime.datetime(1970, 1, 16, 12, calendar="365_day")
    assert result.time.values[-1] == cftime.datetime(2014, 12, 16, 12, calendar="365_day")


def test_awi_esm_daily_files_of_different_lengths(awi_esm_daily, tmp_path, zarr_format):
    """Daily files of 366, 365, 365 days (nitems_per_file=None), written with FilePattern."""
    years = [2000, 2001, 2002]
    by_year = {int(p.name.split("_")[-1][:4]): str(p) for p in awi_esm_daily}
    assert sorted(by_year) == years

    def make_path(time: int) -> str:
        return by_year[time]

    pattern = af.FilePattern(make_path, af.ConcatDim("time", years, nitems_per_file=None))
    store = bake(pattern, tmp_path / "out", {"time": 100}, zarr_format)

    result = check_against_reference(
        store, [by_year[y] for y in years], "time", zarr_format,
        expected_chunks={"ta": (100, 2, 2, 2), "time_bnds": (100, 2)},
    )
    assert result.sizes["time"] == 366 + 365 + 365
    leap_day = cftime.datetime(2000, 2, 29, 12, calendar="proleptic_gregorian")
    assert leap_day in set(result.time.values)
    assert result.time.values[366] == cftime.datetime(2001, 1, 1, 12, calendar="proleptic_gregorian")
    # Consecutive days, no gap or overlap at the file boundaries.
    steps = np.diff(open_result(store, decode_times=True).time.values).astype("timedelta64[h]")
    assert set(steps.tolist()) == {np.timedelta64(24, "h")}


def test_nemo_monthly_along_time_counter(nemo_files, tmp_path, zarr_format):
    """NEMO files stack along ``time_counter``; time itself is ``time_centered`` (360_day)."""
    with xr.open_dataset(nemo_files[0], engine="h5netcdf") as first:
        assert "time_counter" in first.dims and "time" not in first.dims
        assert first.time_centered.dims == ("time_counter",)

    pattern = af.pattern_from_file_sequence([str(p) for p in nemo_files], "time_counter", nitems_per_file=1)
    store = bake(pattern, tmp_path / "out", {"time_counter": 2}, zarr_format)

    result = check_against_reference(
        store, nemo_files, "time_counter", zarr_format,
        expected_chunks={"tos": (2, 330, 360), "time_centered_bounds": (2, 2), "nav_lat": (330, 360)},
    )
    assert result.sizes["time_counter"] == len(nemo_files)
    assert [t.month for t in result.time_centered.values] == [1, 2, 3][: len(nemo_files)]
    assert result.time_centered.encoding["calendar"] == "360_day"
    # Land is missing in every month, exactly where the inputs have it.
    assert bool(result.tos.isnull().any())


@pytest.mark.parametrize("second_epoch", [None, "days since 1950-01-01"], ids=["same-epoch", "new-epoch"])
def test_kace_360_day_split_in_two(cmip6_files, tmp_path, zarr_format, second_epoch):
    """A 360_day series split into two files (optionally re-epoched), baked back together."""
    original_path = cmip6_files("ta_Amon_KACE-1-0-G_*.nc")[0]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = [inputs / "ta_part1.nc", inputs / "ta_part2.nc"]
    with xr.open_dataset(original_path, engine="h5netcdf", decode_times=CFTIME) as original:
        original = original.load()
    assert original.time.encoding["calendar"] == "360_day"
    half = original.sizes["time"] // 2
    for path, part in zip(paths, (slice(0, half), slice(half, None))):
        piece = original.isel(time=part)
        if second_epoch and path is paths[1]:
            for name in ("time", "time_bnds"):
                piece[name].encoding["units"] = second_epoch
        piece.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(paths[1], engine="h5netcdf", decode_times=CFTIME) as check:
        assert check.time.encoding["units"] == (second_epoch or original.time.encoding["units"])

    pattern = af.pattern_from_file_sequence([str(p) for p in paths], "time")
    store = bake(pattern, tmp_path / "out", {"time": 700}, zarr_format)

    result = check_against_reference(
        store, paths, "time", zarr_format, expected_chunks={"ta": (700, 2, 2, 2), "time_bnds": (700, 2)}
    )
    # The split and re-baked series is the original one.
    xr.testing.assert_equal(result, original)
    assert result.time.values[half] == original.time.values[half]
    # Every month of the 360_day calendar is 30 days long.
    month_lengths = {(upper - lower).days for lower, upper in result.time_bnds.values}
    assert month_lengths == {30}


def test_merge_dim_of_variables_split_across_files(awi_cm_monthly, tmp_path, zarr_format):
    """FilePattern(fn, ConcatDim, MergeDim): each year split into a ``ta`` file and a bounds file."""
    years = list(range(3))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    groups = {"ta": ["ta"], "bounds": ["time_bnds", "lat_bnds", "lon_bnds"]}
    for year in years:
        with xr.open_dataset(awi_cm_monthly[year], engine="h5netcdf", decode_times=CFTIME) as ds:
            ds = ds.load()
        for group_name, names in groups.items():
            ds[names].to_netcdf(inputs / f"{group_name}_{year}.nc", engine="h5netcdf")

    def make_path(time: int, group: str) -> str:
        return str(inputs / f"{group}_{time}.nc")

    pattern = af.FilePattern(
        make_path, af.ConcatDim("time", years, nitems_per_file=12), af.MergeDim("group", list(groups))
    )
    store = bake(pattern, tmp_path / "out", {"time": 18}, zarr_format)

    # The merged store equals the original, unsplit files.
    reference = open_reference(awi_cm_monthly[: len(years)], "time")
    result = open_result(store)
    xr.testing.assert_equal(result, reference)
    for name in reference.variables:
        xr.testing.assert_identical(result.variables[name], reference.variables[name])
    check_time_variables(store, result, reference)
    check_store_layout(store, reference, zarr_format, "time", {"ta": (18, 2, 2, 3), "time_bnds": (18, 2)})


# --------------------------------------------------------------------------- bad inputs


def _write_bad_input(kind: str, source: Path, target: Path) -> None:
    if kind == "garbage":
        target.write_bytes(b"<html><body>503 Service Unavailable</body></html>\n" + bytes(range(256)) * 8)
        return
    with xr.open_dataset(source, engine="h5netcdf", decode_times=CFTIME) as ds:
        ds = ds.load()
    if kind == "missing-variable":
        ds = ds.drop_vars("ta")
    elif kind == "other-grid":
        ds = ds.isel(lat=slice(0, 1))
    else:
        raise ValueError(kind)
    ds.to_netcdf(target, engine="h5netcdf")


def _copy_inputs(sources: Sequence[Path], directory: Path) -> list[Path]:
    directory.mkdir()
    paths = []
    for i, source in enumerate(sources):
        path = directory / f"input_{i}.nc"
        path.write_bytes(source.read_bytes())
        paths.append(path)
    return paths


BAD_INPUT_MESSAGES = {
    "missing-variable": "ta",
    "other-grid": "lat",
    "garbage": "netcdf",
}


@pytest.mark.parametrize("bad_position", [0, 2], ids=["first", "last"])
@pytest.mark.parametrize("kind", list(BAD_INPUT_MESSAGES))
def test_bad_input_fails_without_creating_store(awi_cm_monthly, tmp_path, kind, bad_position):
    paths = _copy_inputs(awi_cm_monthly[:3], tmp_path / "inputs")
    bad = paths[bad_position]
    _write_bad_input(kind, awi_cm_monthly[bad_position], bad)
    target_root = tmp_path / "out"

    pattern = af.pattern_from_file_sequence([str(p) for p in paths], "time")
    with pytest.raises(Exception) as excinfo:
        bake(pattern, target_root, {"time": 18}, zarr_format=3)

    message = str(excinfo.value)
    assert str(bad) in message, message
    assert f"pattern index Index(time={bad_position})" in message, message
    assert BAD_INPUT_MESSAGES[kind] in message.lower(), message
    # An arcoforge error, not some accident of the pipeline.
    assert isinstance(excinfo.value, af.InputError), f"{type(excinfo.value).__name__}: {message}"
    assert not (target_root / STORE_NAME).exists(), "a failed bake left a store behind"


def test_bad_input_fails_with_two_workers(awi_cm_monthly, tmp_path):
    """The same failure in the multi-process runner: still names the file, still no store."""
    paths = _copy_inputs(awi_cm_monthly[:3], tmp_path / "inputs")
    _write_bad_input("other-grid", awi_cm_monthly[1], paths[1])
    target_root = tmp_path / "out"

    pattern = af.pattern_from_file_sequence([str(p) for p in paths], "time")
    with pytest.raises(Exception) as excinfo:
        bake(pattern, target_root, {"time": 18}, zarr_format=3, num_workers=2)

    message = str(excinfo.value)
    assert str(paths[1]) in message, message
    assert "pattern index Index(time=1)" in message, message
    assert not (target_root / STORE_NAME).exists(), "a failed bake left a store behind"
