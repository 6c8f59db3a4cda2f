"""Running recipes on Apache Beam, and the run-time defaults a recipe may leave out.

The embedded default is Beam's FnApiRunner: in this process, or in several
local worker processes. It is chosen directly because Beam's ``DirectRunner``
first tries to download its Prism binary, which waits on the network.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from .errors import RecipeError

logger = logging.getLogger(__name__)


@dataclass
class RuntimeDefaults:
    """Values a recipe may leave out, supplied by whoever runs it (``arcoforge bake``)."""

    target_root: str | None = None
    storage_options: dict | None = None
    # Local worker processes sharing this machine's memory, and an override of StoreToZarr.max_mem.
    num_workers: int = 1
    max_mem: str | int | None = None
    # Where workers record progress events (see arcoforge.progress); local bakes only.
    progress_dir: str | None = None
    # What the runner knows of the recipe (recipe_id, recipe_sha256, pattern_sha256), for provenance.
    provenance: dict | None = None


_RUNTIME = RuntimeDefaults()


def runtime_defaults() -> RuntimeDefaults:
    """The run-time defaults in force while a pipeline is being built."""
    return _RUNTIME


@contextlib.contextmanager
def use_runtime_defaults(**values: Any) -> Iterator[RuntimeDefaults]:
    """Set run-time defaults (e.g. ``target_root``) while a pipeline is built and run."""
    global _RUNTIME
    previous = _RUNTIME
    _RUNTIME = RuntimeDefaults(**{**previous.__dict__, **{k: v for k, v in values.items() if v is not None}})
    try:
        yield _RUNTIME
    finally:
        _RUNTIME = previous


def local_pipeline_options(num_workers: int = 1, **options: Any) -> PipelineOptions:
    """Options for the local runner: one process, or ``num_workers`` worker processes."""
    if num_workers < 1:
        raise RecipeError(f"num_workers must be at least 1, got {num_workers}")
    return PipelineOptions(flags=[], direct_num_workers=num_workers, **options)


def local_runner(num_workers: int = 1) -> beam.runners.PipelineRunner:
    """The embedded runner, which never touches the network.

    With several workers, each is a local process started through
    :mod:`arcoforge._worker` (Beam's SDK harness with its chatter kept off stderr).
    Beam's own ``multi_processing`` mode would replace that command, so the
    environment is given to the runner directly.
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms import environments

    if num_workers == 1:
        return FnApiRunner()
    command = f"{shlex.quote(sys.executable)} -m arcoforge._worker"
    return FnApiRunner(
        default_environment=environments.SubprocessSDKEnvironment.from_command_string(command_string=command)
    )


def quiet_beam_logging(debug: bool = False) -> None:
    """Keep Beam's own chatter (worker start-up, gRPC) out of a bake's log.

    Beam also logs every failing element with a full traceback before it
    re-raises; the caller reports the failure itself, so those go unless ``debug``.
    """
    logging.getLogger("apache_beam").setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        for name in ("apache_beam.runners.common", "apache_beam.runners.worker",
                     "apache_beam.runners.portability.fn_api_runner", "apache_beam.runners.portability.local_job_service"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run_local(recipe: beam.PTransform, num_workers: int = 1, **options: Any) -> beam.runners.runner.PipelineResult:
    """Run a recipe on the embedded runner and wait for it to finish."""
    with use_runtime_defaults(num_workers=num_workers):
        pipeline = beam.Pipeline(runner=local_runner(num_workers), options=local_pipeline_options(num_workers, **options))
        _ = pipeline | recipe
    result = pipeline.run()
    result.wait_until_finish()
    return result
