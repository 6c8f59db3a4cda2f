"""The checks of a store step's options, in one place: ``StoreToZarr`` raises them, ``lint`` reports them.

Each check returns plain messages (no Beam, no I/O), so a bake stops on the
same words ``arcoforge lint`` prints before anything runs.

>>> store_option_problems(store_name="sst.zarr", target_chunks={"time": 0}, zarr_format=4)
['zarr_format is 4; expected 2 or 3', "target_chunks['time'] is 0; expected a length of at least 1, or -1"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..chunking import parse_size
from ..errors import RecipeError
from ..zarr_encoding import check_encoding


class StoreOptionsError(RecipeError):
    """A store step's options are not valid; ``problems`` lists each, as ``lint`` reports them."""

    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(f"{where}: " + "; ".join(problems))
        self.problems = problems


def size_problems(value: Any, what: str, merge_dims: Iterable[str] = ()) -> list[str]:
    """``target_chunks``/``target_shards``: one byte size, or dimension -> length, -1 or byte size."""
    if isinstance(value, str):
        return _parse_problem(value, what, f"{what} {value!r} is not a size")
    if not isinstance(value, Mapping):
        return [f"{what} is a {type(value).__name__}; expected a dict of dimension -> length, "
                "or one size such as '100MB'"]
    problems = []
    for dim, size in value.items():
        if not isinstance(dim, str) or not dim:
            problems.append(f"{what} key {dim!r} is not a dimension name; expected a string")
        elif dim in set(merge_dims):
            problems.append(f"{what} names {dim!r}, a merge dimension of the pattern, which is not "
                            "a dimension of the arrays")
        if isinstance(size, bool) or not isinstance(size, (int, str)):
            problems.append(f"{what}[{dim!r}] is {size!r}; expected a length (int >= 1), -1, "
                            "or a size such as '50MB'")
        elif isinstance(size, int) and size < 1 and size != -1:
            problems.append(f"{what}[{dim!r}] is {size}; expected a length of at least 1, or -1")
        elif isinstance(size, str):
            problems += _parse_problem(size, f"{what}[{dim!r}]", f"{what}[{dim!r}] = {size!r} is not a size")
    return problems


def _parse_problem(value: Any, what: str, prefix: str) -> list[str]:
    try:
        parse_size(value, what)
    except RecipeError as error:
        return [f"{prefix}: {error.message}"]
    return []


def construction_problems(*, store_name: Any, combine_dims: Iterable[Any] = (), target_chunks: Any = None,
                          zarr_format: Any = 3, dynamic_chunking_fn: Any = None, append_dim: Any = None,
                          encoding: Any = None) -> list[str]:
    """What a store step can refuse as soon as it is constructed (as pangeo-forge-recipes does)."""
    problems = []
    if not isinstance(store_name, str) or not store_name.strip("/"):
        problems.append(f"store_name {store_name!r}: expected a name such as 'sst.zarr'")
    if zarr_format not in (2, 3):
        problems.append(f"zarr_format is {zarr_format!r}; expected 2 or 3")
    if dynamic_chunking_fn is not None and target_chunks:
        problems.append("gives both target_chunks and dynamic_chunking_fn; expected one of them")
    concat = [d.name for d in combine_dims or [] if d.operation.name == "CONCAT"]
    if append_dim is not None and combine_dims and append_dim not in concat:
        problems.append(f"append_dim {append_dim!r} is not a concat dimension of the pattern; "
                        f"expected one of {concat}")
    if encoding and zarr_format in (2, 3):
        try:
            check_encoding(encoding, zarr_format)
        except RecipeError as error:
            problems.append(error.message)
    return problems


def store_option_problems(*, store_name: Any, combine_dims: Iterable[Any] = (), target_chunks: Any = None,
                          target_shards: Any = None, zarr_format: Any = 3, dynamic_chunking_fn: Any = None,
                          max_mem: Any = None, append_dim: Any = None, encoding: Any = None,
                          multistage_threshold: Any = None) -> list[str]:
    """Every problem of one store step's options, each a message naming the option and what was expected."""
    merge = [d.name for d in combine_dims or [] if d.operation.name == "MERGE"]
    problems = construction_problems(store_name=store_name, combine_dims=combine_dims, target_chunks=target_chunks,
                                     zarr_format=zarr_format, dynamic_chunking_fn=dynamic_chunking_fn,
                                     append_dim=append_dim, encoding=encoding)
    if target_chunks:
        problems += size_problems(target_chunks, "target_chunks", merge)
    if target_shards:
        problems += size_problems(target_shards, "target_shards", merge)
        if zarr_format != 3:
            problems.append("target_shards needs zarr_format=3: Zarr v2 has no shards")
    if max_mem is not None:  # None: the bake context's, else the default
        problems += _parse_problem(max_mem, "max_mem", f"max_mem {max_mem!r} is not a size")
    if multistage_threshold is not None and (isinstance(multistage_threshold, bool) or not isinstance(
            multistage_threshold, (int, float)) or not multistage_threshold >= 1):
        problems.append(f"multistage_threshold must be a read amplification of at least 1 (default 4), or None "
                        f"for one pass always; got {multistage_threshold!r}")
    return problems


def raise_problems(where: str, problems: list[str]) -> None:
    """Raise :class:`StoreOptionsError` listing ``problems``, if there are any."""
    if problems:
        raise StoreOptionsError(where, problems)
