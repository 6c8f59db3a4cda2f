"""Running recipes on Apache Beam, and the run-time defaults a recipe may leave out.

The embedded default is Beam's FnApiRunner: in this process, or in several
local worker processes. It is chosen directly because Beam's ``DirectRunner``
first tries to download its Prism binary, which waits on the network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sys
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
    # Who is baking (the lease owner of the stores written), and whether to break other bakes' leases.
    owner: str | None = None
    break_lease: bool = False
    # Seconds a store's lease outlives its last heartbeat (see arcoforge.lease).
    lease_ttl: float | None = None
    # Append new inputs to existing stores along their concat dim (arcoforge bake --append).
    append: bool = False
    # Remote inputs (see arcoforge.io and docs/object-storage.md). ``cache_root``: where
    # OpenURLWithFSSpec keeps verified copies of inputs (a local path or fsspec URL).
    cache_root: str | None = None
    # fsspec options for opening inputs (endpoint_url, key/secret, anon, profile, headers...),
    # merged under a pattern's own fsspec_open_kwargs; may hold secrets, never logged or stored.
    source_storage_options: dict | None = None
    # Attempts per remote read (1 = no retry) and the limit on concurrent remote opens per worker.
    retries: int | None = None
    max_concurrency: int | None = None
    # "raise" (default) stops on a bad input; "skip" drops it, fills its positions, records it.
    on_error: str | None = None
    # Seconds one input may take to read, all tries included (see arcoforge.io.deadline).
    input_deadline: float | None = None


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


# Memory of one local worker process before it holds any data: an interpreter with Beam, xarray,
# zarr and the netCDF libraries loaded (measured: 250-300 MiB).
WORKER_PROCESS_BYTES = 300 * 2**20


def local_data_budget(max_mem: int, num_workers: int) -> int:
    """Bytes of array data each of ``num_workers`` local processes may hold within ``max_mem`` in all.

    Worker processes beyond the first cost their own memory out of the same machine.

    >>> local_data_budget(2**30, 1) == 2**30
    True
    >>> local_data_budget(2**30, 2) // 2**20
    362
    """
    budget = (max_mem - (max(num_workers, 1) - 1) * WORKER_PROCESS_BYTES) // max(num_workers, 1)
    if budget <= 0:
        raise RecipeError(
            f"max_mem={max_mem / 2**20:.0f} MiB cannot hold {num_workers} local worker processes of about "
            f"{WORKER_PROCESS_BYTES / 2**20:.0f} MiB each; raise max_mem or use fewer workers"
        )
    return budget


def local_pipeline_options(num_workers: int = 1, **options: Any) -> PipelineOptions:
    """Options for the local runner: one process, or ``num_workers`` worker processes."""
    if num_workers < 1:
        raise RecipeError(f"num_workers must be at least 1, got {num_workers}")
    return PipelineOptions(flags=[], direct_num_workers=num_workers, **options)


def local_runner(num_workers: int = 1) -> beam.runners.PipelineRunner:
    """The embedded runner, which never touches the network.

    With several workers, each is a local process started through
    :mod:`arcoforge._worker` (Beam's SDK harness with its chatter kept off
    stderr), or one of the :class:`~arcoforge._worker.WarmWorkers` started ahead.
    Beam's own ``multi_processing`` mode would replace that command, so the
    environment is given to the runner directly.
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms import environments

    from ._worker import WarmWorkers, attach_command

    if num_workers == 1:
        return FnApiRunner()
    warm = WarmWorkers.active_folder()
    command = attach_command(warm) if warm else f"{shlex.quote(sys.executable)} -m arcoforge._worker"
    return FnApiRunner(
        default_environment=environments.SubprocessSDKEnvironment.from_command_string(command_string=command)
    )


