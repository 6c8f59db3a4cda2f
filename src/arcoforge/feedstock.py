"""Loading recipes: a ``recipe.py`` file and the recipe objects it defines.

A recipe module is imported with its own folder on ``sys.path`` so it can import
helper modules that sit beside it. Those modules are registered to be pickled by
value, so that worker processes, which cannot import them, still get the
format functions and preprocessors they define.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import apache_beam as beam

from .errors import RecipeError

logger = logging.getLogger(__name__)

# Folders of the recipe files loaded in this process.
_RECIPE_FOLDERS: set[str] = set()


def _register_by_value(module: ModuleType) -> None:
    from apache_beam.internal.cloudpickle import cloudpickle as beam_cloudpickle

    beam_cloudpickle.register_pickle_by_value(module)
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except ImportError:  # Beam's vendored copy is the one that matters
        pass


def load_recipe_module(path: str | os.PathLike) -> ModuleType:
    """Import the recipe file at ``path`` (helpers beside it importable too).

    Raises :class:`RecipeError` with the recipe's own traceback when it fails to import.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    folder = str(path.parent)
    module_name = f"arcoforge_recipe_{abs(hash(str(path))):x}"
    # Helper modules of recipes loaded before (a `helpers.py` in another feedstock) must not
    # stand in for this recipe's own.
    for name, loaded in list(sys.modules.items()):
        file = getattr(loaded, "__file__", None)
        if file and any(os.path.abspath(file).startswith(other + os.sep) for other in _RECIPE_FOLDERS - {folder}):
            del sys.modules[name]
    for other in _RECIPE_FOLDERS - {folder}:
        while other in sys.path:
            sys.path.remove(other)
    _RECIPE_FOLDERS.add(folder)
    before = set(sys.modules)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RecipeError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        frames = traceback.extract_tb(error.__traceback__)
        here = [frame for frame in frames if frame.filename.startswith(folder)]
        where = f" (line {here[-1].lineno} of {here[-1].filename})" if here else ""
        raise RecipeError(f"recipe {path} failed to import{where}: {type(error).__name__}: {error}") from error
    # The recipe and every helper module it imported from its folder travel by value.
    for name in set(sys.modules) - before | {module_name}:
        loaded = sys.modules.get(name)
        file = getattr(loaded, "__file__", None)
        if loaded is not None and file and os.path.abspath(file).startswith(folder + os.sep):
            _register_by_value(loaded)
    return module


def recipes_in_module(module: ModuleType, recipe_id: str | None = None, attr: str = "recipe") -> dict[str, Any]:
    """The recipe objects of a module, by id.

    Without ``recipe_id`` the module's ``recipe`` attribute is used (a PTransform,
    or a dict of PTransforms by id); with it, the attribute or dict entry of that name.
    """
    found: dict[str, Any] = {}
    if recipe_id and hasattr(module, recipe_id) and _is_recipe(getattr(module, recipe_id)):
        return {recipe_id: getattr(module, recipe_id)}
    value = getattr(module, attr, None)
    if isinstance(value, dict):
        found = {str(k): v for k, v in value.items()}
    elif value is not None:
        found = {attr: value}
    if recipe_id:
        if recipe_id not in found:
            available = sorted(found) or ["(none)"]
            raise RecipeError(
                f"no recipe {recipe_id!r} in {module.__file__}; recipes found: {', '.join(available)}"
            )
        found = {recipe_id: found[recipe_id]}
    if not found:
        raise RecipeError(f"{module.__file__} defines no `{attr}` object to run")
    for name, value in found.items():
        if not _is_recipe(value):
            raise RecipeError(
                f"recipe {name!r} in {module.__file__} is a {type(value).__name__}, "
                "expected an apache_beam PTransform"
            )
    return found


def _is_recipe(value: Any) -> bool:
    return isinstance(value, beam.PTransform)
