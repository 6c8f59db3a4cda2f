"""The conformance corpus of issue 11: one short series of small files per case class.

Each :class:`Case` writes 2-3 files, from CDL text through ``ncgen -k <kind>``
(Debian's netcdf-bin, installed by .ci/run) or, where CDL cannot say it, with
h5py or netCDF4-python, and declares what a bake of them must give:

- ``"equal"``: the store equals ``xarray.open_mfdataset`` of the inputs
  (tests/test_conformance.py says exactly what is compared);
- ``"error"``: the bake stops before anything is written, with a one-line
  message that ``error`` (a regular expression) matches: it names the file,
  its pattern index, the variable and what was expected.

``CASES`` lists them; ``what`` is the case class as docs/conformance.md names it.
tests/ is not a package: test modules load this file by path.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NCGEN_KINDS = ("classic", "64-bit-offset", "cdf5", "nc4", "nc7")


@dataclass(frozen=True)
class Case:
    """One case class: how to write its files, how to bake them, and what must come out."""

    name: str
    what: str
    # CDL of file i (ncgen), or a function writing the files into a folder and returning their paths
    cdl: Callable[[int], str] | None = None
    writer: Callable[[Path], list[Path]] | None = None
    kind: str = "nc4"
    n_files: int = 2
    concat_dim: str = "time"
    expect: str = "equal"
    error: str | None = None  # regex the one-line message must match
    file_type: str = "netcdf4"
    open_kwargs: dict = field(default_factory=dict)  # xarray_open_kwargs, for the bake and the reference
    nitems_per_file: int | None = None
    target_chunks: dict = field(default_factory=dict)

    def write(self, directory: Path) -> list[Path]:
        """Write the case's files into ``directory`` (created) and return them in pattern order."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.writer is not None:
            return self.writer(directory)
        assert self.cdl is not None and self.kind in NCGEN_KINDS
        paths = []
        for i in range(self.n_files):
            cdl_path = directory / f"{self.name}_{i}.cdl"
            cdl_path.write_text(self.cdl(i))
            path = directory / f"{self.name}_{i}.nc"
            done = subprocess.run(["ncgen", "-k", self.kind, "-o", str(path), str(cdl_path)],
                                  capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"ncgen failed on {cdl_path}: {done.stderr.strip()}")
            paths.append(path)
        return paths


def _times(i: int, n: int = 2, step: float = 1) -> str:
    return ", ".join(str(i * n * step + k * step) for k in range(n))


def _grid(i: int, *, header: str = "", variables: str = "", data: str = "", times: list | None = None) -> str:
    """CDL of a small (time, lat, lon) file whose time continues file i-1's, plus extra parts."""
    times = times if times is not None else [2 * i, 2 * i + 1]
    tas = ", ".join(str((i * 24 + j) % 50 + 0.5) for j in range(12 * len(times)))
    return f"""netcdf f{i} {{
{header}dimensions:
  time = UNLIMITED ; lat = 3 ; lon = 4 ;
variables:
  double time(time) ; time:units = "days since 2000-01-01" ; time:calendar = "standard" ; time:axis = "T" ;
  float lat(lat) ; lat:units = "degrees_north" ; lat:standard_name = "latitude" ;
  float lon(lon) ; lon:units = "degrees_east" ; lon:standard_name = "longitude" ;
  float tas(time, lat, lon) ; tas:units = "K" ; tas:long_name = "air temperature" ;
{variables}
// global attributes:
  :Conventions = "CF-1.8" ; :title = "arcoforge conformance case" ;
data:
  time = {", ".join(map(str, times))} ; lat = -10, 0, 10 ; lon = 0, 90, 180, 270 ;
  tas = {tas} ;
{data}}}
"""


def _values(i: int, n: int, fill: str | None = None, modulo: int = 100, scale: int = 1) -> str:
    items = [str(((i * n + k) * 7 % modulo) * scale) for k in range(n)]
    if fill is not None:
        items[1] = fill
    return ", ".join(items)


# ------------------------------------------------------------------ 0-d variables

