"""How a recipe is run on Apache Beam: the runner chosen, and the run-time defaults a recipe may leave out.

Owns the choice of runner (``direct``, ``dask``, ``dataflow``, ``flink``) and
what starting it takes (the embedded runner's worker command, a dask
LocalCluster) and :func:`run_local`. What a run supplies to a recipe is the
frozen :class:`~arcoforge.runtime.context.BakeContext`. The options themselves are built in :mod:`arcoforge.runtime.pipeline_options`,
the worker processes are :mod:`arcoforge.runtime.workers`.

The embedded default is Beam's FnApiRunner: in this process, or in several
local worker processes. It is chosen directly because Beam's ``DirectRunner``
first tries to download its Prism binary, which waits on the network.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from ..errors import InfrastructureError, RecipeError
from ..scratch import scratch_dir
from .context import use_runtime_defaults
from .pipeline_options import (
    check_beam_options,
    dask_pipeline_options,
    dataflow_pipeline_options,
    flink_pipeline_options,
    local_pipeline_options,
)

logger = logging.getLogger(__name__)


def local_runner(num_workers: int = 1) -> beam.runners.PipelineRunner:
    """The embedded runner, which never touches the network.

    With several workers, each is a local process started through
    :mod:`arcoforge.runtime.workers` (Beam's SDK harness with its chatter kept
    off stderr), or one of the :class:`~arcoforge.runtime.workers.WarmWorkers`
    started ahead.
    Beam's own ``multi_processing`` mode would replace that command, so the
    environment is given to the runner directly.
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms import environments

    from .data_plane import guard_runner_data_plane
    from .memory import limit_coordinator_heaps, trim_freed_memory_every
    from .workers import WORKER_MODULE, WarmWorkers, attach_command

    guard_runner_data_plane()  # else a slow send to a worker can lose elements (see data_plane)
    if num_workers == 1:
        return FnApiRunner()
    limit_coordinator_heaps()  # this process only passes data between its workers
    trim_freed_memory_every()  # and what passes leaves its heaps large
    warm = WarmWorkers.active_folder()
    command = attach_command(warm) if warm else f"{shlex.quote(sys.executable)} -m {WORKER_MODULE}"
    return FnApiRunner(
        default_environment=environments.SubprocessSDKEnvironment.from_command_string(command_string=command)
    )


def discard_unrun(pipeline: beam.Pipeline) -> None:
    """Remove the temporary folder Beam made for ``pipeline``, which is built but will not run.

    Beam makes one (``beam-pipeline-temp…``) for every Pipeline and removes it
    only at the end of ``run()``: linting, listing stores and dry runs left one
    in the temporary folder each.
    """
    folder = getattr(pipeline, "local_tempdir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def own_tempdir(pipeline: beam.Pipeline) -> beam.Pipeline:
    """``pipeline`` with a temporary folder named after this process instead of Beam's ``beam-pipeline-temp…``.

    Beam removes it at the end of ``run()``; a bake killed before that left
    Beam's behind for ever (24 after the crash-safety tests), while this one is
    swept by the next bake (see :mod:`arcoforge.scratch`).
    """
    discard_unrun(pipeline)
    pipeline.local_tempdir = scratch_dir("beam")
    return pipeline


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
    from ..beam.create import compact_creates
    from .injection import inject

    with use_runtime_defaults(num_workers=num_workers) as context:
        pipeline = own_tempdir(beam.Pipeline(runner=local_runner(num_workers),
                                             options=local_pipeline_options(num_workers, **options)))
        try:
            _ = pipeline | inject(recipe, context)
            compact_creates(pipeline)
        except BaseException:
            discard_unrun(pipeline)  # a recipe that fails to build
            raise
    result = pipeline.run()
    result.wait_until_finish()
    return result


# ---------------------------------------------------------------------------------------------
# Choosing a runner: direct (the embedded one), dask, dataflow, flink; options from a bake's config

RUNNER_NAMES = ("direct", "dask", "dataflow", "flink")


@contextlib.contextmanager
def dask_cluster(address: str | None = None, n_workers: int = 1, threads_per_worker: int = 1,
                 memory_limit: str | int | None = None) -> Iterator[str]:
    """The address of a dask.distributed scheduler: ``address``, or a LocalCluster started for the bake.

    The LocalCluster has ``n_workers`` worker processes and is closed on exit.
    """
    if address:
        yield address
        return
    try:
        from distributed import LocalCluster
    except ImportError:
        raise RecipeError("--runner dask needs dask.distributed: pip install 'arcoforge[dask]'") from None
    # The scheduler runs in this process and logs every worker's start and stop at INFO.
    quiet = logging.getLogger("distributed")
    level = quiet.level
    if not logger.isEnabledFor(logging.DEBUG):
        quiet.setLevel(logging.WARNING)
    try:
        with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                          dashboard_address="127.0.0.1:0", memory_limit=memory_limit or "auto",
                          silence_logs=logging.WARNING) as cluster:
            logger.info("started a dask LocalCluster of %d worker process(es) at %s (dashboard %s)", n_workers,
                        cluster.scheduler_address, cluster.dashboard_link)
            yield cluster.scheduler_address
    finally:
        quiet.setLevel(level)


