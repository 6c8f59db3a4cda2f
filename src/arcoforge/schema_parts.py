"""The structures a schema is made of: one variable's, one input's, and the combined dataset's.

They sit apart from :mod:`arcoforge.schema` (which reads and combines them) so that
:mod:`arcoforge.schema_pool`, which stores many inputs' schemas compactly, can
build them without importing the combining code that uses the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import describe_input
from .patterns import Index

@dataclass
class VariableSchema:
    """Structure of one variable: dimensions, decoded dtype, attributes, CF encoding."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    attrs: dict[str, Any]
    encoding: dict[str, Any]
    is_coord: bool

    @property
    def is_time_like(self) -> bool:
        return self.dtype.kind in "mM" or (self.dtype.kind == "O" and "calendar" in self.encoding)


@dataclass
class InputSchema:
    """What one input holds, with where it came from."""

    index: Index
    url: str | None
    dims: dict[str, int]
    variables: dict[str, VariableSchema]
    attrs: dict[str, Any]
    concat_coords: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return describe_input(self.index, self.url)


@dataclass
class DatasetSchema:
    """Structure of the combined dataset, computed from every input."""

    dims: dict[str, int]
    variables: dict[str, VariableSchema]
    attrs: dict[str, Any]
    concat_dims: tuple[str, ...]
    merge_dims: tuple[str, ...]
    # offset along each concat dim, per position along that dim (int64: 8 bytes an input, not a list of ints)
    offsets: dict[str, np.ndarray]
    # length along each concat dim, per position along that dim (int64)
    lengths: dict[str, np.ndarray]
    # full values of 1-D coordinates along concat dims
    concat_coords: dict[str, np.ndarray]
    # for each variable, the merge positions of the inputs that write it
    merge_sources: dict[str, tuple[int, ...]]
    n_inputs: int
    # every input's URL, in pattern order (a tuple: a plan's ingested inputs share it rather than copy it)
    urls: Sequence[str | None] = field(default_factory=tuple)
    # Appending: the pattern position of the first input along each concat dim, and
    # the element offset it is written at (the length the store had).
    position_base: dict[str, int] = field(default_factory=dict)
    offset_base: dict[str, int] = field(default_factory=dict)

    def _position(self, index: Index, dim: str) -> int:
        return index.find_position(dim).value - self.position_base.get(dim, 0)

    def input_offsets(self, index: Index) -> dict[str, int]:
        """Element offset of an input along each concat dimension."""
        return {
            dim: self.offset_base.get(dim, 0) + int(self.offsets[dim][self._position(index, dim)])
            for dim in self.concat_dims
        }

    def input_lengths(self, index: Index) -> dict[str, int]:
        """Length of an input along each concat dimension."""
        return {dim: int(self.lengths[dim][self._position(index, dim)]) for dim in self.concat_dims}

    def includes(self, index: Index) -> bool:
        """Whether the input at ``index`` is one this schema was combined from (appends skip older ones)."""
        return all(0 <= self._position(index, dim) < len(self.lengths[dim]) for dim in self.concat_dims)

    def writes_variable(self, index: Index, name: str) -> bool:
        """Whether the input at ``index`` contributes the values of variable ``name``.

        Each element of the store is written from exactly one input: a variable
        that does not span a concat dimension comes from position 0 along it,
        and from the first merge position that holds the variable.
        """
        variable = self.variables[name]
        if name in self.concat_coords or not self.includes(index):
            return False  # written whole with the store template, or already in the store (appends)
        for dim in self.concat_dims:
            if dim not in variable.dims and self._position(index, dim) != 0:
                return False
        merge_position = tuple(index.find_position(dim).value for dim in self.merge_dims)
        return merge_position == self.merge_sources[name]