def _zero_d(i: int) -> str:
    return _grid(i, variables="""
  int crs ; crs:grid_mapping_name = "latitude_longitude" ; crs:semi_major_axis = 6371000. ;
  double height ; height:units = "m" ; height:standard_name = "height" ; height:positive = "up" ;
  double forecast_reference_time ; forecast_reference_time:units = "hours since 1999-12-31" ;
    forecast_reference_time:calendar = "standard" ;
  float pr(time, lat, lon) ; pr:grid_mapping = "crs" ; pr:coordinates = "height forecast_reference_time" ;
""", data=f"""  crs = 0 ; height = 2 ; forecast_reference_time = 6 ;
  pr = {_values(i, 24)} ;
""")


# ------------------------------------------------------------------ packing

def _packed(float_type: str, suffix: str) -> Callable[[int], str]:
    """int8, int16 and uint8 variables packed with scale and offset of ``float_type``."""

    def cdl(i: int) -> str:
        return _grid(i, variables=f"""
  byte p8(time, lat, lon) ; p8:scale_factor = 0.5{suffix} ; p8:add_offset = 10.{suffix} ; p8:_FillValue = -127b ;
  short p16(time, lat, lon) ; p16:scale_factor = 0.01{suffix} ; p16:add_offset = 273.15{suffix} ;
    p16:_FillValue = -32767s ; p16:units = "K" ;
  ubyte pu8(time, lat, lon) ; pu8:scale_factor = 0.25{suffix} ; pu8:add_offset = -5.{suffix} ; pu8:_FillValue = 255UB ;
""", data=f"""  p8 = {_values(i, 24, '_')} ;
  p16 = {_values(i, 24, '_', 1000, 31)} ;
  pu8 = {_values(i, 24, '_', 250)} ;
""")

    return cdl


def _negative_scale(i: int) -> str:
    return _grid(i, variables="""
  short depth_anomaly(time, lat, lon) ; depth_anomaly:scale_factor = -0.5 ; depth_anomaly:add_offset = 100. ;
    depth_anomaly:_FillValue = -32767s ;
""", data=f"""  depth_anomaly = {_values(i, 24, '_')} ;
""")


def _unsigned(i: int) -> str:
    return _grid(i, variables="""
  byte flags_u(time, lat, lon) ; flags_u:_Unsigned = "true" ; flags_u:long_name = "no fill value" ;
  byte count_u(time, lat, lon) ; count_u:_Unsigned = "true" ; count_u:_FillValue = -1b ;
  short packed_u(time, lat, lon) ; packed_u:_Unsigned = "true" ; packed_u:scale_factor = 0.01f ;
""", data=f"""  flags_u = {", ".join(str(-100 + 9 * k + i) for k in range(24))} ;
  count_u = {", ".join(str(-120 + 10 * k + i) if k != 3 else "_" for k in range(24))} ;
  packed_u = {", ".join(str(-30000 + 2500 * k + i) for k in range(24))} ;
""")


def _fill_and_missing(i: int) -> str:
    return _grid(i, variables="""
  short sst(time, lat, lon) ; sst:_FillValue = -32768s ; sst:missing_value = -999s ; sst:units = "degC" ;
  float wind(time, lat, lon) ; wind:_FillValue = -1.e30f ; wind:missing_value = 9.96921e36f ;
""", data=f"""  sst = {", ".join(["-32768", "-999"] + [str(k * 3 + i) for k in range(22)])} ;
  wind = {", ".join(["_", "9.96921e36"] + [str(k * 0.5 + i) for k in range(22)])} ;
""")


def _flags(i: int) -> str:
    return _grid(i, variables="""
  byte quality(time, lat, lon) ; quality:flag_values = 0b, 1b, 2b, 4b ;
    quality:flag_meanings = "good suspect bad missing" ; quality:standard_name = "status_flag" ;
  short land(lat, lon) ; land:flag_masks = 1s, 2s ; land:flag_meanings = "land ice" ;
""", data=f"""  quality = {", ".join(str([0, 1, 2, 4][(k + i) % 4]) for k in range(24))} ;
  land = 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3 ;
""")


def _valid_range(i: int) -> str:
    return _grid(i, variables="""
  short rh(time, lat, lon) ; rh:valid_range = 0s, 100s ; rh:units = "%" ; rh:_FillValue = -1s ;
  float sw(time, lat, lon) ; sw:valid_min = 0.f ; sw:valid_max = 1500.f ;
""", data=f"""  rh = {", ".join(str((k * 9 + i) % 120) for k in range(24))} ;
  sw = {", ".join(str(-5 + k * 70.5 + i) for k in range(24))} ;
""")


