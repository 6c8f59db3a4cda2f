"""Conformance (issue 11): every case class of tests/_cdl_cases.py, and the real sample archives.

Each case is baked with the local Beam runner through the public recipe API
(``FilePattern`` | ``OpenURLWithFSSpec`` | ``OpenWithXarray`` | ``StoreToZarr``)
and either equals ``xr.open_mfdataset`` of its inputs, or stops before anything
is written with a one-line message naming the file, its pattern index, the
variable and what was expected. "Equal" means (see :func:`check_equal`):

- the same variables, coordinates and dimensions; decoded dtypes identical;
  decoded values bit-exact (NaN and NaT equal to themselves);
- the same attributes, for every variable and globally (global attributes that
  differ between inputs are dropped; arcoforge adds its ``arcoforge_*`` provenance);
- the same encoding: ``dtype``, ``scale_factor``/``add_offset`` (value and dtype),
  ``_FillValue``, ``missing_value``, ``units``, ``calendar``; the one documented
  difference is that float data variables without a ``_FillValue`` get NaN;
- every numeric array read by tensorstore equals what zarr-python reads.

To keep time, all "equal" cases of one Zarr format and worker count are baked
in one pipeline (one store each); v2 and v3 never share a pipeline. Every case
runs in v2 and v3 with one worker; a representative subset with two workers too.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr
import zarr

import arcoforge as af
from arcoforge.cli import EXIT_INPUT, classify_failure


def _load(filename: str, name: str):
    """Import a helper module of tests/ by path (tests/ is not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(filename))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


cdl_cases = _load("_cdl_cases.py", "arcoforge_tests_cdl_cases")
_sample = _load("_sample_data.py", "arcoforge_tests_sample_data")
cmip6_sample_dir = _sample.cmip6_sample_dir

pytestmark = [
    pytest.mark.filterwarnings("ignore::xarray.SerializationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

EQUAL = [case for case in cdl_cases.CASES if case.expect == "equal"]
ERRORS = [case for case in cdl_cases.CASES if case.expect == "error"]
# Baked with two workers as well: one of each family (0-d, packing, strings, time, groups, storage).
TWO_WORKER_CASES = ["zero_d", "packed_f32", "unsigned", "char_arrays", "vlen_strings", "nemo", "per_file_epochs",
                    "group_selected", "storage", "cdf5"]
ENCODING_KEYS = ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value", "units", "calendar")
CALENDAR_ALIASES = {"gregorian": "standard", "365_day": "noleap", "366_day": "all_leap"}


# --------------------------------------------------------------------------- baking


class _Branches(beam.PTransform):
    """Several recipes applied to one pipeline's root: one bake per store, in one Beam job."""

    def __init__(self, recipes: dict[str, beam.PTransform]):
        super().__init__()
        self.recipes = recipes

    def expand(self, pbegin):
        return [pbegin | name >> recipe for name, recipe in self.recipes.items()]


def recipe_for(paths: Sequence[Path], concat_dim: str, store_name: str, target_root: Path, zarr_format: int,
               file_type: str = "netcdf4", open_kwargs: dict | None = None,
               nitems_per_file: int | None = None, target_chunks: dict | None = None) -> beam.PTransform:
    """The recipe a user writes for a series of files, as one PTransform."""
    pattern = af.pattern_from_file_sequence([str(p) for p in paths], concat_dim, nitems_per_file,
                                            file_type=file_type)
    return (
        beam.Create(pattern.items())
        | af.OpenURLWithFSSpec()
        | af.OpenWithXarray(file_type=pattern.file_type, xarray_open_kwargs=dict(open_kwargs or {}))
        | af.StoreToZarr(target_root=str(target_root), store_name=store_name,
                         combine_dims=pattern.combine_dim_keys, target_chunks=dict(target_chunks or {}),
                         zarr_format=zarr_format)
    )


def case_recipe(case, paths: Sequence[Path], target_root: Path, zarr_format: int) -> beam.PTransform:
    return recipe_for(paths, case.concat_dim, f"{case.name}.zarr", target_root, zarr_format, case.file_type,
                      case.open_kwargs, case.nitems_per_file, case.target_chunks)


def bake_many(recipes: dict[str, beam.PTransform], num_workers: int) -> None:
    af.run_local(_Branches(recipes), num_workers=num_workers)


# --------------------------------------------------------------------------- comparing


def _open_inputs(paths: Sequence[Path], file_type: str, open_kwargs: dict | None) -> list[xr.Dataset]:
    kwargs = dict(open_kwargs or {})
    if file_type == "hdf5":
        kwargs.update(engine="h5netcdf", phony_dims="sort")
    return [xr.open_dataset(path, chunks=None, **kwargs) for path in paths]


def open_reference(paths: Sequence[Path], concat_dim: str, file_type: str = "netcdf4",
                   open_kwargs: dict | None = None) -> tuple[xr.Dataset, dict]:
    """What ``xr.open_mfdataset`` makes of the inputs (its steps, without dask), and their agreed global attrs.

    Global attributes a store keeps are those every input has with the same value.
    """
    inputs = _open_inputs(paths, file_type, open_kwargs)
    try:
        combined = xr.combine_nested(inputs, concat_dim=concat_dim, data_vars="minimal", coords="minimal",
                                     compat="override", combine_attrs="override").load()
        sets = [dict(ds.attrs) for ds in inputs]
    finally:
        for ds in inputs:
            ds.close()
    agreed = {k: v for k, v in sets[0].items() if all(k in other and same(v, other[k]) for other in sets[1:])}
    return combined, agreed


def same(a, b) -> bool:
    """Equality of values, arrays and attributes: NaN equals NaN, dtypes must match for arrays."""
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)):
        return type(a) is type(b) and a == b
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fcmM" and b.dtype.kind in "fcmM":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return all(x == y or (x != x and y != y) for x, y in zip(a.ravel().tolist(), b.ravel().tolist()))
    return bool(np.array_equal(a, b))


