"""Preprocess: a plain function applied to every opened input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam
import xarray as xr

from ..errors import ArcoforgeError, InputError, RecipeError, describe_input
from ..patterns import Index
from ..runtime.context import BakeContext


def apply_preprocessor(function: Callable[[Index, xr.Dataset], xr.Dataset], index: Index,
                       ds: xr.Dataset) -> tuple[Index, xr.Dataset]:
    """``function(index, ds)``; a failure is an :class:`InputError` naming the input it failed on."""
    source = ds.encoding.get("source")
    try:
        result = function(index, ds)
    except ArcoforgeError:
        raise
    except Exception as error:
        name = getattr(function, "__name__", repr(function))
        raise InputError(f"preprocessor {name} failed on {describe_input(index, source)}: {error}") from error
    if not isinstance(result, xr.Dataset):
        raise RecipeError(f"preprocessor must return an xarray.Dataset, got {type(result).__name__}")
    result.encoding.setdefault("source", source)
    return index, result


@dataclass
class Preprocess(beam.PTransform):
    """Apply a plain function ``f(index, ds) -> ds`` to every input.

    A failure is re-raised as :class:`InputError` naming the input it failed on.
    (``context`` is accepted like every arcoforge transform's; nothing here needs it.)
    """

    function: Callable[[Index, xr.Dataset], xr.Dataset]
    context: BakeContext | None = None

    def _apply(self, index: Index, ds: xr.Dataset) -> tuple[Index, xr.Dataset]:
        return apply_preprocessor(self.function, index, ds)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Preprocess" >> beam.MapTuple(self._apply)
