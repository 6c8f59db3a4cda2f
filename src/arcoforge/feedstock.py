"""Loading recipes and feedstocks: a ``recipe.py`` file, a feedstock's ``meta.yaml``, pruning for test bakes.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import apache_beam as beam
from apache_beam.pipeline import PTransformOverride

from .beam.create import CompactCreate
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
    return {name: _as_transform(value, name) for name, value in found.items()}


def _is_recipe(value: Any) -> bool:
    """A PTransform, or a recipe object that builds one (pangeo-forge 0.5–0.8's recipe classes)."""
    from .compat.legacy_recipes import LEGACY_RECIPES

    return isinstance(value, (beam.PTransform, *LEGACY_RECIPES))


def _as_transform(value: Any, recipe_id: str) -> beam.PTransform:
    from .compat.legacy_recipes import recipe_transform

    return recipe_transform(value, recipe_id)


# ---------------------------------------------------------------------------------------------
# Feedstocks: a folder with meta.yaml, recipe.py and requirements.txt

META_NAME = "meta.yaml"
REQUIREMENTS_NAME = "requirements.txt"
_OBJECT_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
_OBJECT_EXPECTED = "'module:attribute', e.g. 'recipe:recipe' for the object `recipe` of recipe.py"

META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "description", "recipes", "provenance", "maintainers"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "x-expected": "a one-line title"},
        "description": {"type": "string", "minLength": 1, "x-expected": "a description of the dataset"},
        "recipes": {
            "type": "array",
            "minItems": 1,
            "x-expected": "a list of {id, object} or {dict_object} entries",
            "items": {
                "type": "object",
                "x-expected": "{id: ..., object: 'module:attr'} or {dict_object: 'module:attr'}",
                "oneOf": [
                    {"required": ["id", "object"], "not": {"required": ["dict_object"]}},
                    {"required": ["dict_object"], "not": {"anyOf": [{"required": ["id"]}, {"required": ["object"]}]}},
                ],
                "properties": {
                    "id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                           "x-expected": "letters, digits, '.', '_' or '-'"},
                    "object": {"type": "string", "pattern": _OBJECT_REF, "x-expected": _OBJECT_EXPECTED},
                    "dict_object": {"type": "string", "pattern": _OBJECT_REF,
                                    "x-expected": "'module:attribute' naming a dict of recipes by id"},
                },
            },
        },
        "provenance": {
            "type": "object",
            "required": ["providers", "license"],
            "properties": {
                "providers": {
                    "type": "array",
                    "minItems": 1,
                    "x-expected": "a list of providers, each with at least a name",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "x-expected": "the provider's name"},
                            "description": {"type": "string", "x-expected": "a string"},
                            "roles": {
                                "type": "array",
                                "items": {"enum": ["producer", "licensor", "processor", "host"],
                                          "x-expected": "one of producer, licensor, processor, host"},
                                "x-expected": "a list of roles (producer, licensor, processor, host)",
                            },
                            "url": {"type": "string", "pattern": "^https?://", "x-expected": "an http(s) URL"},
                        },
                    },
                },
                "license": {"type": "string", "minLength": 1,
                            "x-expected": "an SPDX license identifier such as CC-BY-4.0, or a URL"},
            },
        },
        "quicklook_variable": {"type": "string", "minLength": 1,
                               "x-expected": "the name of the variable the STAC quicklooks show"},
        "maintainers": {
            "type": "array",
            "minItems": 1,
            "x-expected": "a list of maintainers, each with at least a name",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "x-expected": "the maintainer's name"},
                    "orcid": {"type": "string", "pattern": r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$",
                              "x-expected": "an ORCID iD such as 0000-0002-1825-0097"},
                    "github": {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$",
                               "x-expected": "a GitHub user name"},
                },
            },
        },
    },
}


@dataclass
class Feedstock:
    """A feedstock folder and its ``meta.yaml``."""

    folder: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        """The feedstock's name: its folder's (or, for ``<repo>/feedstock``, the repository's)."""
        folder = self.folder.parent if self.folder.name == "feedstock" else self.folder
        return folder.name

    @property
    def meta_path(self) -> Path:
        return self.folder / META_NAME

    @property
    def requirements(self) -> Path | None:
        path = self.folder / REQUIREMENTS_NAME
        return path if path.is_file() else None


@dataclass
class RecipeRef:
    """One recipe to bake: its id, the PTransform, and the module and file that define it."""

    id: str
    transform: beam.PTransform
    module: ModuleType
    file: Path
    where: str  # how messages name it: ``recipe.py:recipe`` or ``meta.yaml recipes[0]``