def _write_nan_fill_on_int(directory: Path) -> list[Path]:
    """An int32 variable whose _FillValue is a float NaN (written by HDF5 tools; netCDF-C would refuse it)."""
    import h5py
    import xarray as xr

    paths = []
    for i in range(2):
        ds = xr.Dataset(
            {"count": (("time", "x"), np.arange(i * 6, i * 6 + 6, dtype="int32").reshape(2, 3))},
            coords={"time": ("time", np.array([2 * i, 2 * i + 1], dtype="float64"),
                             {"units": "days since 2000-01-01"}), "x": np.arange(3, dtype="int32")},
        )
        path = directory / f"nan_fill_int_{i}.nc"
        ds.to_netcdf(path, engine="h5netcdf")
        with h5py.File(path, "a") as f:
            f["count"].attrs["_FillValue"] = np.float64("nan")
        paths.append(path)
    return paths


# ------------------------------------------------------------------ strings

def _chars(i: int) -> str:
    names = ['"alpha"', '"bravo"', '"charlie"', '"delta"']
    return f"""netcdf f{i} {{
dimensions:
  time = UNLIMITED ; station = 3 ; name_strlen = 8 ; label_strlen = 4 ;
variables:
  double time(time) ; time:units = "days since 2000-01-01" ;
  char station_name(station, name_strlen) ; station_name:cf_role = "timeseries_id" ;
  char label(time, label_strlen) ;
  float obs(time, station) ; obs:coordinates = "station_name" ;
data:
  time = {_times(i)} ;
  station_name = {", ".join(names[:3])} ;
  label = "t{2 * i}", "t{2 * i + 1}" ;
  obs = {_values(i, 6)} ;
}}
"""


def _vlen_strings(i: int) -> str:
    return f"""netcdf f{i} {{
dimensions:
  time = UNLIMITED ; station = 3 ;
variables:
  double time(time) ; time:units = "days since 2000-01-01" ;
  string station_id(station) ; station_id:long_name = "WMO id" ;
  string remark(time) ;
  float obs(time, station) ;
data:
  time = {_times(i)} ;
  station_id = "03772", "10385", "Ümlaut-1" ;
  remark = "clear sky {i}", "" ;
  obs = {_values(i, 6)} ;
}}
"""


# ------------------------------------------------------------------ structure

def _missing_bounds(i: int) -> str:
    return _grid(i).replace('lat:standard_name = "latitude" ;',
                            'lat:standard_name = "latitude" ; lat:bounds = "lat_bnds" ;')


def _group_file(i: int, path: str) -> str:
    """Data in group ``path`` (``a`` or ``a/b``) only; the root group holds attributes."""
    inner = _grid(i).split("\n", 1)[1].rsplit("}", 1)[0]
    inner = inner.replace("// global attributes:\n  :Conventions", "// group attributes:\n  :Conventions")
    parts = path.split("/")
    opening = "".join(f"group: {p} {{\n" for p in parts)
    closing = "} // group\n" * len(parts)
    return f'netcdf f{i} {{\n// global attributes:\n  :history = "data in a group" ;\n{opening}{inner}{closing}}}\n'


def _write_phony_dims(directory: Path) -> list[Path]:
    """Plain HDF5 written by h5py, without dimension scales: h5netcdf names the dimensions phony_dim_N."""
    import h5py

    paths = []
    for i in range(2):
        path = directory / f"phony_dims_{i}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("radiance", data=np.arange(24, dtype="float32").reshape(2, 3, 4) + i,
                             chunks=(1, 3, 4), compression="gzip")
            f.create_dataset("surface_mask", data=np.arange(12, dtype="int16").reshape(3, 4))
            f.attrs["instrument"] = "imager"
        paths.append(path)
    return paths


def _time_lon_lat(i: int) -> str:
    return _grid(i).replace("float tas(time, lat, lon)", "float tas(time, lon, lat)")


def _unlimited_not_time(i: int) -> str:
    return f"""netcdf f{i} {{
dimensions:
  obs = UNLIMITED ; level = 2 ;
variables:
  double time(obs) ; time:units = "seconds since 2020-01-01 00:00:00" ;
  float lat(obs) ; float lon(obs) ;
  float temp(obs, level) ; temp:coordinates = "time lat lon" ;
data:
  time = {_times(i, 3, 60)} ; lat = {_values(i, 3)} ; lon = {_values(i + 5, 3)} ;
  temp = {_values(i, 6)} ;
}}
"""


