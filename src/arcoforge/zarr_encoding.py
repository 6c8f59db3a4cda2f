"""A recipe's ``StoreToZarr(encoding=...)``: checked, split into CF and Zarr keys, codecs made to fit the format.

Recipes from the zarr-python 2 era write ``{"compressor": numcodecs.Zstd(3)}``;
zarr-python 3 takes ``compressors`` (a tuple), and a Zarr v3 array takes only
``zarr.codecs`` objects. So, per variable:

- ``compressor`` (one codec, or None) is the same as ``compressors=(codec,)``;
- for Zarr v3, numcodecs ``Zstd``, ``Blosc`` and ``GZip`` become
  ``ZstdCodec``, ``BloscCodec`` and ``GzipCodec`` with the same settings; for
  Zarr v2 those three ``zarr.codecs`` become their numcodecs twins; any other
  codec of the wrong kind is refused;
- ``serializer`` and ``shards`` exist in Zarr v3 only;
- a key that is neither CF nor Zarr (``chunks`` is set with ``target_chunks``)
  is refused with one line naming it and the keys that are understood.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import RecipeError
from .schema import CF_ENCODING_KEYS

# Encoding keys that choose how Zarr stores an array rather than what values mean.
ZARR_ENCODING_KEYS = ("compressors", "compressor", "filters", "serializer", "shards", "object_codec")
V3_ONLY_KEYS = ("serializer", "shards")
BLOSC_SHUFFLE = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}


def split_encoding(
    encoding: Mapping[str, Mapping[str, Any]] | None, variables: Iterable[str], zarr_format: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(CF keys, Zarr keys)`` of every variable of a recipe's ``encoding``, checked and made to fit."""
    names = sorted(variables)
    unknown_names = sorted(set(encoding or {}) - set(names))
    if unknown_names:
        raise RecipeError(f"encoding names variable {unknown_names[0]!r}, which the dataset does not have; "
                          f"its variables are {names}")
    return check_encoding(encoding, zarr_format)


def check_encoding(
    encoding: Mapping[str, Mapping[str, Any]] | None, zarr_format: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """What :func:`split_encoding` does without knowing the variables: StoreToZarr calls it when built."""
    if encoding is not None and not isinstance(encoding, Mapping):
        raise RecipeError(f"encoding must be a dict of variable names to dicts of encoding keys, got {encoding!r}")
    cf: dict[str, dict[str, Any]] = {}
    zarr_keys: dict[str, dict[str, Any]] = {}
    for name, overrides in (encoding or {}).items():
        if not isinstance(overrides, Mapping):
            raise RecipeError(f"encoding[{name!r}] must be a dict of encoding keys, got {overrides!r}")
        unknown = set(overrides) - set(CF_ENCODING_KEYS) - set(ZARR_ENCODING_KEYS)
        if unknown:
            hint = " (set chunks with target_chunks)" if "chunks" in unknown else ""
            raise RecipeError(
                f"encoding[{name!r}] has keys {sorted(unknown)} that are not understood{hint}; "
                f"expected some of {sorted(CF_ENCODING_KEYS + ZARR_ENCODING_KEYS)}"
            )
        cf[name] = {k: v for k, v in overrides.items() if k in CF_ENCODING_KEYS}
        zarr_keys[name] = zarr_array_encoding(name, {k: v for k, v in overrides.items() if k in ZARR_ENCODING_KEYS},
                                              zarr_format)
    return cf, zarr_keys


def zarr_array_encoding(name: str, requested: Mapping[str, Any], zarr_format: int) -> dict[str, Any]:
    """The Zarr keys of one variable as zarr-python 3 takes them for ``zarr_format``."""
    requested = dict(requested)
    if "compressor" in requested:
        if "compressors" in requested:
            raise RecipeError(f"encoding[{name!r}] has both compressor and compressors; give one of them")
        compressor = requested.pop("compressor")
        requested["compressors"] = None if compressor is None else (compressor,)
    if zarr_format == 2:
        misplaced = sorted(set(requested) & set(V3_ONLY_KEYS))
        if misplaced:
            raise RecipeError(f"encoding[{name!r}] has {misplaced}, which only Zarr v3 stores have; "
                              "use zarr_format=3 or leave them out")
    compressors = requested.get("compressors")
    if compressors is not None:
        if not isinstance(compressors, (list, tuple)):
            compressors = (compressors,)
        convert = _to_v3 if zarr_format == 3 else _to_v2
        requested["compressors"] = tuple(convert(name, codec) for codec in compressors)
    return requested


def _to_v3(name: str, codec: Any) -> Any:
    """A Zarr v3 bytes-to-bytes codec for ``codec`` (a zarr.codecs one, or numcodecs Zstd/Blosc/GZip)."""
    import numcodecs
    from zarr.abc.codec import BytesBytesCodec
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if isinstance(codec, BytesBytesCodec):
        return codec
    if isinstance(codec, numcodecs.Zstd):
        return ZstdCodec(level=codec.level, checksum=bool(getattr(codec, "checksum", False)))
    if isinstance(codec, numcodecs.Blosc):
        cname = codec.cname.decode() if isinstance(codec.cname, bytes) else codec.cname
        return BloscCodec(cname=cname, clevel=codec.clevel, shuffle=BLOSC_SHUFFLE.get(codec.shuffle),
                          blocksize=codec.blocksize)
    if isinstance(codec, numcodecs.GZip):
        return GzipCodec(level=codec.level)
    raise RecipeError(
        f"encoding[{name!r}]: compressor {codec!r} cannot be written to a Zarr v3 store; use "
        "zarr.codecs.ZstdCodec, BloscCodec or GzipCodec (or numcodecs Zstd, Blosc, GZip), or zarr_format=2"
    )


def _to_v2(name: str, codec: Any) -> Any:
    """A numcodecs codec for ``codec`` (a numcodecs one, or zarr.codecs Zstd/Blosc/Gzip)."""
    import numcodecs
    from numcodecs.abc import Codec
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if isinstance(codec, Codec):
        return codec
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
    if isinstance(codec, BloscCodec):
        shuffle = {v: k for k, v in BLOSC_SHUFFLE.items()}.get(getattr(codec.shuffle, "value", codec.shuffle),
                                                                numcodecs.Blosc.SHUFFLE)
        return numcodecs.Blosc(cname=getattr(codec.cname, "value", codec.cname), clevel=codec.clevel,
                               shuffle=shuffle, blocksize=codec.blocksize)
    if isinstance(codec, GzipCodec):
        return numcodecs.GZip(level=codec.level)
    raise RecipeError(
        f"encoding[{name!r}]: compressor {codec!r} cannot be written to a Zarr v2 store; use a numcodecs "
        "codec (numcodecs.Zstd, Blosc, GZip, ...), or zarr_format=3"
    )
