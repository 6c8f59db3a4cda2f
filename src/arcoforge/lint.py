"""``arcoforge lint``: check a feedstock or recipe file without running its pipeline.

What is checked, each problem one message naming the file, the field or recipe,
and what was expected:

- ``meta.yaml`` against the feedstock schema (:data:`arcoforge.feedstock.META_SCHEMA`);
- ``requirements.txt``: present, and every line a requirement pip understands;
- each recipe object: it imports, is a PTransform, and builds into a pipeline
  whose every step can be serialized for workers;
- its inputs: the pattern's format function returns a URL for every key, no two
  keys share a URL, and the inputs can be pruned for a test bake;
- each StoreToZarr: store name, ``combine_dims`` matching the inputs' dimensions,
  ``target_chunks``/``target_shards`` naming dimensions with valid sizes,
  ``zarr_format``, ``max_mem``, ``encoding`` keys; when the first input is a
  local file, chunked dimensions are compared with its dimensions (an error,
  or a warning when a step of the recipe such as a preprocessor may rename
  them);
- local input files exist (all of them; remote ones are not fetched).

Errors make the command fail; warnings are reported only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.pipeline import PipelineVisitor

from .errors import RecipeError
from .feedstock import (
    PRUNE_HOOK,
    Feedstock,
    RecipeRef,
    feedstock_folder,
    feedstock_recipes,
    file_recipes,
    is_pattern_item,
    meta_problems,
    read_meta,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One finding of the linter."""

    severity: str  # "error" or "warning"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "where": self.where, "message": self.message}


@dataclass
class LintReport:
    """Everything lint found, and the recipes it checked."""

    target: str
    problems: list[Problem]
    recipe_ids: list[str]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def _error(where: str, message: str) -> Problem:
    return Problem("error", where, message)


def _warning(where: str, message: str) -> Problem:
    return Problem("warning", where, message)


def _from_text(text: str, where: str) -> Problem:
    """An error Problem from a message that may start with ``where: `` already."""
    prefix = f"{where}: "
    return _error(where, text[len(prefix):] if text.startswith(prefix) else text)


