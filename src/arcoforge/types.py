"""The names of ``pangeo_forge_recipes.types`` (0.10), for recipes that import them from there.

Defined in :mod:`arcoforge.compat.types`; see that module.
"""

from __future__ import annotations

from .compat.types import CombineOp, Dimension, Index, Indexed, IndexedPosition, Position, T

__all__ = ["CombineOp", "Dimension", "Index", "Indexed", "IndexedPosition", "Position", "T"]
