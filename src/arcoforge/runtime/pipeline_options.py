"""Beam pipeline options for each runner arcoforge runs on, from a bake's config tables.

Its own module because building and checking options is pure: no runner is
started and nothing touches the network, so a bad config is refused before a
pipeline exists. The embedded runner's
options, Dask's scheduler address, Dataflow's required settings and job-name
rule, Flink's two ways of reaching a cluster. Choosing and starting a runner
is :mod:`arcoforge.runtime.runners`.
"""

from __future__ import annotations

import re
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from ..errors import RecipeError

# The Dataflow API's rule for job names.
DATAFLOW_JOB_NAME_PATTERN = r"[a-z]([-a-z0-9]{0,1022}[a-z0-9])?"
DATAFLOW_JOB_NAME_MAX = 1024
# Names arcoforge makes up itself stay short enough to read in the console.
DATAFLOW_DERIVED_NAME_MAX = 63
DATAFLOW_REQUIRED = ("project", "region", "temp_location")
# gs://bucket[/path], with a bucket name Beam's validator accepts.
GCS_LOCATION_PATTERN = r"gs://[a-z0-9][-_a-z0-9.]+[a-z0-9](/.*)?"


# Beam options arcoforge sets from its own flags and config keys: giving them in runner.options too is a clash.
SET_BY_ARCOFORGE = {
    "runner": "--runner / runner.name",
    "direct_num_workers": "--num-workers / runner.num_workers",
    "direct_running_mode": "--num-workers / runner.num_workers",
    "job_name": "--job-name / runner.dataflow.job_name",
    "dry_run": "--dry-run",
    "dask_client_address": "--dask-address / runner.dask.address",
    "dask_npartitions": "runner.dask.npartitions",
}


def known_beam_options() -> frozenset[str]:
    """The names of every pipeline option Beam (and arcoforge's Dask runner) registers."""
    from . import dask_runner  # noqa: F401  registers the Dask runner's options

    return frozenset(PipelineOptions(flags=[]).get_all_options(retain_unknown_options=False))


def check_beam_options(options: dict[str, Any], sections: dict[str, dict[str, Any]] | None = None,
                       where: str = "runner.options") -> dict[str, Any]:
    """``options`` (a config's ``runner.options``) checked before Beam sees them; returns them.

    Every name must be a Beam pipeline option, and none may be one arcoforge
    sets itself or one a runner section (``sections``, e.g. ``{"dataflow": {...}}``)
    already gives. All problems are one :class:`RecipeError` (exit 2), where
    Beam would raise a ``TypeError`` or drop an unknown name silently.
    """
    import difflib

    problems = []
    known = known_beam_options()
    for name in sorted(options):
        if name in SET_BY_ARCOFORGE:
            problems.append(f"{where}.{name} clashes with {SET_BY_ARCOFORGE[name]}, which sets it; give it there")
        elif name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            problems.append(f"{where}.{name} is not a Beam pipeline option"
                            + (f" (did you mean {close[0]}?)" if close else ""))
        else:
            for section, values in (sections or {}).items():
                if name in (values or {}):
                    problems.append(f"{where}.{name} clashes with runner.{section}.{name}; give it once")
    if problems:
        raise RecipeError("invalid config: " + "; ".join(problems))
    return dict(options)


def local_pipeline_options(num_workers: int = 1, **options: Any) -> PipelineOptions:
    """Options for the local runner: one process, or ``num_workers`` worker processes."""
    if num_workers < 1:
        raise RecipeError(f"num_workers must be at least 1, got {num_workers}")
    return PipelineOptions(flags=[], direct_num_workers=num_workers, **options)


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
    """Options for arcoforge's :class:`~arcoforge.runtime.dask_runner.DaskRunner` on the scheduler at ``address``."""
    flags = [f"--dask_client_address={address}"]
    if npartitions:
        flags.append(f"--dask_npartitions={int(npartitions)}")
    return PipelineOptions(flags=flags, **(extra or {}))