def lint_requirements(path: Path) -> list[Problem]:
    """Each line of ``requirements.txt`` must be a requirement pip understands (or a pip option)."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # packaging ships with pip and setuptools; without it only the file is checked
        return []
    problems = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("-"):
            continue
        try:
            Requirement(line)
        except InvalidRequirement as error:
            problems.append(_error(f"{path}:{number}", f"{line!r} is not a requirement pip understands: {error}"))
    return problems


def lint(target: str | os.PathLike, recipe_id: str | None = None) -> LintReport:
    """Check a feedstock folder (or a single recipe file) and return what was found."""
    target = str(target)
    problems: list[Problem] = []
    folder = feedstock_folder(target)
    refs: dict[str, RecipeRef] = {}
    if folder is not None:
        meta_path = folder / "meta.yaml"
        try:
            meta = read_meta(meta_path)
        except RecipeError as error:
            return LintReport(target, [_from_text(str(error), str(meta_path))], [])
        found = meta_problems(meta, str(meta_path))
        problems.extend(_from_text(text, str(meta_path)) for text in found)
        requirements = folder / "requirements.txt"
        if requirements.is_file():
            problems.extend(lint_requirements(requirements))
        else:
            problems.append(_warning(str(folder), "has no requirements.txt; a bot installs the recipe's "
                                     "dependencies from it (expected one, even if it only names arcoforge)"))
        recipes_ok = isinstance(meta, dict) and not any("field recipes" in text for text in found)
        if not recipes_ok:
            return LintReport(target, problems, [])
        try:
            refs = feedstock_recipes(Feedstock(folder.resolve(), meta), recipe_id)
        except RecipeError as error:
            problems.append(_from_text(str(error), str(meta_path)))
            return LintReport(target, problems, [])
    elif Path(target).is_file() and target.endswith(".py"):
        try:
            refs = file_recipes(target, recipe_id)
        except RecipeError as error:
            return LintReport(target, [_from_text(str(error), target)], [])
    else:
        return LintReport(target, [_error(target, "is not a feedstock (a folder holding meta.yaml) "
                                          "or a recipe .py file")], [])
    for ref in refs.values():
        problems.extend(lint_recipe(ref))
    return LintReport(target, problems, list(refs))


class _Collect(PipelineVisitor):
    """Every transform of a built pipeline, composites included."""

    def __init__(self) -> None:
        self.transforms: list[Any] = []

    def enter_composite_transform(self, node: Any) -> None:
        if node.transform is not None:
            self.transforms.append(node.transform)

    def visit_transform(self, node: Any) -> None:
        self.transforms.append(node.transform)


def may_change_dimensions(steps: Iterable[Any]) -> bool:
    """Whether a step between the inputs and the store may rename or add dimensions.

    arcoforge's own openers and writers do not; a ``Preprocess``, a ``beam.Map``
    or any other step of the recipe's may.
    """
    from .beam.preprocess import Preprocess

    for step in steps:
        if type(step) is beam.Create:
            continue
        if type(step).__module__.startswith("arcoforge.") and not isinstance(step, Preprocess):
            continue
        return True
    return False


def built_transforms(pipeline: beam.Pipeline) -> list[Any]:
    """The PTransform objects of a built pipeline, in order (composites before their parts)."""
    collector = _Collect()
    pipeline.visit(collector)
    return collector.transforms


def _unique(transforms: list[Any]) -> list[Any]:
    """Each transform once (the recipe's chain and the built pipeline see the same objects)."""
    return list({id(t): t for t in transforms}.values())


def lint_recipe(ref: RecipeRef) -> list[Problem]:
    """Build the recipe into a pipeline (never run) and check its inputs and its StoreToZarr steps."""
    from .core.options import StoreOptionsError
    from .runtime.context import use_runtime_defaults
    from .runtime.injection import recipe_steps
    from .runtime.runners import discard_unrun, local_runner
    from .scratch import scratch_folder
    from .transforms import StoreToZarr

    where = f"{ref.file}: recipe {ref.id!r}"
    problems: list[Problem] = []
    options_error: StoreOptionsError | None = None
    with scratch_folder("lint") as scratch, \
            use_runtime_defaults(target_root=scratch):
        pipeline = beam.Pipeline(runner=local_runner())
        discard_unrun(pipeline)  # only built and serialized, never run
        try:
            _ = pipeline | ref.transform
        except StoreOptionsError as error:  # reported below, one problem at a time, from the same checks
            pipeline, options_error = None, error
        except Exception as error:  # a recipe error at build time, e.g. a missing option
            return [_error(where, f"building the pipeline failed: {type(error).__name__}: {error}")]
        if pipeline is not None:
            try:
                pipeline.to_runner_api()
            except Exception as error:
                problems.append(_error(where, "a step cannot be serialized for workers: "
                                              f"{type(error).__name__}: {error}"))
    transforms = _unique(recipe_steps(ref.transform) + (built_transforms(pipeline) if pipeline is not None else []))
    creates = [t for t in transforms if type(t) is beam.Create and t.values and all(map(is_pattern_item, t.values))]
    items = [item for create in creates for item in create.values]
    problems.extend(check_urls(items, where))
    pattern = getattr(ref.module, "pattern", None)
    if pattern is not None and hasattr(pattern, "items") and hasattr(pattern, "combine_dims"):
        problems.extend(check_pattern(pattern, f"{ref.file}: pattern"))
    if not creates and not hasattr(ref.module, PRUNE_HOOK):
        problems.append(_warning(where, "its inputs are not a beam.Create(pattern.items()), so a test bake "
                                        f"(--prune) cannot prune them; define {PRUNE_HOOK}(recipe_id, nkeep) "
                                        "in the module to allow it"))
    input_dims = {dim for index, _ in items[:1] for dim in index}
    stores = [t for t in transforms if isinstance(t, StoreToZarr)]
    from .beam.virtual import WriteCombinedReference, WriteVirtualIcechunk

    writes_references = any(isinstance(t, (WriteCombinedReference, WriteVirtualIcechunk)) for t in transforms)
    if not stores and not writes_references:
        problems.append(_warning(where, "has no StoreToZarr step: a bake writes no store arcoforge knows of"))
    problems.extend(check_local_inputs(items, where))
    first_dims = _first_input_dims(items)
    if options_error is not None and not stores:  # a StoreToZarr built inside a composite step
        problems.append(_error(where, f"building the pipeline failed: {options_error}"))
    preprocessed = may_change_dimensions(recipe_steps(ref.transform))
    for store in stores:
        problems.extend(check_store_to_zarr(store, f"{where}: StoreToZarr({store.store_name!r})",
                                            input_dims if len(creates) == 1 else None, first_dims,
                                            preprocessed=preprocessed))
    return problems


def check_local_inputs(items: list[tuple[Any, Any]], where: str, shown: int = 5) -> list[Problem]:
    """Every local input file exists (remote ones are not fetched): one error naming the first missing ones."""
    missing = []
    for index, url in items:
        if not isinstance(url, str):
            continue
        path = url[len("file://"):] if url.startswith("file://") else url
        if "://" not in path and not os.path.exists(path):
            missing.append(path)
    if not missing:
        return []
    listed = ", ".join(missing[:shown]) + (f" and {len(missing) - shown} more" if len(missing) > shown else "")
    return [_error(where, f"{len(missing)} of {len(items)} local input files do not exist: {listed}")]


def check_urls(items: list[tuple[Any, Any]], where: str) -> list[Problem]:
    """Every input has a non-empty URL, and no URL is used by two inputs."""
    problems = []
    seen: dict[str, Any] = {}
    for index, url in items:
        if not isinstance(url, str) or not url.strip():
            problems.append(_error(where, f"input {index!r} has URL {url!r}; expected a non-empty string"))
            continue
        if url in seen:
            problems.append(_error(where, f"inputs {seen[url]!r} and {index!r} both have URL {url!r}; "
                                          "expected one file per key"))
        seen.setdefault(url, index)
    return problems


def check_pattern(pattern: Any, where: str) -> list[Problem]:
    """The format function builds a URL for every key of the pattern."""
    problems = []
    for index in pattern:
        try:
            url = pattern[index]
        except Exception as error:
            keys = {dim.name: dim.keys[index.find_position(dim.name).value] for dim in pattern.combine_dims}
            problems.append(_error(where, f"the format function fails for keys {keys}: "
                                          f"{type(error).__name__}: {error}"))
            if len(problems) >= 5:
                problems.append(_error(where, "(more keys fail; stopped after 5)"))
                break
            continue
        if not isinstance(url, str) or not url:
            problems.append(_error(where, f"the format function returns {url!r} for {index!r}; expected a URL string"))
    return problems


def check_store_to_zarr(store: Any, where: str, input_dims: set | None,
                        first_dims: set[str] | None, preprocessed: bool = True) -> list[Problem]:
    """The options of one StoreToZarr (the checks its build makes), and its dimensions against the inputs'.

    ``preprocessed``: a step of the recipe may change the inputs' dimensions, so
    chunked dimensions the first input lacks are a warning, not an error.
    """
    problems = [_error(where, message) for message in store.option_problems()]
    combine = set(store.combine_dims or [])
    if input_dims is not None and combine != input_dims:
        def names(dims: Iterable) -> list[str]:
            return sorted(f"{d.name} ({d.operation.name.lower()})" for d in dims)

        problems.append(_error(where, f"combine_dims {names(combine)} differ from the inputs' dimensions "
                                      f"{names(input_dims)}; expected pattern.combine_dim_keys"))
    concat_names = {d.name for d in combine if d.operation.name == "CONCAT"}
    if first_dims is not None and isinstance(store.target_chunks, Mapping):
        unknown = sorted(str(d) for d in store.target_chunks
                         if isinstance(d, str) and d not in first_dims and d not in concat_names)
        if unknown and preprocessed:
            problems.append(_warning(where, f"target_chunks names {unknown}, which the first input does not have "
                                            f"(its dimensions: {sorted(first_dims)}); fine only if a "
                                            "preprocessor makes them"))
        elif unknown:
            problems.append(_error(where, f"target_chunks names {unknown}, which the first input does not have "
                                          f"(its dimensions: {sorted(first_dims)}) and no step of the recipe "
                                          "could add"))
    return problems


def _first_input_dims(items: list[tuple[Any, Any]]) -> set[str] | None:
    """Dimensions of the first input, when it is a local file (nothing is fetched)."""
    if not items or not isinstance(items[0][1], str):
        return None
    url = items[0][1]
    path = url[len("file://"):] if url.startswith("file://") else url
    if "://" in path or not os.path.isfile(path):
        return None
    import xarray as xr

    try:
        with xr.open_dataset(path, decode_times=False, decode_cf=False) as ds:
            return {str(d) for d in ds.sizes}
    except Exception as error:  # the bake reports unreadable inputs with their index
        logger.debug("lint: cannot open %s to read its dimensions: %s", path, error)
        return None