def _netcdf3(i: int) -> str:
    """What netCDF-3 formats hold: byte/short/int/float/double/char, one unlimited dimension."""
    return _grid(i, variables="""
  short packed(time, lat, lon) ; packed:scale_factor = 0.1 ; packed:_FillValue = -9999s ;
  byte level ; char source(name_len) ;
""", data=f"""  packed = {_values(i, 24, '_')} ; level = 3 ; source = "model" ;
""").replace("lat = 3 ; lon = 4 ;", "lat = 3 ; lon = 4 ; name_len = 5 ;")


def _write_cdf5(directory: Path) -> list[Path]:
    """CDF5 (64-bit data) with its own types: int64, uint64, ushort, uint. Written with netCDF4-python,
    because this ncgen writes a CDL ``int64`` variable as ``int`` in a cdf5 file."""
    import netCDF4

    paths = []
    for i in range(2):
        path = directory / f"cdf5_{i}.nc"
        with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_DATA") as nc:
            nc.createDimension("time", None)
            nc.createDimension("lat", 3)
            time = nc.createVariable("time", "f8", ("time",))
            time.units = "days since 2000-01-01"
            time[:] = [2 * i, 2 * i + 1]
            nc.createVariable("lat", "f4", ("lat",))[:] = [-10, 0, 10]
            big = nc.createVariable("big", "i8", ("time", "lat"))
            big.long_name = "64-bit counts"
            big[:] = np.arange(6, dtype="int64").reshape(2, 3) + 2**40 + i
            nc.createVariable("u64", "u8", ("time",))[:] = np.array([2**63 + i, 7], dtype="uint64")
            nc.createVariable("u16", "u2", ("time", "lat"))[:] = np.arange(60000, 60006).reshape(2, 3) + i
            nc.createVariable("u32", "u4", ("lat",))[:] = [4000000000, 1, 2]
            nc.Conventions = "CF-1.8"
        paths.append(path)
    return paths


# ------------------------------------------------------------------ time

def _time_without_units(i: int) -> str:
    return _grid(i).replace('time:units = "days since 2000-01-01" ; time:calendar = "standard" ; ', "")


def _undecodable_time(i: int) -> str:
    return _grid(i).replace('time:units = "days since 2000-01-01"', 'time:units = "days since the flood"')


def _nemo(i: int) -> str:
    """NEMO output: stacked along time_counter, whose real times are in time_centered (with bounds)."""
    start = i * 2 * 30 * 86400
    t = lambda k: start + k * 30 * 86400 + 15 * 86400  # noqa: E731
    return f"""netcdf f{i} {{
dimensions:
  y = 2 ; x = 3 ; time_counter = UNLIMITED ; axis_nbounds = 2 ;
variables:
  float nav_lat(y, x) ; nav_lat:standard_name = "latitude" ; nav_lat:units = "degrees_north" ;
  float nav_lon(y, x) ; nav_lon:standard_name = "longitude" ; nav_lon:units = "degrees_east" ;
  double time_centered(time_counter) ; time_centered:standard_name = "time" ;
    time_centered:units = "seconds since 1900-01-01 00:00:00" ; time_centered:calendar = "360_day" ;
    time_centered:bounds = "time_centered_bounds" ;
  double time_centered_bounds(time_counter, axis_nbounds) ;
  double time_counter(time_counter) ; time_counter:axis = "T" ; time_counter:standard_name = "time" ;
    time_counter:units = "seconds since 1900-01-01 00:00:00" ; time_counter:calendar = "360_day" ;
    time_counter:bounds = "time_counter_bounds" ;
  double time_counter_bounds(time_counter, axis_nbounds) ;
  float tos(time_counter, y, x) ; tos:coordinates = "time_centered nav_lat nav_lon" ; tos:_FillValue = 1.e20f ;
data:
  nav_lat = 10, 10, 10, 11, 11, 11 ; nav_lon = 1, 2, 3, 1, 2, 3 ;
  time_centered = {t(0)}, {t(1)} ;
  time_centered_bounds = {t(0) - 15 * 86400}, {t(0) + 15 * 86400}, {t(1) - 15 * 86400}, {t(1) + 15 * 86400} ;
  time_counter = {t(0)}, {t(1)} ;
  time_counter_bounds = {t(0) - 15 * 86400}, {t(0) + 15 * 86400}, {t(1) - 15 * 86400}, {t(1) + 15 * 86400} ;
  tos = {_values(i, 12, '_')} ;
}}
"""