def feedstock_folder(path: str | os.PathLike) -> Path | None:
    """The folder holding ``meta.yaml`` for ``path`` (a feedstock folder, a repository with
    ``feedstock/``, or the ``meta.yaml`` itself), or ``None`` when ``path`` is not a feedstock."""
    path = Path(path)
    if path.is_file():
        return path.parent if path.name == META_NAME else None
    for folder in (path, path / "feedstock"):
        if (folder / META_NAME).is_file():
            return folder
    return None


def read_meta(path: str | os.PathLike) -> Any:
    """The parsed ``meta.yaml``; a YAML syntax error is a :class:`RecipeError` naming the file and line."""
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            return yaml.safe_load(file)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError(f"{path}{where}: not valid YAML: {problem}") from None
    except OSError as error:
        raise RecipeError(f"cannot read {path}: {error.strerror or error}") from None


def meta_problems(meta: Any, source: str = META_NAME) -> list[str]:
    """Everything wrong with a ``meta.yaml`` document, one message per problem naming its field."""
    from .config import schema_errors

    if not isinstance(meta, dict):
        return [f"{source}: expected a mapping of fields (title, description, recipes, ...), "
                f"got {type(meta).__name__}"]
    problems = schema_errors(meta, META_SCHEMA, source)
    ids = [entry.get("id") for entry in meta.get("recipes") or [] if isinstance(entry, dict) and entry.get("id")]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"{source}: field recipes: id {duplicate!r} is given more than once; expected unique ids")
    return problems


def load_feedstock(path: str | os.PathLike) -> Feedstock:
    """Read and check a feedstock; a bad ``meta.yaml`` is one :class:`RecipeError` listing every problem."""
    folder = feedstock_folder(path)
    if folder is None:
        raise RecipeError(f"{path} is not a feedstock: expected a folder holding {META_NAME} "
                          f"(or feedstock/{META_NAME})")
    meta = read_meta(folder / META_NAME)
    problems = meta_problems(meta, str(folder / META_NAME))
    if problems:
        raise RecipeError(problems[0] if len(problems) == 1 else
                          f"{folder / META_NAME} is not valid:\n  " + "\n  ".join(problems))
    return Feedstock(folder.resolve(), meta)


def _module_file(folder: Path, module: str) -> Path:
    return folder.joinpath(*module.split(".")).with_suffix(".py")


def _resolve_attribute(module: ModuleType, attr: str, where: str, file: Path) -> Any:
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            defined = sorted(name for name, item in vars(module).items()
                             if isinstance(item, (beam.PTransform, dict)) and not name.startswith("_"))
            raise RecipeError(f"{where}: {file.name} has no object {attr!r}; "
                              f"recipe-like objects it defines: {', '.join(defined) or '(none)'}")
        value = getattr(value, part)
    return value


def feedstock_recipes(feedstock: Feedstock, recipe_id: str | None = None) -> dict[str, RecipeRef]:
    """The recipes ``meta.yaml`` names, imported, by id (only ``recipe_id`` when given).

    ``object: "recipe:recipe"`` is the object ``recipe`` of ``recipe.py`` in the
    feedstock folder; ``dict_object`` names a dict of recipes by id. A module that
    is missing or fails to import, an object that is not there or not a
    PTransform, and an unknown ``recipe_id`` are :class:`RecipeError` naming the entry.
    """
    modules: dict[Path, ModuleType] = {}
    found: dict[str, RecipeRef] = {}
    for number, entry in enumerate(feedstock.meta["recipes"]):
        reference = entry.get("object") or entry["dict_object"]
        key = "object" if "object" in entry else "dict_object"
        where = f"{feedstock.meta_path}: recipes[{number}].{key} {reference!r}"
        module_name, attr = reference.split(":", 1)
        file = _module_file(feedstock.folder, module_name)
        if not file.is_file():
            raise RecipeError(f"{where}: module {module_name} should be {file}, which does not exist")
        if file not in modules:
            modules[file] = load_recipe_module(file)
        module = modules[file]
        value = _resolve_attribute(module, attr, where, file)
        if key == "object":
            candidates = {entry["id"]: value}
        elif isinstance(value, dict):
            candidates = {str(k): v for k, v in value.items()}
        else:
            raise RecipeError(f"{where}: expected a dict of recipes by id, got a {type(value).__name__}")
        for name, transform in candidates.items():
            if not _is_recipe(transform):
                raise RecipeError(f"{where}: recipe {name!r} is a {type(transform).__name__}, "
                                  "expected an apache_beam PTransform")
            if name in found:
                raise RecipeError(f"{where}: recipe id {name!r} is given twice")
            found[name] = RecipeRef(name, _as_transform(transform, name), module, file, where)
    if recipe_id is not None:
        if recipe_id not in found:
            raise RecipeError(f"no recipe {recipe_id!r} in {feedstock.meta_path}; recipes found: "
                              f"{', '.join(sorted(found))}")
        found = {recipe_id: found[recipe_id]}
    return found


