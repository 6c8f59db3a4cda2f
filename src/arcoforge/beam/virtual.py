"""Virtual outputs with pangeo-forge-recipes 0.10's names: references to the inputs' chunks, no data copied.

``beam.Create(pattern.items()) | OpenWithKerchunk(file_type=...) | WriteCombinedReference(...)``
writes a kerchunk JSON or parquet file; ``| WriteVirtualIcechunk(...)`` commits the
same references into an Icechunk repository. The work is :mod:`arcoforge.io.virtual_refs`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from ..errors import RecipeError, require_package
from ..io import virtual_refs as vr
from ..patterns import FileType, Index
from ..runtime.context import BakeContext, resolve_context
from ..store_plan import store_url
from .common import count


def _open(element: tuple[Index, str], file_type: Any, inline_threshold: int, storage_options: dict | None) -> tuple:
    index, url = element
    count("inputs_read")
    return index, vr.open_virtual(str(url), file_type, inline_threshold, storage_options)


def _in_order(elements: list[tuple[Index, Any]], concat_dims: Sequence[str]) -> list:
    """The virtual datasets in the pattern's order along the concat dimension."""
    return [ds for _, ds in sorted(elements, key=lambda e: tuple(e[0].find_position(d).value for d in concat_dims))]


def _write_references(elements: list, concat_dims: Sequence[str], identical_dims: Sequence[str], url: str,
                      storage_options: dict | None) -> str:
    return vr.write_reference_file(vr.combine(_in_order(elements, concat_dims), concat_dims, identical_dims), url,
                                   storage_options)


def _write_icechunk(elements: list, concat_dims: Sequence[str], identical_dims: Sequence[str], url: str,
                    branch: str, storage_options: dict | None, source_options: dict | None) -> str:
    from .. import __version__
    from ..core.icechunk_bake import inputs_hash

    datasets = _in_order(elements, concat_dims)
    sources = [ds.encoding["source"] for ds in datasets]
    digest, recipe = inputs_hash(sources), url.rstrip("/").rsplit("/", 1)[-1]
    message = f"arcoforge {__version__}: virtual references of recipe {recipe}, {len(sources)} inputs " \
              f"(inputs sha256 {digest})"
    record = {"kind": "virtual", "recipe": recipe, "inputs_sha256": digest, "n_inputs": len(sources),
              "arcoforge_version": __version__, "ingested": sources}
    vr.write_virtual_icechunk(vr.combine(datasets, concat_dims, identical_dims), url, sources, branch, message,
                              record, storage_options, source_options)
    return url


@dataclass
class OpenWithKerchunk(beam.PTransform):
    """``(index, url)`` -> ``(index, virtual Dataset)``: each input's chunk references, read from its metadata.

    ``file_type`` is the pattern's (netcdf4/hdf5 or netcdf3); variables of at most
    ``inline_threshold`` bytes are loaded rather than referenced. ``storage_options``
    reach the inputs (flat, or keyed by protocol); default: the bake context's source options.
    """

    file_type: FileType | str = FileType.netcdf4
    inline_threshold: int = 300
    storage_options: dict | None = None
    context: BakeContext | None = None

    def __post_init__(self) -> None:
        require_package("virtualizarr", "virtual", "OpenWithKerchunk")
        vr.parser_for(self.file_type)  # a file type without a parser fails now, not in a worker

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        options = self.storage_options or resolve_context(self.context).source_storage_options
        return items | "Open references" >> beam.Map(_open, self.file_type, self.inline_threshold, options)


@dataclass
class _CombineVirtual(beam.PTransform):
    """What both virtual writers share: where they write, and their checked arguments."""

    store_name: str
    concat_dims: list[str] = field(default_factory=list)
    identical_dims: list[str] = field(default_factory=list)
    target_root: str | None = None
    storage_options: dict | None = None
    context: BakeContext | None = None

    def _target(self) -> tuple[str, BakeContext]:
        context = resolve_context(self.context)
        root = context.choose("target_root", self.target_root)
        if not root:
            raise RecipeError(f"{type(self).__name__}({self.store_name!r}) has no target_root: pass target_root=..., "
                              "or run the recipe with `arcoforge bake --target-root URL`")
        if len(self.concat_dims) != 1:
            raise RecipeError(f"{type(self).__name__}({self.store_name!r}): one concat dim, not {self.concat_dims}")
        return store_url(str(root), self.store_name), context


@dataclass
class WriteCombinedReference(_CombineVirtual):
    """Combine the inputs' references along ``concat_dims`` into ``<target_root>/<store_name>/<output_file_name>``.

    ``output_file_name`` ending in ``.parquet`` writes kerchunk's parquet
    references, else JSON. Outputs the file's URL; open it with
    ``xr.open_dataset(url, engine="kerchunk")``.
    """

    output_file_name: str = "reference.json"

    def __post_init__(self) -> None:
        if self.output_file_name.endswith(".parquet"):
            require_package("fastparquet", "virtual", f"WriteCombinedReference({self.output_file_name!r})")

    def expand(self, opened: beam.PCollection) -> beam.PCollection:
        url, context = self._target()
        options = context.choose("storage_options", self.storage_options)
        return (opened
                | "Gather references" >> beam.combiners.ToList()
                | "Write references" >> beam.Map(_write_references, list(self.concat_dims),
                                                 list(self.identical_dims), f"{url}/{self.output_file_name}", options))


@dataclass
class WriteVirtualIcechunk(_CombineVirtual):
    """Commit the inputs' combined references to ``branch`` of the Icechunk repository ``<target_root>/<store_name>``.

    The repository gets a virtual chunk container for the folder the inputs
    share; readers authorize it (``authorize_virtual_chunk_access``). Outputs
    the repository's URL (so ``| WriteSTAC()`` follows; the collection records
    the snapshot id and the container).
    """

    branch: str = "main"
    source_storage_options: dict | None = None

    def __post_init__(self) -> None:
        require_package("icechunk", "virtual", f"WriteVirtualIcechunk({self.store_name!r})")

    def expand(self, opened: beam.PCollection) -> beam.PCollection:
        url, context = self._target()
        options = self.storage_options or context.storage_options
        sources = self.source_storage_options or context.source_storage_options
        return (opened
                | "Gather references" >> beam.combiners.ToList()
                | "Commit references" >> beam.Map(_write_icechunk, list(self.concat_dims), list(self.identical_dims),
                                                  url, self.branch, options, sources))
