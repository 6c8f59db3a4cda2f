"""Zarr-2 names that recipes written for pangeo-forge-recipes 0.10 annotate with.

The 0.10 example recipes check their store with
``def test_ds(store: zarr.storage.FSStore) -> zarr.storage.FSStore`` and no
``from __future__ import annotations``, so the annotation is evaluated when the
recipe is imported; zarr 3 has no ``FSStore`` and the import fails.
:func:`provide_zarr2_annotation_names` gives ``zarr.storage`` an ``FSStore``
that stands for what our store steps emit (the store's URL, or a zarr 3 store):
``Union[str, FsspecStore]``. It is for annotations only (it cannot be called);
Beam's pipeline type check accepts it for the URL StoreToZarr emits.
"""

from __future__ import annotations

from typing import Union


def provide_zarr2_annotation_names() -> bool:
    """Give ``zarr.storage`` an annotation-only ``FSStore`` if it lacks one; whether it was added."""
    import zarr.storage

    if hasattr(zarr.storage, "FSStore"):
        return False
    zarr.storage.FSStore = Union[str, zarr.storage.FsspecStore]  # type: ignore[attr-defined]
    return True
