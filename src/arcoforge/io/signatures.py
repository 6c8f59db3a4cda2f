"""What a body is: the data-signature check every read of an input goes through.

A server that fails often answers with a page rather than an error status (an
HTML login form, a JSON error, a proxy's "502 Bad Gateway"). Such a body must
fail at once, permanently and with the input's name, not as a confusing engine
error or a cache entry full of HTML. There is one rule, used by the download
into the input cache (:mod:`arcoforge.io.cache`) and by the opener before a file
object is handed to xarray (:mod:`arcoforge.openers`):

- a body that looks like a text document (HTML, XML, JSON) is refused;
- when the reader knows which formats it can open (``file_type``), a body that
  does not start with one of their signatures is refused too;
- otherwise a binary body passes, known (GRIB, BUFR) or not: the xarray engine
  judges it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError, describe_input

# Leading bytes of the data formats known here.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "netcdf3": (b"CDF\x01", b"CDF\x02", b"CDF\x05"),
    "hdf5": (b"\x89HDF\r\n\x1a\n",),
    "grib": (b"GRIB",),
    "bufr": (b"BUFR",),
}
# The formats the engine chosen for a file type can read (FileType values); other file types pass any binary.
READABLE_FORMATS: dict[str, tuple[str, ...]] = {
    "netcdf3": ("netcdf3", "hdf5"),
    "netcdf4": ("netcdf3", "hdf5"),
    "hdf5": ("netcdf3", "hdf5"),
}
# How many leading bytes the check looks at.
SNIFF_BYTES = 64
_TEXT_STARTS = (b"<", b"{", b"[")


class NotDataError(InputError):
    """A remote body that is not a data file (an HTML error page, say): permanent."""


def data_format(start: bytes) -> str | None:
    """The known data format whose signature ``start`` begins with, if any.

    >>> data_format(b"\\x89HDF\\r\\n\\x1a\\n..."), data_format(b"GRIB..."), data_format(b"<html>")
    ('hdf5', 'grib', None)
    """
    return next((name for name, marks in SIGNATURES.items() if start.startswith(marks)), None)


def text_kind(start: bytes) -> str | None:
    """``"an HTML page"`` or ``"a text document"`` when ``start`` opens a markup or JSON document, else ``None``.

    >>> text_kind(b"  <!DOCTYPE html><html>"), text_kind(b'{"error": 1}'), text_kind(b"CDF\\x01")
    ('an HTML page', 'a text document', None)
    """
    if data_format(start) is not None:
        return None
    stripped = start.lstrip()
    if stripped[:1] in _TEXT_STARTS or stripped[:9].lower().startswith(b"<!doctype"):
        return "an HTML page" if b"html" in start.lower() else "a text document"
    return None


def check_data_signature(start: bytes, name: str, index: object = None, file_type: str | None = None) -> None:
    """Raise :class:`NotDataError` when a body starting with ``start`` is not data the reader can use.

    ``file_type`` (a :class:`~arcoforge.patterns.FileType` value) narrows the
    formats accepted to those its engine reads (:data:`READABLE_FORMATS`);
    without it only text documents are refused.
    """
    kind = text_kind(start)
    expected = READABLE_FORMATS.get(str(file_type)) if file_type is not None else None
    if expected is not None and data_format(start) not in expected:
        what = f", but {kind}" if kind else ""
        raise NotDataError(
            f"{describe_input(index, name)} is not a NetCDF or HDF5 file{what} "
            f"(it starts with {start[:32]!r}); expected a NetCDF3 or HDF5 signature"
        )
    if kind is not None:
        raise NotDataError(
            f"{describe_input(index, name)} is {kind}, not a NetCDF or HDF5 file "
            f"(it starts with {start[:32]!r}); expected a NetCDF3 or HDF5 signature"
        )


def check_file_signature(file_obj: Any, name: str, index: object = None, file_type: Any = None) -> None:
    """:func:`check_data_signature` on the first bytes of a seekable file object, left at its start again."""
    start = file_obj.read(SNIFF_BYTES)
    file_obj.seek(0)
    check_data_signature(start, name, index, getattr(file_type, "value", file_type))