@dataclass
class RunnerChoice:
    """A runner and its options, ready for ``beam.Pipeline(runner=..., options=...)``."""

    name: str
    runner: Any
    options: PipelineOptions
    # Workers share this machine: they can write a progress folder here, and share its memory.
    local: bool
    num_workers: int = 1
    detail: str = ""
    # Where workers that need not share this machine report progress (a dask scheduler's event topic).
    progress_address: str | None = None


@contextlib.contextmanager
def choose_runner(
    name: str = "direct",
    *,
    num_workers: int = 1,
    pipeline_options: dict[str, Any] | None = None,
    dask: dict[str, Any] | None = None,
    dataflow: dict[str, Any] | None = None,
    flink: dict[str, Any] | None = None,
    job_name: str = "arcoforge",
    dry_run: bool = False,
) -> Iterator[RunnerChoice]:
    """The runner ``name`` with its options; a dask LocalCluster it starts lives as long as the context.

    ``direct``: the embedded runner, ``num_workers`` local processes. ``dask``:
    arcoforge's DaskRunner on ``dask["address"]``, or on a LocalCluster of
    ``dask["n_workers"]`` (default ``num_workers``) processes. ``dataflow`` and
    ``flink``: see :func:`dataflow_pipeline_options`, :func:`flink_pipeline_options`.
    """
    extra = check_beam_options(dict(pipeline_options or {}),
                               {name: section for name, section in (("dataflow", dataflow), ("flink", flink))
                                if section})
    if name == "direct":
        yield RunnerChoice(name, local_runner(num_workers), local_pipeline_options(num_workers, **extra),
                           local=True, num_workers=num_workers,
                           detail=f"{num_workers} local worker process(es)" if num_workers > 1 else "in process")
    elif name == "dask":
        settings = dict(dask or {})
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise RecipeError("--runner dask needs dask.distributed: pip install 'arcoforge[dask]'") from None
        from .dask_runner import DaskRunner
        from .progress import dask_progress_address

        n_workers = int(settings.get("n_workers") or num_workers)
        address = settings.get("address")
        with dask_cluster(address, n_workers, int(settings.get("threads_per_worker") or 1),
                          settings.get("memory_limit")) as scheduler:
            options = dask_pipeline_options(scheduler, settings.get("npartitions"), extra)
            where = f"dask scheduler {scheduler}" + ("" if address else f" ({n_workers} local workers)")
            yield RunnerChoice(name, DaskRunner(), options, local=not address,
                               num_workers=n_workers if not address else 1, detail=where,
                               progress_address=dask_progress_address(scheduler))
    elif name == "dataflow":
        options = dataflow_pipeline_options(dict(dataflow or {}), job_name, extra, dry_run=dry_run)
        try:
            from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401
        except ImportError:
            raise RecipeError("--runner dataflow needs Beam's Google Cloud extras: "
                              "pip install 'arcoforge[dataflow]' (apache-beam[gcp])") from None
        settings = options.get_all_options(drop_default=True)
        yield RunnerChoice(name, "DataflowRunner", options, local=False,
                           detail=f"Dataflow job {settings['job_name']} in {settings['project']}/{settings['region']}"
                           + (" (dry run: nothing is submitted)" if dry_run else ""))
    elif name == "flink":
        options = flink_pipeline_options(dict(flink or {}), extra)
        settings = options.get_all_options(drop_default=True)
        yield RunnerChoice(name, settings["runner"], options, local=False,
                           detail=f"Flink at {settings.get('job_endpoint') or settings.get('flink_master')}")
    else:
        raise RecipeError(f"runner {name!r} is not one of {', '.join(RUNNER_NAMES)}")


def flink_start_error(settings: dict[str, Any], error: BaseException) -> InfrastructureError | None:
    """What went wrong reaching Flink, as a classified error with a hint; ``None`` if ``error`` is something else.

    Beam's own errors here are a bare ``grpc.FutureTimeoutError`` (no job server
    at ``job_endpoint``) or a ``ValueError``/``RuntimeError`` about the job
    server jar (not found, or not downloadable without network); both ended a
    bake as an unexpected error (exit 1).
    """
    text = " ".join(str(error).split())
    endpoint, master = settings.get("job_endpoint"), settings.get("flink_master")
    if type(error).__name__ == "FutureTimeoutError" or "job service" in text.lower():
        return InfrastructureError(
            f"--runner flink: no Beam job server answered at {endpoint or master!r} "
            f"({type(error).__name__}{': ' + text if text else ''}); start one for your Flink version "
            "(docker run apache/beam_flink<version>_job_server --flink-master=HOST:8081) or fix "
            "runner.flink.job_endpoint")
    if "job server jar" in text.lower() or "jar url" in text.lower():
        jar = settings.get("flink_job_server_jar")
        return InfrastructureError(
            f"--runner flink could not start Beam's Flink job server for {master!r}: {text[:300]}; "
            + (f"runner.flink.flink_job_server_jar = {jar!r} must be a readable jar file or URL"
               if jar else "without network Beam cannot download it: download "
               "beam-runners-flink-<flink version>-job-server-<beam version>.jar and set "
               "runner.flink.flink_job_server_jar, or run a job server and set runner.flink.job_endpoint"))
    return None
