"""``pangeo_forge_recipes``, answered by arcoforge (the arcoforge-pgf-compat distribution).

Each submodule is an alias of an arcoforge module (see arcoforge.compat.alias).
Importing this package fails clearly when a real pangeo-forge-recipes is installed.
"""

from arcoforge.compat.alias import alias_version, check_no_real_pangeo_forge

check_no_real_pangeo_forge()

from arcoforge.compat.zarr2_names import provide_zarr2_annotation_names  # noqa: E402

provide_zarr2_annotation_names()
__version__ = alias_version()
