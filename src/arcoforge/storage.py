"""The names of ``pangeo_forge_recipes.storage`` (0.10), for recipes that import them from there.

Defined in :mod:`arcoforge.compat.storage`; see that module.
"""

from __future__ import annotations

from .compat.storage import CacheFSSpecTarget, FlatFSSpecTarget, FSSpecTarget, MetadataTarget, StorageConfig

__all__ = ["CacheFSSpecTarget", "FSSpecTarget", "FlatFSSpecTarget", "MetadataTarget", "StorageConfig"]
