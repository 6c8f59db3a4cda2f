"""What a bot asks of a feedstock before baking it: its recipes and stores, and a checkout of its git repository.

:func:`expand_meta` is ``arcoforge expand-meta``: the feedstock's ``meta.yaml``
with every recipe resolved (``dict_object`` entries expanded into their ids)
and the stores each one writes, read from the built pipeline (never run), as
pangeo-forge-runner's ``expand-meta`` gives a bot. :func:`checkout_feedstock`
is ``arcoforge bake --repo URL --ref REF``: a shallow ``git`` checkout of one
ref in a temporary folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RecipeError

logger = logging.getLogger(__name__)

GIT_TIMEOUT = 300  # seconds a clone or fetch may take


def recipe_stores(ref: Any, target_root: str = "") -> list[dict[str, str]]:
    """The stores one recipe writes: ``name``, ``url`` (under ``target_root``, if given) and ``collection_id``.

    The pipeline is built (never run) with ``target_root`` as the bake context's,
    so steps that take theirs from the context are found too.
    """
    import apache_beam as beam

    from .bake import store_steps
    from .runtime.context import use_runtime_defaults
    from .runtime.runners import discard_unrun, local_runner
    from .stac import collection_id_for

    placeholder = "arcoforge-expand-meta:"  # stands for "the target root", where none is given
    with use_runtime_defaults(target_root=target_root or placeholder):
        pipeline = beam.Pipeline(runner=local_runner())
        discard_unrun(pipeline)  # only built, to be looked at
        try:
            _ = pipeline | ref.transform
        except Exception as error:
            raise RecipeError(f"{ref.where}: building the pipeline failed: {type(error).__name__}: {error}") from error
    stores: list[dict[str, str]] = []
    for url, step in store_steps(pipeline, target_root or placeholder):
        if url.startswith(placeholder):
            url = url[len(placeholder):].lstrip("/")
        stores.append({"name": step.store_name.strip("/"), "url": url, "collection_id": collection_id_for(url)})
    return stores


def expand_meta(target: str | os.PathLike, target_root: str = "") -> dict[str, Any]:
    """A feedstock's (or recipe file's) recipes, resolved, and the stores each writes, as a JSON-ready dict.

    Keys: ``feedstock`` (its name, None for a recipe file), ``meta`` (``meta.yaml``
    as written, {} for a recipe file) and ``recipes``: one entry per recipe id
    with ``id``, ``file``, ``where`` and ``stores`` (see :func:`recipe_stores`).
    """
    from .bake import load_recipes

    feedstock, refs = load_recipes(str(target))
    recipes = [{"id": ref.id, "file": str(ref.file), "where": ref.where, "stores": recipe_stores(ref, target_root)}
               for ref in refs.values()]
    return {"feedstock": feedstock.name if feedstock else None, "meta": feedstock.meta if feedstock else {},
            "recipes": recipes}


@contextlib.contextmanager
def checkout_feedstock(repo: str, ref: str | None = None, subfolder: str | None = None) -> Iterator[Path]:
    """A temporary checkout of ``repo`` at ``ref`` (a branch, tag or commit); yields the feedstock's folder.

    ``subfolder`` is the feedstock's place in the repository (default: its top,
    where :func:`arcoforge.feedstock.feedstock_folder` also looks into
    ``feedstock/``). The checkout is removed afterwards. A repository or ref
    that does not exist is a :class:`RecipeError` (exit 2) with git's message.
    """
    if shutil.which("git") is None:
        raise RecipeError("bake --repo needs the git command, which is not installed")
    from .io.redaction import public_url, register_secrets, url_secrets

    from .scratch import scratch_dir

    scratch = scratch_dir("feedstock")  # named after this process: swept if it is killed
    folder = Path(scratch) / "repo"
    register_secrets(url_secrets(repo))  # a token in the URL never reaches a log line
    try:
        _git("init", "--quiet", str(folder))
        _git("-C", str(folder), "remote", "add", "origin", repo, repo=repo)
        _git("-C", str(folder), "fetch", "--quiet", "--depth", "1", "origin", ref or "HEAD", repo=repo, ref=ref)
        _git("-C", str(folder), "checkout", "--quiet", "FETCH_HEAD")
        commit = _git("-C", str(folder), "rev-parse", "HEAD").strip()
        logger.info("feedstock %s at %s (commit %s) checked out in %s", public_url(repo), ref or "its default branch",
                    commit[:12], folder)
        yield folder / subfolder if subfolder else folder
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _git(*args: str, repo: str = "", ref: str | None = None) -> str:
    """Run git; a failure is a RecipeError with git's message, the repository URL's user info and tokens redacted."""
    from .io.redaction import public_url, url_secrets

    command = args[2] if args[0] == "-C" else args[0]
    what = (public_url(repo) if repo else "the feedstock") + (f" at {ref}" if ref else "")
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired:
        raise RecipeError(f"git {command} of {what} took over {GIT_TIMEOUT} s") from None
    if done.returncode != 0:
        from .io.redaction import redact

        message = redact(" ".join(done.stderr.split()), url_secrets(repo)) or f"exit code {done.returncode}"
        raise RecipeError(f"cannot check out {what}: git {command}: {message}")
    return done.stdout