def _calendar(value) -> str | None:
    if value is None:
        return None
    value = str(value).lower()
    return CALENDAR_ALIASES.get(value, value)


def stored_unpacked(ref: xr.Variable, got: xr.Variable) -> bool:
    """A pack decoding to float32 (or another non-float64 type) is stored as its decoded values (documented)."""
    packed = any(key in ref.encoding for key in ("scale_factor", "add_offset"))
    kept = any(key in got.encoding for key in ("scale_factor", "add_offset"))
    return packed and ref.dtype != np.float64 and not kept and np.dtype(got.encoding.get("dtype")) == got.dtype


def encoding_differences(name: str, ref: xr.Variable, got: xr.Variable) -> list[str]:
    """The CF encoding keys a store changed, other than the documented differences of docs/conformance.md."""
    if stored_unpacked(ref, got):
        return []
    problems = []
    stored_dtype = np.dtype(got.encoding.get("dtype", got.dtype))
    for key in ENCODING_KEYS:
        want, have = ref.encoding.get(key), got.encoding.get(key)
        if key == "dtype":
            want = np.dtype(want).newbyteorder("=") if want is not None else None
            have = np.dtype(have).newbyteorder("=") if have is not None else None
            if ref.dtype.kind in "OUS" and want is not None and have is not None and want.kind in "OUS":
                continue  # strings: char arrays are stored as the fixed-width strings they decode to
        if key == "calendar":
            want, have = _calendar(want), _calendar(have)
            if want is None and have == "standard":
                continue  # a time without calendar gets the CF default written out
        if key == "dtype" and ref.encoding.get("_Unsigned") == "true" and want is not None and have is not None \
                and have.kind == "u" and have.itemsize == want.itemsize:
            continue  # _Unsigned resolved: Zarr has unsigned types
        if key == "_FillValue" and want is None and have is not None and np.isnan(have) and stored_dtype.kind == "f":
            continue  # float variables without _FillValue read NaN where nothing was written, as xarray writes them
        if want is None and have is None:
            continue
        if key in ("_FillValue", "missing_value") and want is not None and have is not None:
            # Zarr keeps attributes as JSON: the stored array's dtype types them.
            want, have = _as(want, stored_dtype), _as(have, stored_dtype)
        if want is None or have is None or not same(want, have):
            problems.append(f"{name}.encoding[{key!r}]: {want!r} in the inputs, {have!r} in the store")
        elif key in ("scale_factor", "add_offset") and np.asarray(want).dtype != np.asarray(have).dtype:
            problems.append(f"{name}.encoding[{key!r}]: {np.asarray(want).dtype} in the inputs, "
                            f"{np.asarray(have).dtype} in the store")
    return problems


