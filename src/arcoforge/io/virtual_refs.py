"""Virtual references to the inputs' own chunks, through VirtualiZarr: open, check, combine, write.

An input is read for its metadata only (VirtualiZarr's HDF5 or NetCDF3
parser): each variable becomes a manifest of (file, offset, length) per chunk,
except dimension coordinates and variables no bigger than the inline
threshold, which are loaded (kerchunk's "inlined" chunks). Combined along a
concat dimension, the references are written as a kerchunk JSON or parquet
file, or into an Icechunk repository whose virtual chunk container covers
the inputs' location. Readers then read the legacy files' bytes directly.

What references cannot express stops the bake with one line naming the file
and variable: a codec or layout Zarr has no equivalent for (the parser's
refusal), or an encoding that differs between files (chunks of one array
must share dtype, codecs, chunk shape, fill value and CF scaling).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import xarray as xr

from ..errors import InputError, RecipeError

logger = logging.getLogger(__name__)

# CF attributes whose difference between files would make one array's chunks mean different things.
VALUE_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "units", "calendar")


def as_url(path_or_url: str) -> str:
    """An absolute URL (``file://`` for local paths), as references record them."""
    import os

    if "://" in path_or_url:
        return path_or_url
    return "file://" + os.path.abspath(path_or_url)


def registry_for(urls: Iterable[str], storage_options: Mapping[str, Any] | None = None) -> Any:
    """An obstore registry that reaches every URL (local files, HTTP(S) hosts, S3 buckets)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import HTTPStore, LocalStore, S3Store

    from .filesystems import options_for

    stores: dict[str, Any] = {}
    for url in urls:
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}"
        if root in stores:
            continue
        if parts.scheme == "file":
            stores[root] = LocalStore()
        elif parts.scheme in ("http", "https"):
            stores[root] = HTTPStore.from_url(root, client_options={"allow_http": parts.scheme == "http"})
        elif parts.scheme == "s3":
            options = options_for(url, storage_options)
            client = dict(options.get("client_kwargs") or {})
            endpoint = options.get("endpoint_url")
            config = {k: v for k, v in {
                "aws_access_key_id": options.get("key"), "aws_secret_access_key": options.get("secret"),
                "aws_region": client.get("region_name"), "aws_endpoint": endpoint,
                "aws_skip_signature": bool(options.get("anon")) or None,
            }.items() if v is not None}
            stores[root] = S3Store(parts.netloc, config=config,
                                   client_options={"allow_http": bool(endpoint and endpoint.startswith("http://"))})
        else:
            raise RecipeError(f"virtual references reach file://, http(s):// and s3:// inputs, not {url}")
    return ObjectStoreRegistry(stores)


def parser_for(file_type: str) -> Any:
    """VirtualiZarr's parser for a pattern's file type (``netcdf4``/``hdf5``, ``netcdf3``)."""
    from virtualizarr.parsers import HDFParser, NetCDF3Parser

    kind = str(getattr(file_type, "value", file_type) or "netcdf4").lower()
    if kind in ("netcdf4", "hdf5", "h5", "unknown"):
        return HDFParser()
    if kind == "netcdf3":
        return NetCDF3Parser()
    raise RecipeError(f"no virtual-reference parser for file type {kind!r} (netcdf4, hdf5 or netcdf3)")


def open_virtual(url: str, file_type: str = "netcdf4", inline_threshold: int = 300,
                 storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The virtual dataset of one input: chunk references, small variables (<= ``inline_threshold`` bytes) loaded."""
    from virtualizarr import open_virtual_dataset

    url = as_url(url)
    registry = registry_for([url], storage_options)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vds = open_virtual_dataset(url, registry=registry, parser=parser_for(file_type))
            small = [str(n) for n, v in vds.variables.items() if _is_virtual(v) and v.nbytes <= inline_threshold]
            if small:
                loaded = [*small, *(str(d) for d in vds.dims if d in vds.variables)]
                vds = open_virtual_dataset(url, registry=registry, parser=parser_for(file_type),
                                           loadable_variables=loaded)
    except (NotImplementedError, ValueError, TypeError, KeyError) as error:
        variable = _variable_named(str(error)) or _failing_variable(url, registry, file_type)
        where = f", variable {variable!r}" if variable else ""
        raise InputError(f"{url}{where}: cannot be referenced virtually: {error}") from error
    for name, variable in vds.variables.items():
        if variable.dtype.fields is not None:  # Zarr v3 has no structured dtypes readers agree on
            raise InputError(f"{url}, variable {name!r}: cannot be referenced virtually: compound dtype "
                             f"{variable.dtype}; drop it (Preprocess) and copy with StoreToZarr instead")
    vds.encoding["source"] = url
    return vds


def _failing_variable(url: str, registry: Any, file_type: str) -> str | None:
    """Which variable the parser refuses, found by parsing each alone (only after a failure; HDF5 only)."""
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    if not isinstance(parser_for(file_type), HDFParser):
        return None
    try:
        names = _hdf5_variables(url, registry)
    except Exception:  # noqa: BLE001 - only a better message is at stake
        return None
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                open_virtual_dataset(url, registry=registry,
                                     parser=HDFParser(drop_variables=[n for n in names if n != name]))
        except Exception:  # noqa: BLE001
            return name
    return None


def _hdf5_variables(url: str, registry: Any) -> list[str]:
    """The root datasets of an HDF5 file, read through the registry's store (metadata only)."""
    import h5py
    from obspec_utils.readers import BlockStoreReader

    store, path = registry.resolve(url)
    with h5py.File(BlockStoreReader(store, path), "r") as f:
        return [name for name, node in f.items() if isinstance(node, h5py.Dataset)]


def _variable_named(message: str) -> str | None:
    """The variable an error message quotes, if it names one."""
    import re

    found = re.search(r"[Vv]ariable '?\"?([\w./-]+)", message)
    return found.group(1) if found else None


def _is_virtual(variable: xr.Variable) -> bool:
    from virtualizarr.manifests import ManifestArray

    return isinstance(variable.data, ManifestArray)


def _layout(variable: xr.Variable) -> dict[str, Any]:
    """What must be equal for one array's chunks to come from different files."""
    if not _is_virtual(variable):  # loaded and decoded: any encoding combines
        return {}
    layout = {key: repr(variable.attrs.get(key, variable.encoding.get(key))) for key in VALUE_ATTRS}
    metadata = variable.data.metadata
    layout.update(dtype=str(metadata.data_type), chunks=repr(variable.data.chunks),
                  codecs=repr([c.to_dict() for c in metadata.codecs]), fill=repr(metadata.fill_value))
    return layout


def check_combinable(datasets: Sequence[xr.Dataset], concat_dim: str, identical_dims: Iterable[str] = ()) -> None:
    """Stop, naming file and variable, when the inputs' references cannot form one store."""
    first = datasets[0]
    for ds in datasets[1:]:
        source = ds.encoding.get("source", "an input")
        for name, variable in ds.variables.items():
            if name not in first.variables:
                raise InputError(f"{source}: variable {name!r} is not in {first.encoding.get('source')}")
            reference = first.variables[name]
            if _is_virtual(variable) != _is_virtual(reference):
                raise InputError(f"{source}: variable {name!r} is referenced in one file and inlined in another; "
                                 "raise inline_threshold or make the files' layouts equal")
            ours, theirs = _layout(variable), _layout(reference)
            for key in ours:
                if key == "chunks" and concat_dim in variable.dims:
                    continue  # the concat axis may end in a partial chunk
                if ours[key] != theirs[key]:
                    raise InputError(
                        f"{source}: variable {name!r} has {key} {ours[key]}, {theirs[key]} in "
                        f"{first.encoding.get('source')}: references cannot combine them (inline_threshold >= "
                        f"{variable.nbytes} loads it instead; StoreToZarr copies any encodings)")
        for name in identical_dims:
            if name in ds.variables and not _is_virtual(ds[name].variable) and \
                    not np.array_equal(ds[name].values, first[name].values):
                raise InputError(f"{source}: variable {name!r} differs from {first.encoding.get('source')} "
                                 "but is listed in identical_dims")


def combine(datasets: Sequence[xr.Dataset], concat_dims: Sequence[str],
            identical_dims: Iterable[str] = ()) -> xr.Dataset:
    """The inputs' virtual datasets (in pattern order) concatenated along the one concat dimension."""
    if len(concat_dims) != 1:
        raise RecipeError(f"virtual references combine along one concat dimension, not {list(concat_dims)}")
    dim = concat_dims[0]
    check_combinable(datasets, dim, identical_dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.concat(list(datasets), dim=dim, coords="minimal", compat="override", combine_attrs="override",
                         data_vars="minimal")


def write_reference_file(vds: xr.Dataset, url: str, storage_options: dict | None = None) -> str:
    """Write kerchunk references (``.json``, or ``.parquet``) to ``url``; returns it.

    JSON is written whole or not at all (a reader never sees half a file), on any
    fsspec filesystem (``storage_options``); parquet references are a folder kerchunk
    writes on a local path.
    """
    import json
    import os

    from .atomic import write_atomically
    from .filesystems import filesystem

    fmt = "parquet" if url.rstrip("/").endswith(".parquet") else "json"
    if fmt == "parquet" and "://" in url and not url.startswith("file://"):
        raise RecipeError(f"parquet references are written on a local path only, not {url}: "
                          "write reference.json, or bake to a local target and copy the folder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "json":
            fs, path = filesystem(url, storage_options)
            refs = vds.vz.to_kerchunk(format="dict")
            write_atomically(path, json.dumps(refs).encode(), fs)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
            vds.vz.to_kerchunk(url, format=fmt)
    logger.info("wrote %s references of %s", fmt, url)
    return url


def container_prefix(urls: Iterable[str]) -> str:
    """The location every input is under (a folder URL ending in ``/``), for a virtual chunk container."""
    import os

    folders = [u.rsplit("/", 1)[0] + "/" for u in urls]
    prefix = os.path.commonprefix(folders)
    parts = urlsplit(prefix)
    if not parts.path or parts.path == "/":
        return f"{parts.scheme}://{parts.netloc}/"
    return prefix[: prefix.rfind("/") + 1]


def chunk_container(prefix: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """Icechunk's virtual chunk container for inputs under ``prefix``."""
    import icechunk

    from .filesystems import options_for

    parts = urlsplit(prefix)
    if parts.scheme == "file":
        store = icechunk.local_filesystem_store(parts.path)
    elif parts.scheme in ("http", "https"):
        store = icechunk.http_store()
    elif parts.scheme == "s3":
        options = options_for(prefix, storage_options)
        endpoint = options.get("endpoint_url")
        store = icechunk.s3_store(region=(options.get("client_kwargs") or {}).get("region_name"),
                                  endpoint_url=endpoint, allow_http=bool(endpoint and endpoint.startswith("http://")),
                                  force_path_style=bool(endpoint))
    else:
        raise RecipeError(f"no Icechunk virtual chunk container for {prefix}")
    return icechunk.VirtualChunkContainer(prefix, store)


def check_icechunk_can_read(urls: Iterable[str]) -> None:
    """Stop before writing references this Icechunk would store but not read back.

    Icechunk 1.x drops the port of an HTTP(S) chunk URL when it reads a virtual
    chunk (icechunk issue 2223, fixed in 2.x), so such references would point elsewhere.
    """
    import icechunk

    if int(str(icechunk.__version__).split(".")[0]) >= 2:
        return
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.port is not None:
            raise RecipeError(f"{url}: Icechunk {icechunk.__version__} reads virtual chunks over HTTP without the "
                              f"URL's port (:{parts.port}); serve the inputs on the default port, reference them "
                              "with WriteCombinedReference, or use Icechunk 2")


def container_credentials(prefix: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """What readers (and the writer) pass Icechunk to read chunks under ``prefix`` (``None``: no credentials)."""
    import icechunk

    from .filesystems import options_for

    if not prefix.startswith("s3://"):
        return None
    options = options_for(prefix, storage_options)
    if options.get("anon"):
        return icechunk.s3_anonymous_credentials()
    if options.get("key"):
        return icechunk.s3_static_credentials(access_key_id=options["key"], secret_access_key=options["secret"])
    return icechunk.s3_from_env_credentials()


def write_virtual_icechunk(vds: xr.Dataset, url: str, sources: Sequence[str], branch: str, message: str,
                           record: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None,
                           source_options: Mapping[str, Any] | None = None) -> str:
    """Commit the references into the repository at ``url`` (created with a container for the inputs' prefix).

    The branch's content is replaced, in one commit; returns its snapshot id.
    """
    import icechunk

    from . import icechunk_store as ics

    check_icechunk_can_read(sources)
    prefix = container_prefix(sources)
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(chunk_container(prefix, source_options))
    repo = ics.open_repository(url, storage_options, config=config,
                               virtual_credentials={prefix: container_credentials(prefix, source_options)})
    repo.save_config()  # a repository made before keeps our container too (the config given overrides its own)
    base = ics.branch_head(repo, branch)
    session = repo.writable_session(branch) if base else ics.start_scratch(repo, branch, "virtual", None)
    ics.clear(session.store)
    import datetime as dt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Icechunk then refuses to read a chunk of a file modified after this moment, rather than read
        # whatever bytes now sit at the recorded offset. It compares whole seconds: rounded up, so that
        # an input written in the second the references are committed still reads.
        now = dt.datetime.now(dt.timezone.utc)
        vds.vz.to_icechunk(session.store, last_updated_at=now.replace(microsecond=0) + dt.timedelta(seconds=1))
    snapshot = session.commit(message, metadata={ics.METADATA_KEY: dict(record)})
    if base is None:
        ics.move_branch(repo, branch, snapshot, None)
        ics.drop_branch(repo, ics.scratch_branch(branch, "virtual"))
    logger.info("committed virtual references of %d inputs to %s@%s (%s)", len(sources), url, branch, snapshot)
    return snapshot