def exit_now(code: int) -> None:
    """End this process once its work is done and its output flushed, skipping interpreter teardown.

    Tearing down the thousands of modules a worker imported (and the collections
    that run on the way) took 0.5 s per process after the last task, while the
    bake waited; nothing is left to release that the OS does not reclaim.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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


# ---------------------------------------------------------------------------------------------
# Choosing a runner: direct (the embedded one), dask, dataflow, flink; options from a bake's config

RUNNER_NAMES = ("direct", "dask", "dataflow", "flink")
# The Dataflow API's rule for job names.
DATAFLOW_JOB_NAME_PATTERN = r"[a-z]([-a-z0-9]{0,1022}[a-z0-9])?"
DATAFLOW_JOB_NAME_MAX = 1024
# Names arcoforge makes up itself stay short enough to read in the console.
DATAFLOW_DERIVED_NAME_MAX = 63
DATAFLOW_REQUIRED = ("project", "region", "temp_location")
# gs://bucket[/path], with a bucket name Beam's validator accepts.
GCS_LOCATION_PATTERN = r"gs://[a-z0-9][-_a-z0-9.]+[a-z0-9](/.*)?"


def dataflow_job_name(*parts: str, max_length: int = DATAFLOW_DERIVED_NAME_MAX) -> str:
    """A valid Dataflow job name made of ``parts`` (feedstock, recipe id, time), the last part kept whole.

    Lowercase; every run of other characters becomes one hyphen; a name that would
    not start with a letter gets ``job-`` in front; cut to ``max_length``.

    >>> dataflow_job_name("My_Feedstock", "daily SST", "20260101T120000")
    'my-feedstock-daily-sst-20260101t120000'
    >>> dataflow_job_name("2024 archive")
    'job-2024-archive'
    """
    cleaned = [re.sub(r"[^a-z0-9]+", "-", str(part).lower()).strip("-") for part in parts]
    cleaned = [part for part in cleaned if part]
    name = "-".join(cleaned) or "arcoforge"
    if not name[0].isalpha():
        name = "job-" + name
    if len(name) > max_length:
        tail = cleaned[-1][: max_length // 2] if len(cleaned) > 1 else ""
        head = name[: max_length - len(tail) - (1 if tail else 0)].rstrip("-")
        name = f"{head}-{tail}" if tail else head
    return name.rstrip("-")


def check_dataflow_job_name(name: str) -> str:
    """``name`` if Dataflow accepts it, else a :class:`RecipeError` saying the rule and a valid spelling."""
    if re.fullmatch(DATAFLOW_JOB_NAME_PATTERN, name) is None:
        raise RecipeError(
            f"Dataflow job name {name!r} is not valid: expected lowercase letters, digits and hyphens, "
            f"starting with a letter, ending with a letter or digit, at most {DATAFLOW_JOB_NAME_MAX} "
            f"characters (e.g. {dataflow_job_name(name, max_length=DATAFLOW_JOB_NAME_MAX)!r})"
        )
    return name


def dataflow_pipeline_options(settings: dict[str, Any], job_name: str, extra: dict[str, Any] | None = None,
                              dry_run: bool = False) -> PipelineOptions:
    """Beam options for Google Cloud Dataflow from a config's ``[runner.dataflow]`` table.

    ``project``, ``region`` and ``temp_location`` (``gs://``) are required;
    ``job_name`` defaults to ``job_name``; ``labels`` is a table of strings;
    everything else (``machine_type``, ``max_num_workers``, ``sdk_container_image``,
    ...) is a Beam Dataflow option of the same name. ``extra`` is any other Beam
    option. ``dry_run`` builds and checks the job without submitting it.
    """
    missing = [key for key in DATAFLOW_REQUIRED if not settings.get(key)]
    if missing:
        raise RecipeError(
            "--runner dataflow needs " + ", ".join(f"runner.dataflow.{key}" for key in missing)
            + " in the config file (--config FILE); e.g. project = \"my-project\", region = \"europe-west1\", "
            "temp_location = \"gs://my-bucket/tmp\""
        )
    for key in ("temp_location", "staging_location"):
        # Beam answers a location it finds invalid by creating a default bucket, which waits on the network.
        if settings.get(key) and not re.fullmatch(GCS_LOCATION_PATTERN, str(settings[key])):
            raise RecipeError(f"runner.dataflow.{key} must be a gs:// URL with a valid bucket name "
                              f"(gs://my-bucket/tmp), got {settings[key]!r}")
    options = {**(extra or {}), **{key: value for key, value in settings.items() if key != "labels"}}
    if settings.get("labels"):
        options["labels"] = [f"{key}={value}" for key, value in settings["labels"].items()]
    options["job_name"] = check_dataflow_job_name(str(settings.get("job_name") or job_name))
    options["runner"] = "DataflowRunner"
    if dry_run:
        options["dry_run"] = True
    return PipelineOptions(flags=[], **options)


def flink_pipeline_options(settings: dict[str, Any], extra: dict[str, Any] | None = None) -> PipelineOptions:
    """Beam options for Apache Flink from a config's ``[runner.flink]`` table.

    Either ``job_endpoint`` (a running Beam Flink job server, ``host:8099``: the
    PortableRunner submits to it) or ``flink_master`` (the Flink REST endpoint,
    ``host:8081``: Beam's FlinkRunner starts a job server from
    ``flink_job_server_jar``, or downloads the jar for ``flink_version``).
    ``environment_type``/``environment_config`` say how Flink's task managers run
    Python (``DOCKER`` and an image holding arcoforge, ``EXTERNAL`` and a worker
    pool address, ``PROCESS``); ``parallelism``, ``max_parallelism``.
    """
    master, endpoint = settings.get("flink_master"), settings.get("job_endpoint")
    if not master and not endpoint:
        raise RecipeError(
            "--runner flink needs a Flink cluster: set runner.flink.flink_master (the Flink REST endpoint, "
            "host:8081) or runner.flink.job_endpoint (a running Beam Flink job server, host:8099) in the "
            "config file, or pass --flink-master; arcoforge does not start a Flink cluster itself"
        )
    if master in ("[local]", "[auto]") and not settings.get("flink_job_server_jar"):
        raise RecipeError(
            f"runner.flink.flink_master = {master!r} makes Beam start an embedded Flink from a job server jar "
            "it downloads; give the jar as runner.flink.flink_job_server_jar, or name a real cluster"
        )
    options = {**(extra or {}), **settings}
    if endpoint:
        options.pop("flink_master", None)
        options["runner"] = "PortableRunner"
    else:
        options["runner"] = "FlinkRunner"
    return PipelineOptions(flags=[], **options)


def dask_pipeline_options(address: str, npartitions: int | None = None,
                          extra: dict[str, Any] | None = None) -> PipelineOptions:
    """Options for arcoforge's :class:`~arcoforge.dask_runner.DaskRunner` on the scheduler at ``address``."""
    flags = [f"--dask_client_address={address}"]
    if npartitions:
        flags.append(f"--dask_npartitions={int(npartitions)}")
    return PipelineOptions(flags=flags, **(extra or {}))


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
    extra = dict(pipeline_options or {})
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

        n_workers = int(settings.get("n_workers") or num_workers)
        address = settings.get("address")
        with dask_cluster(address, n_workers, int(settings.get("threads_per_worker") or 1),
                          settings.get("memory_limit")) as scheduler:
            options = dask_pipeline_options(scheduler, settings.get("npartitions"), extra)
            where = f"dask scheduler {scheduler}" + ("" if address else f" ({n_workers} local workers)")
            yield RunnerChoice(name, DaskRunner(), options, local=not address,
                               num_workers=n_workers if not address else 1, detail=where)
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