def _as(value, dtype: np.dtype):
    try:
        return np.asarray(value).astype(dtype) if dtype.kind in "biufc" else value
    except (TypeError, ValueError):
        return value


def tensorstore_differences(store: Path, zarr_format: int) -> list[str]:
    """Numeric arrays that tensorstore reads differently from zarr-python (byte order aside: a v2 store may
    keep a big-endian source's dtype, which tensorstore hands back in native order)."""
    import tensorstore as ts

    problems = []
    group = zarr.open_group(str(store), mode="r")
    for name, array in group.arrays():
        if array.dtype.kind not in "biuf":
            continue
        expected = array[...]
        spec = {"driver": "zarr3" if zarr_format == 3 else "zarr",
                "kvstore": {"driver": "file", "path": str(store / name)}}
        got = ts.open(spec, read=True).result().read().result()
        if got.dtype.newbyteorder("=") != expected.dtype.newbyteorder("=") or not same(got, expected):
            problems.append(f"{name}: tensorstore reads {got.dtype} {got.ravel()[:4]}, zarr {expected.dtype} "
                            f"{np.asarray(expected).ravel()[:4]}")
    return problems


def check_equal(store: Path, paths: Sequence[Path], concat_dim: str, zarr_format: int, file_type: str = "netcdf4",
                open_kwargs: dict | None = None) -> dict[str, str]:
    """Assert the store equals open_mfdataset of ``paths``; return the decoded dtype of every variable."""
    reference, expected_attrs = open_reference(paths, concat_dim, file_type, open_kwargs)
    with xr.open_zarr(store, consolidated=True, chunks=None) as opened:
        result = opened.load()
    problems = []
    if set(result.variables) != set(reference.variables):
        problems.append(f"variables {sorted(map(str, result.variables))}, "
                        f"expected {sorted(map(str, reference.variables))}")
    if set(result.coords) != set(reference.coords):
        problems.append(f"coordinates {sorted(map(str, result.coords))}, expected {sorted(map(str, reference.coords))}")
    for name in sorted(set(map(str, reference.variables)) & set(map(str, result.variables))):
        ref, got = reference.variables[name], result.variables[name]
        if ref.dims != got.dims:
            problems.append(f"{name}: dims {got.dims}, expected {ref.dims}")
            continue
        if ref.dtype.newbyteorder("=") != got.dtype.newbyteorder("="):
            problems.append(f"{name}: decoded dtype {got.dtype}, expected {ref.dtype}")
        elif not same(ref.values, got.values):
            problems.append(f"{name}: values differ: {got.values.ravel()[:6]}, expected {ref.values.ravel()[:6]}")
        if set(ref.attrs) != set(got.attrs) or not all(same(ref.attrs[k], got.attrs[k]) for k in ref.attrs):
            problems.append(f"{name}: attrs {got.attrs}, expected {ref.attrs}")
        problems += encoding_differences(name, ref, got)
    kept = {k: v for k, v in result.attrs.items() if not k.startswith("arcoforge_")}
    if set(kept) != set(expected_attrs) or not all(same(v, kept[k]) for k, v in expected_attrs.items()):
        problems.append(f"global attrs {kept}, expected {expected_attrs}")
    problems += tensorstore_differences(store, zarr_format)
    assert not problems, f"{store.name} differs from its inputs:\n" + "\n".join(problems)
    return {str(name): str(var.dtype) for name, var in result.variables.items()}