def file_recipes(path: str | os.PathLike, recipe_id: str | None = None) -> dict[str, RecipeRef]:
    """The recipes of a single recipe file (see :func:`recipes_in_module`), as :class:`RecipeRef`."""
    module = load_recipe_module(path)
    file = Path(path).resolve()
    return {name: RecipeRef(name, transform, module, file, f"{file.name}:{name}")
            for name, transform in recipes_in_module(module, recipe_id).items()}


# ---------------------------------------------------------------------------------------------
# Pruning: a test bake on the first inputs of each concat dimension

PRUNE_HOOK = "prune_recipe"


def is_pattern_item(value: Any) -> bool:
    """Whether ``value`` is an ``(Index, url)`` pair, as ``beam.Create(pattern.items())`` holds."""
    from .patterns import Index

    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Index)


def prune_items(items: Sequence[Any], nkeep: int) -> list[Any]:
    """The pattern items whose position along every concat dimension is below ``nkeep``.

    Merge dimensions are kept whole, so a pruned store still has every variable.

    >>> from arcoforge import ConcatDim, FilePattern, MergeDim
    >>> pattern = FilePattern(lambda v, t: f"{v}{t}", MergeDim("v", ["a", "b"]), ConcatDim("t", [0, 1, 2]))
    >>> [url for _, url in prune_items(list(pattern.items()), 2)]
    ['a0', 'a1', 'b0', 'b1']
    """
    if nkeep < 1:
        raise RecipeError(f"--prune keeps at least 1 input per concat dimension, got {nkeep}")
    return [item for item in items
            if all(position.value < nkeep for dim, position in item[0].items() if dim.operation.name == "CONCAT")]


@dataclass
class PruneReport:
    """What pruning kept: inputs before and after, over every pattern Create of the pipeline."""

    total: int = 0
    kept: int = 0
    creates: int = 0


class _PruneCreates(PTransformOverride):
    def __init__(self, nkeep: int, report: PruneReport):
        self.nkeep = nkeep
        self.report = report

    def matches(self, applied: Any) -> bool:
        transform = applied.transform
        return (type(transform) in (beam.Create, CompactCreate) and len(transform.values) > 0
                and all(is_pattern_item(v) for v in transform.values))

    def get_replacement_transform_for_applied_ptransform(self, applied: Any) -> beam.PTransform:
        values = list(applied.transform.values)
        kept = prune_items(values, self.nkeep)
        self.report.total += len(values)
        self.report.kept += len(kept)
        self.report.creates += 1
        return beam.Create(kept, reshuffle=getattr(applied.transform, "reshuffle", True))


def prune_pipeline(pipeline: beam.Pipeline, nkeep: int, what: str = "the recipe") -> PruneReport:
    """Keep the first ``nkeep`` inputs of each concat dimension in every ``beam.Create(pattern.items())``.

    Works on the built pipeline (Beam replaces each such Create wherever it sits,
    also inside composite transforms), so any recipe written the pangeo-forge way
    is pruned without rewriting its source. Raises :class:`RecipeError` when the
    pipeline has no Create of pattern items.
    """
    report = PruneReport()
    pipeline.replace_all([_PruneCreates(nkeep, report)])
    if not report.creates:
        raise RecipeError(
            f"cannot prune {what}: its inputs are not a beam.Create(pattern.items()) of (Index, url) pairs; "
            f"start the recipe from one, or define `{PRUNE_HOOK}(recipe_id, nkeep)` in its module to return "
            "a pruned recipe"
        )
    logger.info("pruned %s to %d of %d inputs (first %d along each concat dimension)",
                what, report.kept, report.total, nkeep)
    return report


def pruned_recipe(ref: RecipeRef, nkeep: int) -> beam.PTransform | None:
    """The recipe the module's ``prune_recipe(recipe_id, nkeep)`` hook returns, if it has one.

    A pre-Beam recipe object (pangeo-forge 0.5–0.8) prunes itself (``copy_pruned``),
    so its chunks of several inputs are regrouped for the inputs kept.
    """
    hook = getattr(ref.module, PRUNE_HOOK, None)
    legacy = getattr(ref.transform, "recipe", None)
    if hook is None and hasattr(legacy, "copy_pruned"):
        return _as_transform(legacy.copy_pruned(nkeep), ref.id)
    if hook is None:
        return None
    recipe = hook(ref.id, nkeep)
    if _is_recipe(recipe):
        recipe = _as_transform(recipe, ref.id)
    else:
        raise RecipeError(f"{ref.file.name}: {PRUNE_HOOK}({ref.id!r}, {nkeep}) returned a "
                          f"{type(recipe).__name__}, expected an apache_beam PTransform")
    return recipe