def _calendar(calendar: str) -> Callable[[int], str]:
    """Daily files across the end of February (day 57 of the year is Feb 27 but in 360_day), in ``calendar``."""

    def cdl(i: int) -> str:
        text = _grid(i, times=[57 + 2 * i, 58 + 2 * i])
        return text.replace('time:calendar = "standard"', f'time:calendar = "{calendar}"')

    return cdl


def _per_file_epochs(i: int) -> str:
    units = ["days since 2000-01-01", "hours since 2000-01-03", "minutes since 2000-01-05 00:00:00"][i]
    text = _grid(i, times=[[0, 1], [0, 24], [0, 1440]][i])
    return text.replace('time:units = "days since 2000-01-01"', f'time:units = "{units}"')


def _leap_years(i: int) -> str:
    """Feb 28 - Mar 1 of 2000 (a leap year: 3 days) and of 2001 (2 days): files of different lengths."""
    return _grid(i, times=[[58, 59, 60], [424, 425]][i])


# ------------------------------------------------------------------ grids and storage

def _descending_lat(i: int) -> str:
    return _grid(i).replace("lat = -10, 0, 10 ;", "lat = 10, 0, -10 ;")


def _curvilinear(i: int) -> str:
    return f"""netcdf f{i} {{
dimensions:
  time = UNLIMITED ; y = 2 ; x = 3 ; nv = 4 ;
variables:
  double time(time) ; time:units = "days since 2000-01-01" ;
  double lat(y, x) ; lat:standard_name = "latitude" ; lat:units = "degrees_north" ; lat:bounds = "lat_vertices" ;
  double lon(y, x) ; lon:standard_name = "longitude" ; lon:units = "degrees_east" ;
  double lat_vertices(y, x, nv) ;
  float siconc(time, y, x) ; siconc:coordinates = "lat lon" ; siconc:units = "%" ;
data:
  time = {_times(i)} ;
  lat = 70.1, 70.2, 70.3, 71.1, 71.2, 71.3 ; lon = -10, 0, 10, -11, 0.5, 11 ;
  lat_vertices = {", ".join(str(69.5 + k * 0.1) for k in range(24))} ;
  siconc = {_values(i, 12)} ;
}}
"""


def _big_endian(i: int) -> str:
    return _grid(i, variables="""
  double be64(time, lat) ; be64:_Endianness = "big" ;
  short be16(time, lon) ; be16:_Endianness = "big" ; be16:scale_factor = 0.5f ;
  int le32(time, lon) ; le32:_Endianness = "little" ;
""", data=f"""  be64 = {_values(i, 6)} ; be16 = {_values(i, 8)} ; le32 = {_values(i, 8)} ;
""")


def _storage(i: int) -> str:
    """Contiguous storage needs fixed dimensions, so time is not unlimited here."""
    return _grid(i, variables="""
  float contiguous(time, lat, lon) ; contiguous:_Storage = "contiguous" ;
  float chunked(time, lat, lon) ; chunked:_Storage = "chunked" ; chunked:_ChunkSizes = 1, 2, 2 ;
  float deflated(time, lat, lon) ; deflated:_ChunkSizes = 2, 3, 4 ; deflated:_DeflateLevel = 4 ;
    deflated:_Shuffle = "true" ;
  short checksummed(time, lat, lon) ; checksummed:_ChunkSizes = 1, 3, 2 ; checksummed:_Fletcher32 = "true" ;
    checksummed:_DeflateLevel = 1 ;
""", data=f"""  contiguous = {_values(i, 24)} ; chunked = {_values(i + 1, 24)} ;
  deflated = {_values(i + 2, 24)} ; checksummed = {_values(i + 3, 24)} ;
""").replace("time = UNLIMITED", "time = 2")


def _enum(i: int) -> str:
    return _grid(i, header="types:\n  byte enum cloud_t { clear = 0, cumulus = 1, stratus = 2 } ;\n", variables="""
  cloud_t cloud(time, lat, lon) ;
""", data=f"""  cloud = {", ".join(["clear", "cumulus", "stratus"][(k + i) % 3] for k in range(24))} ;
""")