# --------------------------------------------------------------------------- the corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, list[Path]]:
    """Every case's files, written once."""
    root = tmp_path_factory.mktemp("corpus")
    return {case.name: case.write(root / case.name) for case in cdl_cases.CASES}


@pytest.fixture(scope="session")
def corpus_bakes(corpus, tmp_path_factory):
    """``bakes(zarr_format, num_workers)``: the folder of the stores of every "equal" case, baked once.

    One pipeline holds all the cases of a format and worker count. If it fails,
    each case is baked alone, so that each test reports its own failure.
    """
    done: dict[tuple[int, int], tuple[dict[str, Path], dict[str, str]]] = {}

    def bakes(zarr_format: int, num_workers: int) -> tuple[dict[str, Path], dict[str, str]]:
        key = (zarr_format, num_workers)
        if key not in done:
            root = tmp_path_factory.mktemp(f"zarr{zarr_format}-{num_workers}w")
            cases = [c for c in EQUAL if num_workers == 1 or c.name in TWO_WORKER_CASES]
            stores = {c.name: root / f"{c.name}.zarr" for c in cases}
            failures: dict[str, str] = {}
            try:
                bake_many({c.name: case_recipe(c, corpus[c.name], root, zarr_format) for c in cases}, num_workers)
            except Exception:
                for case in cases:  # alone, in a fresh folder (the failed bake holds leases on its stores)
                    alone = root / "alone" / case.name
                    stores[case.name] = alone / f"{case.name}.zarr"
                    try:
                        bake_many({case.name: case_recipe(case, corpus[case.name], alone, zarr_format)}, num_workers)
                    except Exception as error:  # reported by the case's own test
                        failures[case.name] = f"{type(error).__name__}: {error}".splitlines()[0][:2000]
            done[key] = (stores, failures)
        return done[key]

    return bakes


MATRIX = [(fmt, 1, case.name) for case in EQUAL for fmt in (2, 3)] + [
    (fmt, 2, name) for name in TWO_WORKER_CASES for fmt in (2, 3)]


@pytest.mark.parametrize(("zarr_format", "num_workers", "name"), MATRIX,
                         ids=[f"{n}-zarr{f}-{w}w" for f, w, n in MATRIX])
def test_case_bakes_equal(corpus_bakes, corpus, zarr_format, num_workers, name):
    case = cdl_cases.BY_NAME[name]
    stores, failures = corpus_bakes(zarr_format, num_workers)
    assert name not in failures, f"{case.what}: the bake failed: {failures[name]}"
    store = stores[name]
    assert zarr.open_group(str(store), mode="r").metadata.zarr_format == zarr_format
    check_equal(store, corpus[name], case.concat_dim, zarr_format, case.file_type, case.open_kwargs)


# Two workers: one error case is enough to show the message crosses processes.
ERROR_MATRIX = [(case.name, 1) for case in ERRORS] + [(ERRORS[0].name, 2)]


@pytest.mark.parametrize(("name", "num_workers"), ERROR_MATRIX, ids=[f"{n}-{w}w" for n, w in ERROR_MATRIX])
def test_case_stops_with_one_line(corpus, tmp_path, name, num_workers):
    case = cdl_cases.BY_NAME[name]
    target = tmp_path / "out"
    with pytest.raises(Exception) as raised:
        bake_many({name: case_recipe(case, corpus[name], target, 3)}, num_workers)
    exit_code, message = classify_failure(raised.value)  # what `arcoforge bake` prints
    assert exit_code == EXIT_INPUT, f"{exit_code}: {message}"
    assert "\n" not in message, f"not one line: {message!r}"
    assert re.search(case.error, message), f"{message!r} does not match {case.error!r}"
    assert not (target / f"{name}.zarr").exists(), "a failed bake left a store behind"


