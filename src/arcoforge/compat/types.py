"""pangeo-forge-recipes 0.10's ``types`` module: combine operations, indexes, and ``Indexed``.

``Indexed[X]`` is ``Tuple[Index, X]``, a real ``typing`` alias, so Beam reads
annotations like ``def f(item: Indexed[xr.Dataset]) -> Indexed[xr.Dataset]``
as tuple type hints and picks a tuple coder, as it does under pangeo-forge.

>>> Indexed[int]
typing.Tuple[arcoforge.patterns.Index, int]
>>> IndexedPosition(3, dimsize=10)
IndexedPosition(value=3, indexed=True, dimsize=10)
"""

from __future__ import annotations

from typing import Tuple, TypeVar

from ..patterns import CombineOp, Dimension, Index, IndexedPosition, Position

T = TypeVar("T")
Indexed = Tuple[Index, T]  # noqa: UP006 -- Beam's type hints want typing.Tuple


__all__ = ["CombineOp", "Dimension", "Index", "Indexed", "IndexedPosition", "Position", "T"]