def _compound(i: int) -> str:
    return _grid(i, header="types:\n  compound wind_t { float u ; float v ; } ;\n", variables="""
  wind_t wind(time, lat) ;
""", data=f"""  wind = {", ".join("{" + f"{k + i}, {k - i}" + "}" for k in range(6))} ;
""")


# ------------------------------------------------------------------ the corpus

CASES: list[Case] = [
    Case("zero_d", "0-d variables: grid_mapping, scalar coordinate, scalar time", _zero_d),
    Case("packed_f32", "packed int8/int16/uint8, float32 scale_factor/add_offset", _packed("float", "f")),
    Case("packed_f64", "packed int8/int16/uint8, float64 scale_factor/add_offset", _packed("double", "")),
    Case("negative_scale", "packed int16 with a negative scale_factor", _negative_scale),
    Case("unsigned", "_Unsigned byte/short, with and without _FillValue", _unsigned),
    Case("fill_and_missing", "_FillValue different from missing_value", _fill_and_missing),
    Case("flags", "flag_values / flag_masks without _FillValue", _flags),
    Case("valid_range", "valid_range, valid_min/valid_max", _valid_range),
    Case("nan_fill_int", "NaN _FillValue on an integer variable", writer=_write_nan_fill_on_int),
    Case("char_arrays", "char arrays (fixed-length strings)", _chars),
    Case("vlen_strings", "variable-length strings", _vlen_strings),
    Case("missing_bounds", "bounds naming a variable that does not exist", _missing_bounds),
    Case("group_only", "data only in an HDF5 group, no group= given", lambda i: _group_file(i, "a"),
         expect="error", error=r"group_only_(\d)\.nc.*pattern index Index\(time=\1\).*no variables in its root group"
                               r".*\['a'\].*'group': 'a'"),
    Case("group_selected", "data in an HDF5 group, group= given", lambda i: _group_file(i, "a"),
         open_kwargs={"group": "a"}),
    Case("nested_group", "data in a nested HDF5 group, group= given", lambda i: _group_file(i, "a/b"),
         open_kwargs={"group": "a/b"}),
    Case("phony_dims", "phony dimensions (HDF5 without dimension scales)", writer=_write_phony_dims,
         file_type="hdf5", concat_dim="phony_dim_0"),
    Case("time_lon_lat", "(time, lon, lat) dimension order", _time_lon_lat),
    Case("unlimited_not_time", "an unlimited dimension that is not time", _unlimited_not_time, concat_dim="obs"),
    Case("netcdf3_classic", "netCDF-3 classic", _netcdf3, kind="classic", file_type="netcdf3"),
    Case("netcdf3_64bit", "netCDF-3 64-bit offset", _netcdf3, kind="64-bit-offset", file_type="netcdf3"),
    Case("cdf5", "CDF5 (64-bit data): int64, uint64, unsigned", writer=_write_cdf5, file_type="netcdf3"),
    Case("time_no_units", "time with no units", _time_without_units),
    Case("undecodable_time", "a time that cannot be decoded", _undecodable_time, expect="error",
         error=r"undecodable_time_(\d)\.nc.*pattern index Index\(time=\1\).*variable 'time'"
               r".*'days since the flood'.*expected"),
    Case("nemo", "real time in another variable (NEMO time_counter/time_centered)", _nemo,
         concat_dim="time_counter"),
    Case("cal_360_day", "360_day calendar", _calendar("360_day")),
    Case("cal_noleap", "noleap calendar", _calendar("noleap")),
    Case("cal_all_leap", "all_leap calendar", _calendar("all_leap")),
    Case("cal_julian", "julian calendar", _calendar("julian")),
    Case("per_file_epochs", "per-file time epochs", _per_file_epochs, n_files=3),
    Case("leap_years", "leap years: files of different lengths", _leap_years),
    Case("descending_lat", "descending latitude", _descending_lat),
    Case("curvilinear", "2-D curvilinear lat/lon", _curvilinear),
    Case("big_endian", "big-endian data", _big_endian),
    Case("storage", "contiguous, chunked, deflated and fletcher32 storage", _storage),
    Case("enum", "enum type", _enum),
    Case("compound", "compound type", _compound, expect="error",
         error=r"compound_(\d)\.nc.*pattern index Index\(time=\1\).*variable 'wind'.*compound type.*expected"),
]

BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES)
