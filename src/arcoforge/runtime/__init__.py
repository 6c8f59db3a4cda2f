"""How a bake runs: the runner and its options, worker processes, their memory, progress.

The layer above the transforms: it starts the pipeline the recipe built and
the processes that run it, and nothing below it imports it except to read the
run-time defaults and to record progress.

- :mod:`~arcoforge.runtime.runners`: choosing and starting a runner, :func:`run_local`,
  the run-time defaults a recipe may leave out.
- :mod:`~arcoforge.runtime.pipeline_options`: Beam options for the embedded runner,
  Dask, Dataflow and Flink, checked before any runner starts.
- :mod:`~arcoforge.runtime.dask_runner`: Beam pipelines on dask.distributed.
- :mod:`~arcoforge.runtime.workers`: local worker processes, started warm.
- :mod:`~arcoforge.runtime.memory`: what each process may hold; glibc and netCDF-C tuning.
- :mod:`~arcoforge.runtime.progress`: progress events from workers, and their reporter.
- :mod:`~arcoforge.runtime.events`: what a bake reports to its caller (JSON lines, or lines for people).
- :mod:`~arcoforge.runtime.process`: ending a process without interpreter teardown.

Names are imported on first use, as in :mod:`arcoforge`: a worker process
imports this package before its own entry point, and must not pay for Beam
then. Type checkers see the same names through the ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dask_runner import DaskRunner
    from .memory import (keep_freed_memory_for_reuse, limit_netcdf_chunk_cache, local_data_budget,
                         release_freed_memory, worker_task_buffer)
    from .pipeline_options import (check_dataflow_job_name, dask_pipeline_options, dataflow_job_name,
                                   dataflow_pipeline_options, flink_pipeline_options, local_pipeline_options)
    from .process import exit_now
    from .progress import BakeProgress, ProgressReporter, record_event
    from .events import Events, JsonProgress
    from .context import BakeContext, current_context, resolve_context, use_runtime_defaults
    from .runners import RunnerChoice, choose_runner, local_runner, quiet_beam_logging, run_local
    from .workers import WarmWorkers

# Each name and the module of this package that defines it.
_PUBLIC = {
    "DaskRunner": "dask_runner",
    "keep_freed_memory_for_reuse": "memory",
    "limit_netcdf_chunk_cache": "memory",
    "local_data_budget": "memory",
    "release_freed_memory": "memory",
    "worker_task_buffer": "memory",
    "check_dataflow_job_name": "pipeline_options",
    "dask_pipeline_options": "pipeline_options",
    "dataflow_job_name": "pipeline_options",
    "dataflow_pipeline_options": "pipeline_options",
    "flink_pipeline_options": "pipeline_options",
    "local_pipeline_options": "pipeline_options",
    "exit_now": "process",
    "BakeProgress": "progress",
    "ProgressReporter": "progress",
    "record_event": "progress",
    "Events": "events",
    "JsonProgress": "events",
    "RunnerChoice": "runners",
    "BakeContext": "context",
    "current_context": "context",
    "resolve_context": "context",
    "choose_runner": "runners",
    "local_runner": "runners",
    "quiet_beam_logging": "runners",
    "run_local": "runners",
    "use_runtime_defaults": "context",
    "WarmWorkers": "workers",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