# --------------------------------------------------------------------------- real sample archives


def sample_series(cmip6_root: Path, iris_root: Path) -> dict[str, tuple[list[Path], str]]:
    """Every series of esmvaltool-sample-data (a folder of files along time) and every NetCDF file of
    iris-sample-data (the NEMO months as one series; other files alone, along their unlimited dimension)."""
    import netCDF4

    series: dict[str, tuple[list[Path], str]] = {}
    for folder in sorted({path.parent for path in cmip6_root.rglob("*.nc")}):
        name = "cmip6-" + "-".join(folder.relative_to(cmip6_root).parts[2:7])  # model, experiment, run, table, var
        series[name] = (sorted(folder.glob("*.nc")), "time")
    nemo = sorted((iris_root / "NEMO").glob("*.nc"))
    series["iris-NEMO"] = (nemo, "time_counter")
    for path in sorted(iris_root.glob("*.nc")):
        with netCDF4.Dataset(path) as nc:
            unlimited = [d for d, dim in nc.dimensions.items() if dim.isunlimited()]
            concat_dim = unlimited[0] if unlimited else next(iter(nc.dimensions))
        series[f"iris-{path.stem}"] = ([path], concat_dim)
    return series


@pytest.fixture(scope="module")
def samples(cmip6_sample_dir) -> dict[str, tuple[list[Path], str]]:
    iris = pytest.importorskip("iris_sample_data", reason="pip install 'arcoforge[test]'")
    return sample_series(cmip6_sample_dir, Path(iris.__file__).parent / "sample_data")


def bake_directly(paths: Sequence[Path], concat_dim: str, url: str, zarr_format: int) -> None:
    """StoreToZarr's steps, in its order, called as the plain functions they are, without Beam.

    ~90 stores through Beam cost ~0.5-1 s each in pipeline overhead; the Beam wiring of the same
    functions is what the corpus tests above exercise.
    """
    from arcoforge.core import StoreSpec, cut_pieces, finalize, plan_bake, prepare_store, read_schema, write_task
    from arcoforge.openers import open_with_xarray, prepare_input

    pattern = af.pattern_from_file_sequence([str(p) for p in paths], concat_dim)
    inputs = [(index, open_with_xarray(prepare_input(u, index), file_type=pattern.file_type, index=index))
              for index, u in pattern.items()]
    spec = StoreSpec(url=url, combine_dims=tuple(pattern.combine_dim_keys), zarr_format=zarr_format)
    bake = plan_bake(spec, [read_schema(element, spec) for element in inputs])
    prepare_store(bake)
    tasks: dict = {}
    for element in inputs:
        for key, piece in cut_pieces(element, bake):
            tasks.setdefault(key, []).append(piece)
    finalize(sum(write_task(task, bake) for task in tasks.items()), bake)
    for _, ds in inputs:
        ds.close()


def test_sample_archives_bake_equal(samples, tmp_path):
    """Every sample series (one store each, Zarr v3; a few in v2 too), each equal to its inputs."""
    assert len(samples) >= 85, f"only {len(samples)} sample series found"
    problems = []
    v2 = {"iris-NEMO", "iris-vlstr_type", "iris-space_weather", next(iter(samples))}
    for name, (paths, dim) in samples.items():
        for zarr_format in (3, 2) if name in v2 else (3,):
            store = tmp_path / f"{name}-v{zarr_format}.zarr"
            try:
                bake_directly(paths, dim, str(store), zarr_format)
                check_equal(store, paths, dim, zarr_format)
            except Exception as error:  # every series is reported, not only the first
                problems.append(f"{name} (zarr v{zarr_format}): {type(error).__name__}: {error}")
    assert not problems, f"{len(problems)} of {len(samples)} sample series differ:\n" + "\n".join(problems)
