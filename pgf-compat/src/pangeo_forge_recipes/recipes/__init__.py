"""``pangeo_forge_recipes.recipes`` (0.5-0.8): the names of arcoforge.recipes (see arcoforge.compat.alias).

A package, not an alias, so that its submodules are found here.
"""

from arcoforge.recipes import *  # noqa: F401,F403
from arcoforge.recipes import __all__  # noqa: F401
