"""The ``pangeo_forge_recipes`` import name, answered by arcoforge, for code that cannot be edited.

Plug-ins such as pangeo-forge-earthdatalogin, and recipes one may not edit,
import from ``pangeo_forge_recipes``. The ``arcoforge[pgf-compat]`` extra
installs a small distribution, ``arcoforge-pgf-compat`` (in the repository's
``pgf-compat/`` folder), whose ``pangeo_forge_recipes`` package makes each
module name an alias of the arcoforge module in :data:`MODULES`
(``pangeo_forge_recipes.transforms`` *is* :mod:`arcoforge.transforms`).

It refuses to stand in for a real pangeo-forge-recipes: if a distribution of
that name is installed, importing ``pangeo_forge_recipes`` through the
alias raises :class:`RealPangeoForgeInstalled`, naming both and how to choose.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

# pangeo_forge_recipes module -> the arcoforge module it is an alias of.
MODULES = {
    "pangeo_forge_recipes.transforms": "arcoforge.transforms",
    "pangeo_forge_recipes.patterns": "arcoforge.patterns",
    "pangeo_forge_recipes.types": "arcoforge.types",
    "pangeo_forge_recipes.storage": "arcoforge.storage",
    "pangeo_forge_recipes.openers": "arcoforge.openers",
    "pangeo_forge_recipes.injections": "arcoforge.runtime.injection",
    "pangeo_forge_recipes.recipes.xarray_zarr": "arcoforge.recipes.xarray_zarr",
    "pangeo_forge_recipes.recipes.reference_hdf_zarr": "arcoforge.recipes.reference_hdf_zarr",
}
REAL_DISTRIBUTION = "pangeo-forge-recipes"
# The pangeo-forge-recipes API the alias answers for: plug-ins that compare ``__version__`` see 0.10.8,
# and the local part says it is arcoforge.
API_LEVEL = "0.10.8"


def alias_version() -> str:
    """``pangeo_forge_recipes.__version__`` under the alias, e.g. ``0.10.8+arcoforge.0.1.0``."""
    from arcoforge import __version__

    return f"{API_LEVEL}+arcoforge.{__version__.replace('+', '.').replace('-', '.')}"


class RealPangeoForgeInstalled(ImportError):
    """A real pangeo-forge-recipes is installed; the arcoforge alias will not shadow it."""


def real_pangeo_forge_version(path: Sequence[str] | None = None) -> str | None:
    """The version of an installed pangeo-forge-recipes distribution (searched on ``path``, else sys.path)."""
    found = importlib.metadata.distributions(name=REAL_DISTRIBUTION, path=list(sys.path if path is None else path))
    for distribution in found:
        return distribution.version
    return None


def check_no_real_pangeo_forge(path: Sequence[str] | None = None) -> None:
    """Raise :class:`RealPangeoForgeInstalled` if a real pangeo-forge-recipes is installed."""
    version = real_pangeo_forge_version(path)
    if version is not None:
        raise RealPangeoForgeInstalled(
            f"pangeo-forge-recipes {version} is installed, so arcoforge-pgf-compat (the arcoforge[pgf-compat] "
            "extra) refuses to answer `import pangeo_forge_recipes` in its place. Use one: "
            "`pip uninstall pangeo-forge-recipes arcoforge-pgf-compat` and then `pip install arcoforge[pgf-compat]` "
            "to run pangeo-forge code on arcoforge, or `pip uninstall arcoforge-pgf-compat` and then "
            "`pip install --force-reinstall pangeo-forge-recipes` to keep pangeo-forge."
        )


def alias_module(name: str) -> None:
    """Make ``sys.modules[name]`` the arcoforge module :data:`MODULES` names (called by the alias's own files)."""
    target = importlib.import_module(MODULES[name])
    sys.modules[name] = target
