"""The write plan of a store: chunks, shards, encodings and the write tasks, decided before anything is written.

Planning is pure: it reads no file and writes none, so a plan can be made,
fingerprinted (:func:`plan_description`) and compared with the plan of an
earlier attempt (a rerun with an equal plan resumes) without touching the
store. Writing the plan out is :mod:`arcoforge.io.zarr_store`'s business; the
template it renders is :mod:`arcoforge.store_template`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dask.utils import format_bytes

from .chunking import (
    TargetChunks,
    describe_chunks,
    parse_size,
    resolve_target_chunks,
    resolve_target_shards,
    variable_chunks,
    variable_shards,
)
from .errors import RecipeError
from .multistage import DEFAULT_THRESHOLD, StagePlan, plan_stages, source_chunking
from .packing import store_value_encoding
from .rechunk import MAX_PIECES_PER_TASK, TASK_TARGET_BYTES, TaskGrid, group_variables, plan_task_grid
from .schema import DatasetSchema, VariableSchema, schema_as_dataset
from .zarr_encoding import split_encoding

logger = logging.getLogger(__name__)

DEFAULT_MAX_MEM = "1GB"


@dataclass
class ExistingStore:
    """What an append needs to know of the store it extends."""

    url: str
    append_dim: str
    length: int
    sizes: dict[str, int]
    variables: dict[str, tuple[tuple[str, ...], np.dtype, dict[str, Any]]]
    chunks: dict[str, tuple[int, ...]]
    shards: dict[str, tuple[int, ...] | None]
    coordinate: np.ndarray | None
    ingested: list[str] = field(default_factory=list)


@dataclass
class StorePlan:
    """Everything a worker needs to write its part of a store."""

    url: str
    schema: DatasetSchema
    chunks: dict[str, tuple[int, ...]]
    # write-task groups (variables of one shape and unit, written together) and their task grids
    groups: dict[str, list[str]]
    grids: dict[str, TaskGrid]
    shards: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    zarr_format: int = 3
    attrs: dict[str, Any] = field(default_factory=dict)
    zarr_encoding: dict[str, dict[str, Any]] = field(default_factory=dict)
    storage_options: dict | None = None
    max_mem: int = 0
    # Resuming: write tasks already done by an earlier attempt of the same plan (their ids).
    done: frozenset[str] = frozenset()
    resume: bool = False
    # Appending along this dimension to a complete store (None: a fresh bake).
    append_dim: str | None = None
    # Nothing to do: an append whose inputs the store already holds.
    nothing_new: bool = False
    # Every metadata document of the store as this plan leaves it (consolidated), by key.
    documents: dict[str, bytes] = field(default_factory=dict)
    # Appending: the store's length along append_dim before the append.
    append_origin: int = 0
    # The inputs the store holds once this plan is done (those held before an append, and the new).
    ingested: Sequence[str] = ()  # packed (arcoforge.packed_strings) when planned
    # Groups rechunked in two stages (see arcoforge.multistage): their grids are stage 2's.
    stages: dict[str, StagePlan] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return sum(len(grid) for grid in self.grids.values())

    @property
    def nbytes(self) -> int:
        """Bytes of decoded array data the bake writes (concat coordinates excluded)."""
        return sum(
            math.prod(s.stop - s.start for s in self.grids[group].region(task)) * self.schema.variables[name].dtype.itemsize
            for group, names in self.groups.items()
            for task in self.grids[group]
            for name in names
        )


def plan_store(
    schema: DatasetSchema,
    url: str,
    target_chunks: TargetChunks = None,
    attrs: Mapping[str, Any] | None = None,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    zarr_format: int = 3,
    storage_options: dict | None = None,
    target_shards: Mapping[str, int] | None = None,
    max_mem: int | str = DEFAULT_MAX_MEM,
    dynamic_chunking_fn: Callable[..., Mapping[str, int]] | None = None,
    dynamic_chunking_fn_kwargs: Mapping[str, Any] | None = None,
    append_to: "ExistingStore | None" = None,
    max_pieces_per_task: int = MAX_PIECES_PER_TASK,
    multistage_threshold: float | None = DEFAULT_THRESHOLD,
) -> StorePlan:
    """Resolve chunks, shards and write tasks, and apply encoding overrides, for a combined schema.

    ``encoding`` maps variable names to CF keys (``units``, ``calendar``,
    ``dtype``, ``_FillValue``, ``scale_factor``, ``add_offset``) and Zarr keys
    (``compressors`` or ``compressor``, ``filters``, ``serializer``; see
    :mod:`arcoforge.zarr_encoding`). ``max_mem`` bounds the array
    data one worker holds while writing (see :mod:`arcoforge.rechunk`). With
    ``append_to`` (the store being extended, see :mod:`arcoforge.append`) the
    store's own chunks and shards are kept and tasks cover only the new region.
    A write task gathers the pieces of at most about ``max_pieces_per_task``
    inputs (unless one write unit alone spans more). A group whose one-pass
    tasks would inflate its inputs more than ``multistage_threshold`` times is
    rechunked in two stages when that costs less (``None``: always one pass).
    """
    if zarr_format not in (2, 3):
        raise RecipeError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if target_shards and zarr_format != 3:
        raise RecipeError("target_shards needs zarr_format=3: Zarr v2 has no shards")
    max_mem_bytes = parse_size(max_mem, "max_mem")
    # The plan changes encodings only: copying the concat coordinates too (cftime objects) took 0.1 s a store.
    schema = dataclasses.replace(schema, variables={
        name: dataclasses.replace(v, attrs=copy.deepcopy(v.attrs), encoding=copy.deepcopy(v.encoding))
        for name, v in schema.variables.items()})
    cf_overrides, zarr_encoding = split_encoding(encoding, schema.variables, zarr_format)
    if append_to is None:  # an append writes with the store's own encoding (see arcoforge.append)
        for name, variable in schema.variables.items():
            variable.encoding = store_value_encoding(name, variable.dtype, variable.encoding,
                                                     cf_overrides.get(name))
    for variable in schema.variables.values():
        if variable.dtype.kind == "M" and "units" not in variable.encoding:
            # Without fixed units each chunk would pick its own epoch.
            variable.encoding.update(units="seconds since 1970-01-01", calendar="standard", dtype="<f8")
    if dynamic_chunking_fn is not None:
        if target_chunks:
            raise RecipeError("pass either target_chunks or dynamic_chunking_fn, not both")
        target_chunks = dynamic_chunking_fn(schema_as_dataset(schema), **dict(dynamic_chunking_fn_kwargs or {}))
    dim_chunks = resolve_target_chunks(schema, target_chunks)
    chunks = variable_chunks(schema, dim_chunks)
    shards = variable_shards(schema, chunks, resolve_target_shards(schema, dim_chunks, target_shards))
    origin: dict[str, int] = {}
    if append_to is not None:
        chunks, shards = dict(append_to.chunks), dict(append_to.shards)
        origin = {append_to.append_dim: append_to.length}
    else:
        for name in schema.concat_coords:  # room to append without changing the chunk readers use
            chunks[name] = (coordinate_capacity(schema.variables[name].shape[0]),)
    # Variables of a group must also come from the same inputs (the same merge position).
    groups = group_variables({
        name: (variable.dims, variable.shape, shards[name] or chunks[name], schema.merge_sources[name])
        for name, variable in schema.variables.items()
        if name not in schema.concat_coords  # written whole with the template
        and (not origin or set(origin) & set(variable.dims))  # an append rewrites only what grows
    })
    grids = {}
    for group, names in list(groups.items()):
        variable = schema.variables[names[0]]

        def grid_for(members: list[str]) -> TaskGrid:
            grid = plan_task_grid(
                "+".join(members),
                variable.shape,
                shards[group] or chunks[group],
                [axis for axis, dim in enumerate(variable.dims) if dim in schema.concat_dims],
                # a task writes its variables one after another
                max(working_bytes_per_element(schema.variables[name]) for name in members),
                max_mem_bytes,
                # the shortest input along each concat axis: how many pieces a task gathers
                {axis: int(schema.lengths[dim].min()) if len(schema.lengths[dim]) else 1
                 for axis, dim in enumerate(variable.dims) if dim in schema.lengths},
                max_pieces_per_task,
            )
            if origin:
                start = tuple(origin.get(dim, 0) for dim in variable.dims)
                grid = TaskGrid(grid.shape, grid.task_shape, grid.unit, origin=start)
            return grid

        grids[group] = grid_for(names)
    stages = {} if origin or multistage_threshold is None else plan_group_stages(
        schema, groups, grids, max_mem_bytes, multistage_threshold)
    logger.info(
        "plan for %s: chunks %s%s; %d write tasks within max_mem=%s",
        url, describe_chunks(dim_chunks),
        f", shards {describe_chunks(resolve_target_shards(schema, dim_chunks, target_shards) or {})}"
        if target_shards else "",
        sum(len(g) for g in grids.values()), format_bytes(max_mem_bytes),
    )
    return StorePlan(
        url=url,
        schema=schema,
        chunks=chunks,
        groups=groups,
        grids=grids,
        shards=shards,
        zarr_format=zarr_format,
        attrs=dict(attrs or {}),
        zarr_encoding=zarr_encoding,
        storage_options=storage_options,
        max_mem=max_mem_bytes,
        append_dim=append_to.append_dim if append_to is not None else None,
        stages=stages,
    )


def plan_group_stages(schema: DatasetSchema, groups: dict[str, list[str]], grids: dict[str, TaskGrid],
                      max_mem: int, threshold: float) -> dict[str, StagePlan]:
    """The groups worth rechunking in two stages, and their stage plans.

    The inputs' own chunking is not in the schema, so each input is taken as
    one chunk per variable (what a compressed one-step field is). Only plain
    numbers are staged: the intermediate holds decoded values as they are.
    """
    stages = {}
    for group, names in groups.items():
        variable = schema.variables[names[0]]
        if not variable.dims or any(schema.variables[n].dtype.kind not in "biufc" for n in names):
            continue
        concat = {axis: schema.lengths[dim] for axis, dim in enumerate(variable.dims) if dim in schema.lengths}
        stage = plan_stages(variable.shape, source_chunking(variable.shape, concat), grids[group].task_shape,
                            max(working_bytes_per_element(schema.variables[n]) for n in names), max_mem, threshold,
                            grow_to=TASK_TARGET_BYTES)
        if stage is not None:
            logger.info("variable %s: %s", "+".join(names), stage.describe())
            stages[group] = stage
    return stages


def coordinate_capacity(length: int) -> int:
    """The chunk length of a concat coordinate: twice its length, rounded up to a power of two.

    Appends write their values into the spare room of that one chunk (or into
    new chunks beyond it), never changing the chunk shape old readers decode with.

    >>> coordinate_capacity(365), coordinate_capacity(1)
    (1024, 2)
    """
    return 1 << max(2 * int(length) - 1, 1).bit_length()


def working_bytes_per_element(variable: VariableSchema) -> int:
    """Memory a write task needs per element of a variable it writes.

    The assembled (decoded) buffer, plus what encoding and compression allocate:
    packing into integers or changing the dtype makes a float temporary and the
    encoded copy; compressing one chunk took about 0.75x its bytes (measured).
    Object arrays (cftime) get a generous guess.
    """
    itemsize = variable.dtype.itemsize if variable.dtype.kind != "O" else 64
    encoding = variable.encoding
    converts = "scale_factor" in encoding or "add_offset" in encoding or (
        "dtype" in encoding and np.dtype(encoding["dtype"]) != variable.dtype
    )
    return itemsize * (3 if converts else 2)


def store_url(target_root: str, store_name: str) -> str:
    """The URL of a store named ``store_name`` under ``target_root``.

    >>> store_url("/data/out/", "sst.zarr")
    '/data/out/sst.zarr'
    >>> store_url("s3://bucket/prefix", "sst.zarr")
    's3://bucket/prefix/sst.zarr'

    A name that would leave ``target_root`` (``../x.zarr``, ``/x.zarr``...) is a
    :class:`RecipeError` naming ``store_name`` (see :mod:`arcoforge.names`).
    """
    from .names import join_under

    return join_under(target_root, store_name, "store_name")


RECORDED_ITEMS = 100  # longer lists of a plan's description are recorded by count, ends and digest


def recorded_description(description: Mapping[str, Any]) -> dict[str, Any]:
    """A plan's description as ``plan.json`` records it: per-input lists (URLs, lengths) summarised.

    The fingerprint is of the whole description; the record is for people, and a
    list of a million URLs in it would be read by no one but cost every bake.

    >>> record = recorded_description({"url": "s3://b/a.zarr", "inputs": [f"{i}.nc" for i in range(1000)]})
    >>> record["inputs"]["count"], record["inputs"]["last"]
    (1000, '999.nc')
    """
    def recorded(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(key): recorded(item) for key, item in value.items()}
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            if len(value) <= RECORDED_ITEMS:
                return [recorded(item) for item in value]
            digest = hashlib.sha256()
            for item in value:
                digest.update(json.dumps(item, default=repr).encode() + b"\n")
            return {"count": len(value), "first": recorded(value[0]), "last": recorded(value[-1]),
                    "sha256": digest.hexdigest()}
        return value if value is None or isinstance(value, (str, int, float, bool)) else repr(value)
    return recorded(description)


def plan_description(plan: "StorePlan") -> dict[str, Any]:
    """What defines a write plan: equal descriptions write equal chunks, so a rerun may resume.

    Provenance attributes (bake time, versions) are left out: they change with
    every run without changing a single chunk.
    """
    schema = plan.schema
    return {
        "url": plan.url,
        "zarr_format": plan.zarr_format,
        "dims": schema.dims,
        "variables": {
            name: {"dims": v.dims, "dtype": v.dtype.str, "encoding": sorted((k, repr(x)) for k, x in v.encoding.items())}
            for name, v in schema.variables.items()
        },
        "chunks": plan.chunks,
        "shards": plan.shards,
        "tasks": {group: grid.task_shape for group, grid in plan.grids.items()},
        "groups": plan.groups,
        "zarr_encoding": repr(sorted(plan.zarr_encoding.items())),
        "inputs": schema.urls,
        "lengths": {dim: lengths.tolist() for dim, lengths in schema.lengths.items()},
        "attrs": repr(sorted((k, v) for k, v in plan.attrs.items() if not str(k).startswith("arcoforge_"))),
        # a rerun after a skipped input was fixed must write that input, not resume past it
        "skipped": repr(schema.attrs.get("arcoforge_skipped_inputs")),
        # (only when staged: the fingerprints of one-pass plans stay what they were)
        **({"stages": {group: (stage.intermediate, stage.stage1_task) for group, stage in plan.stages.items()}}
           if plan.stages else {}),
    }
