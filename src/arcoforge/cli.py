"""The ``arcoforge`` command: lint and bake feedstocks and recipes, and a demo that needs nothing but this package.

Exit codes (for bots): 0 success; 2 the recipe, feedstock, config or command
line is wrong (``lint`` found an error); 3 an input is bad (unreadable, or
inconsistent with the others); 4 the infrastructure failed (storage, workers,
the cluster); 1 anything unexpected. ``bake --json`` prints one JSON object per
line for each event, the last one ``{"event": "result", ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .errors import EXIT_CODES, EXIT_INFRASTRUCTURE, EXIT_INPUT, EXIT_OK, EXIT_RECIPE, EXIT_UNEXPECTED

# The failure class of each exit code, as ``bake --json`` names it.
EXIT_CLASSES = {EXIT_OK: None, **{code: kind for kind, code in EXIT_CODES.items()}}

logger = logging.getLogger("arcoforge")

_OS_ERROR_LINE = re.compile(
    r"\b(?:OSError|IOError|PermissionError|NotADirectoryError|IsADirectoryError|FileNotFoundError|"
    r"FileExistsError|ConnectionError|ConnectionResetError|TimeoutError|BrokenPipeError): [^\n]+"
)


def classify_failure(error: BaseException) -> tuple[int, str]:
    """The exit code and one clear message for a failed bake.

    The error's own kind decides (see :mod:`arcoforge.errors`); when a runner handed the
    worker's error back as text, the kind tag written into the message decides.
    """
    from .errors import ArcoforgeError, classify_text

    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ArcoforgeError) and current.kind in EXIT_CODES:
            return current.exit_code, _strip_beam_context(current.message)
        current = current.__cause__ or current.__context__
    tagged = classify_text(str(error))
    if tagged:
        kind, message = tagged
        return EXIT_CODES[kind], _strip_beam_context(message)
    if isinstance(error, OSError):
        return EXIT_INFRASTRUCTURE, f"{type(error).__name__}: {error}"
    # Runners hand worker errors back as text: an operating-system error there is storage or network.
    os_error = _OS_ERROR_LINE.search(str(error))
    if os_error:
        return EXIT_INFRASTRUCTURE, _strip_beam_context(os_error.group(0))
    return EXIT_UNEXPECTED, f"{type(error).__name__}: {_strip_beam_context(str(error))}"


def _strip_beam_context(message: str) -> str:
    return re.sub(r" \[while running '.*?'\]", "", message).strip()


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("arcoforge").setLevel(level)
    from . import import_quickly

    import_quickly("arcoforge.runtime.runners", "arcoforge.transforms")  # what every command goes on to use
    from .runtime.runners import quiet_beam_logging

    quiet_beam_logging(debug=verbose > 1)


class Events:
    """How a bake reports what happens: one JSON object per line (``--json``), or lines for people.

    Every event goes to the JSON stream when there is one; for people, only the
    lines a user reads (stores and STAC collections written) are printed.
    """

    def __init__(self, json_stream: TextIO | None = None):
        self.json_stream = json_stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        if self.json_stream is not None:
            line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
            with self._lock:
                self.json_stream.write(line + "\n")
                self.json_stream.flush()
        elif event == "stac_written":
            print(f"wrote STAC collection {fields['path']}")
        elif event == "dry_run":
            print(f"dry run: {fields['detail']}")


class _JsonProgress:
    """Follows a progress folder like :class:`~arcoforge.runtime.progress.ProgressReporter`, emitting JSON events."""

    def __init__(self, progress_dir: str, events: Events, recipe_id: str, interval: float = 0.5):
        from .runtime.progress import ProgressReporter

        events_ref, last = events, [None]

        class Reporter(ProgressReporter):
            def _render(self, final: bool = False) -> None:
                p = self.progress
                state = (p.inputs_read, p.tasks_done, p.tasks_total, p.bytes_written)
                if state == last[0] and not final:
                    return
                last[0] = state
                events_ref.emit("progress", recipe_id=recipe_id, inputs_read=p.inputs_read,
                                inputs_total=p.inputs_total, tasks_done=p.tasks_done, tasks_total=p.tasks_total,
                                bytes_written=p.bytes_written, bytes_total=p.bytes_total,
                                seconds=round(p.elapsed(), 3), final=final)

        self.reporter = Reporter(progress_dir, stream=io.StringIO(), interval=interval)

    def __enter__(self):
        return self.reporter.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        self.reporter.__exit__(*exc_info)


@dataclass
class RecipeOutcome:
    """What one recipe of a bake did."""

    recipe_id: str
    runner: str
    stores: list[str] = field(default_factory=list)
    stac: list[str] = field(default_factory=list)
    inputs: int | None = None
    inputs_total: int | None = None
    write_tasks: int | None = None
    bytes_written: int | None = None
    seconds: float = 0.0
    dry_run: bool = False
    # inputs that failed and were skipped (--skip-bad-inputs): index, url, error, stage
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BakeReport:
    """Everything a bake did, recipe by recipe, for the summary a bot reads."""

    target: str
    feedstock: str | None = None
    recipes: list[RecipeOutcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def stores(self) -> list[str]:
        return [url for outcome in self.recipes for url in outcome.stores]

    def summary(self, status: str, exit_code: int, error: str | None = None) -> dict[str, Any]:
        def total(name: str) -> int | None:
            values = [getattr(o, name) for o in self.recipes]
            return sum(values) if values and None not in values else None

        return {
            "status": status,
            "exit_code": exit_code,
            "error": error,
            "target": self.target,
            "feedstock": self.feedstock,
            "recipes": [o.recipe_id for o in self.recipes],
            "stores": self.stores,
            "stac": [path for o in self.recipes for path in o.stac],
            "counts": {"recipes": len(self.recipes), "stores": len(self.stores), "inputs": total("inputs"),
                       "write_tasks": total("write_tasks"), "bytes_written": total("bytes_written")},
            "durations": {"total_seconds": round(time.monotonic() - self.started, 3),
                          "recipes": {o.recipe_id: o.seconds for o in self.recipes}},
            "details": [o.as_dict() for o in self.recipes],
        }


def load_recipes(target: str, recipe_id: str | None = None):
    """``(feedstock or None, {id: RecipeRef})`` for a feedstock folder or a recipe file."""
    from .errors import RecipeError
    from .feedstock import feedstock_folder, feedstock_recipes, file_recipes, load_feedstock

    if feedstock_folder(target) is not None:
        feedstock = load_feedstock(target)
        return feedstock, feedstock_recipes(feedstock, recipe_id)
    if Path(target).is_dir():
        raise RecipeError(f"{target} is not a feedstock: expected a folder holding meta.yaml, or a recipe .py file")
    return None, file_recipes(target, recipe_id)


def bake(
    recipe_file: str,
    target_root: str | None = None,
    recipe_id: str | None = None,
    num_workers: int | None = None,
    max_mem: str | None = None,
    stac: bool | None = None,
    stac_schemas: str | None = None,
    metadata: dict | None = None,
    break_lease: bool = False,
    *,
    append: bool = False,
    config: Any = None,
    runner: str | None = None,
    cache_root: str | None = None,
    prune: int | None = None,
    dry_run: bool = False,
    events: Events | None = None,
    report: BakeReport | None = None,
    on_error: str | None = None,
    retries: int | None = None,
    max_concurrency: int | None = None,
    lease_ttl: float | None = None,
    input_deadline: float | None = None,
) -> list[str]:
    """Bake the recipe(s) of a feedstock folder or a recipe file; returns the store URLs.

    Arguments given here override the :class:`~arcoforge.config.BakeConfig`
    ``config`` (from ``--config``). ``prune`` keeps the first N inputs of each
    concat dimension (a CI test bake). Progress is shown while a local run goes
    (a bar on a terminal, log lines otherwise, JSON events with ``events``), a
    summary logged at the end of each recipe, and each store gets a STAC
    collection under ``<target_root>/stac``, validated offline.
    ``report`` collects what each recipe did, also when a later one fails.
    """
    from .config import BakeConfig

    config = (config or BakeConfig()).with_overrides(
        target_root=target_root, runner=runner, num_workers=num_workers, max_mem=max_mem, stac=stac,
        stac_schemas=stac_schemas, cache_root=cache_root,
    ).resolved()
    events = events or Events()
    report = report if report is not None else BakeReport(str(recipe_file))
    feedstock, recipes = load_recipes(str(recipe_file), recipe_id)
    report.feedstock = feedstock.name if feedstock else None
    if feedstock is not None and metadata is None:
        metadata = feedstock.meta
    events.emit("bake_start", target=str(recipe_file), feedstock=report.feedstock, recipes=list(recipes),
                runner=config.runner, target_root=config.target_root, prune=prune, dry_run=dry_run)
    for ref in recipes.values():
        single = len(recipes) == 1 and ref.id == "recipe" and feedstock is None
        outcome = _bake_recipe(ref, config, events, prune=prune, dry_run=dry_run, metadata=metadata,
                               break_lease=break_lease, append=append, feedstock_name=report.feedstock,
                               collection_id=None if single else ref.id,
                               inputs={"on_error": on_error, "retries": retries, "max_concurrency": max_concurrency,
                                       "input_deadline": input_deadline},
                               lease_ttl=lease_ttl)
        report.recipes.append(outcome)
    return report.stores


def _runtime_values(**values: Any) -> dict[str, Any]:
    """The run-time values this version of :class:`BakeContext` knows, warning of the rest."""
    from .runtime.context import BakeContext

    known = {f.name for f in dataclasses.fields(BakeContext)}
    for name in sorted(set(values) - known):
        if values[name]:
            logger.warning("%s is not supported by this version of arcoforge; it is ignored", name)
    return {name: value for name, value in values.items() if name in known}


def _bake_recipe(ref: Any, config: Any, events: Events, *, prune: int | None, dry_run: bool,
                 metadata: dict | None, break_lease: bool, append: bool, feedstock_name: str | None,
                 collection_id: str | None, inputs: dict[str, Any] | None = None,
                 lease_ttl: float | None = None) -> RecipeOutcome:
    """Build, (prune,) run and catalogue one recipe."""
    import datetime as dt

    import apache_beam as beam

    from .errors import RecipeError
    from .feedstock import prune_pipeline, pruned_recipe
    from .runtime.pipeline_options import dataflow_job_name
    from .runtime.progress import ProgressReporter
    from .runtime.context import use_runtime_defaults
    from .runtime.runners import choose_runner
    from .stac import provenance, write_store_collection
    from .names import safe_relative_path
    from .io.state import StoreState, new_owner

    safe_relative_path(ref.id, "recipe id", single_segment=True)  # it names a STAC folder
    started = time.monotonic()
    pattern = getattr(ref.module, "pattern", None)
    pattern = pattern if hasattr(pattern, "sha256") else None
    if pattern is not None and prune:
        pattern = pattern.prune(prune)
    known = provenance(recipe_file=ref.file, recipe_id=ref.id, pattern=pattern)
    known = {k: known[k] for k in ("recipe_id", "recipe_sha256", "pattern_sha256") if k in known}
    owner = new_owner()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dt%H%M%S")
    parts = [feedstock_name] if feedstock_name and feedstock_name != ref.id else []
    job_name = dataflow_job_name(*parts, ref.id, stamp)
    outcome = RecipeOutcome(ref.id, config.runner, dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        choice = stack.enter_context(choose_runner(
            config.runner, num_workers=config.num_workers, pipeline_options=config.pipeline_options,
            dask=config.dask, dataflow=config.dataflow, flink=config.flink, job_name=job_name, dry_run=dry_run,
        ))
        progress_dir = (stack.enter_context(tempfile.TemporaryDirectory(prefix="arcoforge-progress-"))
                        if choice.local else None)
        stack.enter_context(use_runtime_defaults(**_runtime_values(
            target_root=config.target_root, storage_options=config.target_storage_options or None,
            num_workers=choice.num_workers, max_mem=config.max_mem, progress_dir=progress_dir,
            provenance=known, owner=owner, break_lease=break_lease, cache_root=config.cache_root,
            lease_ttl=lease_ttl,
            source_storage_options=config.source_storage_options or None, append=append,
            **{name: value for name, value in (inputs or {}).items() if value is not None},
        )))
        hooked = pruned_recipe(ref, prune) if prune else None
        try:
            pipeline = beam.Pipeline(runner=choice.runner, options=choice.options)
        except ValueError as error:  # Beam's own check of the options (project id, locations...)
            raise RecipeError(f"{choice.name} options are not valid: {' '.join(str(error).split())}") from None
        _ = pipeline | (hooked or ref.transform)
        if prune and hooked is None:
            pruned = prune_pipeline(pipeline, prune, f"recipe {ref.id!r}")
            outcome.inputs_total = pruned.kept
        else:
            outcome.inputs_total = _pattern_inputs(pipeline)
        outcome.stores = _stores_in(pipeline, config.target_root)
        logger.info("baking recipe %r from %s on %s (%s)", ref.id, ref.file, choice.name, choice.detail)
        events.emit("recipe_start", recipe_id=ref.id, runner=choice.name, detail=choice.detail,
                    stores=outcome.stores, inputs_total=outcome.inputs_total)
        if dry_run and choice.name != "dataflow":
            pipeline.to_runner_api()  # every step serializes: what a submission would check
            events.emit("dry_run", recipe_id=ref.id, detail=f"recipe {ref.id!r} builds for {choice.detail}; "
                                                            "nothing was run")
            outcome.seconds = round(time.monotonic() - started, 3)
            return outcome
        if progress_dir is None:
            reporter = contextlib.nullcontext(None)
        elif events.json_stream is not None:
            reporter = _JsonProgress(progress_dir, events, ref.id)
        else:
            reporter = ProgressReporter(progress_dir)
        try:
            # A dry run (Dataflow's: the job is built, not run) writes nothing, so it takes no lease.
            with _leases_kept([] if dry_run else outcome.stores, owner, config.target_storage_options or None, lease_ttl,
                              break_lease), reporter as progress:
                result = pipeline.run()
                state = result.wait_until_finish()
        except BaseException:
            # A failed bake leaves its state for a resume, but not its lease.
            for url in outcome.stores:
                with contextlib.suppress(Exception):
                    StoreState(url, config.target_storage_options or None).release_lease(owner)
            raise
        if progress is not None:
            summary = progress.progress.summary()
            outcome.inputs, outcome.write_tasks = summary["inputs"], summary["write_tasks"]
            outcome.bytes_written = summary["bytes_written"]
            outcome.skipped = summary["skipped"]
            for record in outcome.skipped:
                logger.warning("skipped input %s (%s): %s", record["url"], record["index"], record["error"])
        else:
            _counts_from_metrics(result, outcome)
        if dry_run:
            job = getattr(result, "job", None)
            events.emit("dry_run", recipe_id=ref.id, job_name=job.proto.name if job is not None else None,
                        detail=f"{choice.detail}: the job was built and its options accepted")
            outcome.stores = []
            outcome.seconds = round(time.monotonic() - started, 3)
            return outcome
        if str(state) not in ("DONE", "PipelineState.DONE") and state is not None:
            from .errors import InfrastructureError

            raise InfrastructureError(f"recipe {ref.id!r}: the {choice.name} run ended in state {state}")
    for url in outcome.stores:
        events.emit("store_written", recipe_id=ref.id, url=url)
    if config.stac and _writes_stac(pipeline):
        logger.info("recipe %r describes its stores with WriteSTAC; the bake writes no second collection", ref.id)
    elif config.stac:
        for url in outcome.stores:
            path = write_store_collection(
                url, config.target_root or url.rstrip("/").rsplit("/", 1)[0],
                collection_id=collection_id if len(outcome.stores) == 1 else None, metadata=metadata,
                storage_options=config.target_storage_options or None, provenance=known,
                schemas_dir=config.stac_schemas,
            )
            outcome.stac.append(path)
            events.emit("stac_written", recipe_id=ref.id, store=url, path=path)
    outcome.seconds = round(time.monotonic() - started, 3)
    logger.info("recipe %r done: %s inputs, %s write tasks, %.0f MiB in %.1f s", ref.id, outcome.inputs,
                outcome.write_tasks, (outcome.bytes_written or 0) / 2**20, outcome.seconds)
    events.emit("recipe_done", **outcome.as_dict())
    return outcome


@contextlib.contextmanager
def _leases_kept(stores: list[str], owner: str, storage_options: dict | None, ttl: float | None,
                 break_lease: bool):
    """Hold the lease of every store while the pipeline runs, renewed by a heartbeat thread of this process.

    Taken here, before the run, so that a store another bake holds fails the bake
    at once; the workers' StoreToZarr steps find the lease theirs (the same owner).
    """
    from .io.lease import DEFAULT_TTL, LeaseKeeper
    from .io.state import StoreState

    ttl = float(ttl or DEFAULT_TTL)
    leases = []
    try:
        for url in stores:
            lease = StoreState(url, storage_options).lease()
            lease.acquire(owner, ttl, break_lease)
            leases.append(lease)
    except BaseException:
        for lease in leases:
            with contextlib.suppress(Exception):
                lease.release(owner)
        raise
    with LeaseKeeper(leases, owner, ttl):
        yield


def _counts_from_metrics(result: Any, outcome: RecipeOutcome) -> None:
    """Inputs, tasks and bytes from the runner's Beam metrics, where it has them (Dataflow, Flink)."""
    try:
        from apache_beam.metrics.metric import MetricsFilter

        counters = result.metrics().query(MetricsFilter().with_namespace("arcoforge"))["counters"]
    except Exception:  # runners without metrics (dask): the counts stay unknown
        return
    totals: dict[str, int] = {}
    for counter in counters:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (counter.committed or 0)
    outcome.inputs = totals.get("inputs_read", outcome.inputs)
    outcome.write_tasks = totals.get("tasks_written", outcome.write_tasks)
    outcome.bytes_written = totals.get("bytes_written", outcome.bytes_written)


def _pattern_inputs(pipeline: Any) -> int | None:
    """How many ``(Index, url)`` inputs the pipeline's ``beam.Create`` steps hold, if it has any."""
    import apache_beam as beam

    from .feedstock import is_pattern_item
    from .lint import built_transforms

    creates = [t for t in built_transforms(pipeline)
               if type(t) is beam.Create and t.values and all(map(is_pattern_item, t.values))]
    return sum(len(t.values) for t in creates) if creates else None


def _writes_stac(pipeline: Any) -> bool:
    """Whether the recipe describes its stores in STAC itself (a WriteSTAC step)."""
    from .lint import built_transforms
    from .transforms import WriteSTAC

    return any(isinstance(transform, WriteSTAC) for transform in built_transforms(pipeline))


def _stores_in(pipeline: Any, target_root: str | None) -> list[str]:
    """URLs of the stores a built pipeline writes, from its StoreToZarr steps wherever they sit."""
    from .lint import built_transforms
    from .transforms import StoreToZarr
    from .store_plan import store_url

    found = []
    for transform in built_transforms(pipeline):
        if isinstance(transform, StoreToZarr):
            root = transform.target_root or target_root
            if root:
                url = store_url(str(root), transform.store_name)
                if url not in found:
                    found.append(url)
    return found


def _bake_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The bake arguments given on the command line (``None`` where not given)."""
    return dict(target_root=args.target_root, recipe_id=args.recipe_id, num_workers=args.num_workers,
                max_mem=args.max_mem, stac=False if args.no_stac else None, stac_schemas=args.stac_schemas,
                break_lease=args.break_lease, append=args.append, runner=args.runner, cache_root=args.cache_root,
                prune=args.prune, dry_run=args.dry_run,
                on_error="skip" if args.skip_bad_inputs else None, retries=args.retries,
                max_concurrency=args.max_concurrency, lease_ttl=args.lease_ttl,
                input_deadline=args.input_deadline)


def _cmd_bake(args: argparse.Namespace) -> int:
    from .config import BakeConfig, load_config

    config = load_config(args.config) if args.config else BakeConfig()
    config = config.with_overrides(
        dask={"address": args.dask_address} if args.dask_address else None,
        flink={"flink_master": args.flink_master} if args.flink_master else None,
        dataflow={"job_name": args.job_name} if args.job_name else None,
    )
    flags = _bake_flags(args)
    if not args.json:
        stores = bake(args.target, config=config, **flags)
        for url in stores:
            print(f"wrote {url}")
        return EXIT_OK
    # --json: stdout carries only the events; anything else printed goes to stderr.
    stream = sys.stdout
    events = Events(stream)
    report = BakeReport(args.target)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            bake(args.target, config=config, events=events, report=report, **flags)
    except Exception as error:
        code, message = classify_failure(error)
        logger.debug("failure", exc_info=True)
        print(f"arcoforge: error: {message}", file=sys.stderr)
        events.emit("result", **report.summary("failed", code, message),
                    error_class=EXIT_CLASSES.get(code, "unexpected"))
        return code
    events.emit("result", **report.summary("succeeded", EXIT_OK))
    return EXIT_OK


def _cmd_lint(args: argparse.Namespace) -> int:
    from .lint import lint

    report = lint(args.target, args.recipe_id)
    if args.json:
        for problem in report.problems:
            print(json.dumps({"event": "problem", **problem.as_dict()}))
        print(json.dumps({"event": "result", "status": "failed" if report.errors else "succeeded",
                          "exit_code": EXIT_RECIPE if report.errors else EXIT_OK, "target": report.target,
                          "recipes": report.recipe_ids, "errors": len(report.errors),
                          "warnings": len(report.warnings)}))
    else:
        for problem in report.problems:
            print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
        verdict = "failed" if report.errors else "passed"
        print(f"lint {verdict}: {report.target}: {len(report.recipe_ids)} recipe(s) "
              f"({', '.join(report.recipe_ids) or 'none imported'}), {len(report.errors)} error(s), "
              f"{len(report.warnings)} warning(s)")
    return EXIT_RECIPE if report.errors else EXIT_OK


def _cmd_stac(args: argparse.Namespace) -> int:
    from . import stac
    from .errors import RecipeError
    from .stac import validate_stac_path

    if args.target[0] == "validate":
        paths = args.target[1:]
        if not paths:
            raise RecipeError("arcoforge stac validate needs at least one document path")
        errors = []
        for path in paths:
            found = validate_stac_path(path, args.schemas)  # offline; the packaged schemas by default
            errors.extend(found)
            if not found:
                print(f"valid: {path}")
        for error in errors:
            print(f"invalid: {error}", file=sys.stderr)
        return EXIT_OK if not errors else EXIT_INPUT
    if len(args.target) != 1:
        raise RecipeError("arcoforge stac takes one store URL (or `validate PATH ...`)")
    url = args.target[0].rstrip("/")
    output_root = args.output_root or url.rsplit("/", 1)[0] if "/" in url else "."
    metadata = stac.read_meta_yaml(args.meta) if args.meta else None
    path = stac.write_store_collection(url, args.output_root or output_root, collection_id=args.id,
                                       metadata=metadata, schemas_dir=args.schemas)
    print(f"wrote STAC collection {path}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import examples
    from .demo import write_demo_archive

    workdir = Path(args.workdir).resolve()
    inputs = workdir / "inputs"
    print(f"arcoforge demo: writing {args.days} daily NetCDF4 files to {inputs} ...", flush=True)
    write_demo_archive(inputs, ndays=args.days)
    os.environ["ARCOFORGE_DEMO_INPUTS"] = str(inputs)
    os.environ["ARCOFORGE_DEMO_DAYS"] = str(args.days)
    recipe_file = Path(examples.__file__).parent / "daily_sst.py"
    print(f"baking them with the example recipe {recipe_file.name} "
          f"({args.num_workers} worker{'s' if args.num_workers > 1 else ''}) ...", flush=True)
    started = time.monotonic()
    stores = bake(str(recipe_file), str(workdir / "stores"), num_workers=args.num_workers, metadata=DEMO_METADATA)
    elapsed = time.monotonic() - started
    import xarray as xr

    for url in stores:
        ds = xr.open_zarr(url)
        sizes = ", ".join(f"{k}={v}" for k, v in ds.sizes.items())
        print(f"\nZarr store: {url}  ({sizes}; variables {', '.join(map(str, ds.data_vars))}; {elapsed:.1f} s)")
        print("Open it with:")
        print(f'    import xarray as xr; ds = xr.open_zarr("{url}")')
        print(f"STAC catalog: {workdir / 'stores' / 'stac' / 'catalog.json'}")
    return EXIT_OK


DEMO_METADATA = {
    "title": "arcoforge demo: daily sea surface temperature",
    "description": "Synthetic daily analysed SST and sea-ice fraction on a 1-degree grid, "
                   "generated and baked by `arcoforge demo`.",
    "provenance": {
        "license": "CC0-1.0",
        "providers": [{"name": "arcoforge", "roles": ["producer", "processor"],
                       "description": "synthetic data generated by arcoforge.demo"}],
    },
    "keywords": ["sea surface temperature", "sea ice", "demo"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arcoforge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    bake_parser = sub.add_parser("bake", help="bake a feedstock or a recipe file on a Beam runner")
    bake_parser.add_argument("target", metavar="FEEDSTOCK",
                             help="a feedstock folder (holding meta.yaml) or a recipe .py file")
    bake_parser.add_argument("--recipe-id", help="bake only this recipe (an id of meta.yaml, or an object of the file)")
    bake_parser.add_argument("--prune", nargs="?", type=int, const=2, metavar="N",
                             help="a test bake: keep the first N inputs of each concat dimension (default N: 2)")
    bake_parser.add_argument("--target-root", help="where stores are written (path or fsspec URL; "
                             "default: target.root of --config)")
    bake_parser.add_argument("--cache-root", help="where inputs are cached (path or fsspec URL)")
    bake_parser.add_argument("--runner", choices=["direct", "dask", "dataflow", "flink"],
                             help="where the pipeline runs (default: runner.name of --config, else direct)")
    bake_parser.add_argument("--config", help="a TOML or YAML file: target and cache storage, runner options, "
                             "secrets named by environment variable (flags override it)")
    bake_parser.add_argument("--json", action="store_true",
                             help="print one JSON object per line for each event, the last a summary")
    bake_parser.add_argument("--num-workers", type=int, help="local worker processes, or dask LocalCluster "
                             "workers (default 1)")
    bake_parser.add_argument("--max-mem", help="memory budget for array data of the whole bake, e.g. 2GB "
                             "(default: each StoreToZarr's max_mem, 1GB)")
    bake_parser.add_argument("--dask-address", help="dask scheduler address for --runner dask "
                             "(default: a LocalCluster of --num-workers processes)")
    bake_parser.add_argument("--flink-master", help="Flink REST endpoint (host:8081) for --runner flink")
    bake_parser.add_argument("--job-name", help="Dataflow job name (default: feedstock-recipe-time)")
    bake_parser.add_argument("--dry-run", action="store_true", help="build and check the pipeline (Dataflow: "
                             "the job) without running or submitting it")
    bake_parser.add_argument("--no-stac", action="store_true", help="do not write STAC collections")
    bake_parser.add_argument("--skip-bad-inputs", action="store_true",
                             help="go on without inputs that fail (their places get fill values; each one is "
                                  "recorded in the store's attrs and the run summary)")
    bake_parser.add_argument("--retries", type=int, help="attempts for a transient fetch failure (default 5)")
    bake_parser.add_argument("--max-concurrency", type=int, help="remote inputs fetched at once, in all")
    bake_parser.add_argument("--append", action="store_true",
                             help="append inputs the stores do not hold yet along their concat dimension")
    bake_parser.add_argument("--break-lease", action="store_true",
                             help="take over a store another bake holds (only if that bake is dead)")
    bake_parser.add_argument("--lease-ttl", type=float, metavar="SECONDS",
                             help="a store's lease is taken over when its heartbeat is this old (default 60)")
    bake_parser.add_argument("--input-deadline", type=float, metavar="SECONDS",
                             help="total time one input may take to read, retries included (default 120)")
    bake_parser.add_argument("--stac-schemas", help="folder of STAC JSON schemas laid out by URL, to validate "
                             "what is written (default: $ARCOFORGE_STAC_SCHEMAS, else the schemas shipped "
                             "with arcoforge)")
    bake_parser.set_defaults(run=_cmd_bake)

    lint_parser = sub.add_parser("lint", help="check a feedstock's meta.yaml and recipes without running them")
    lint_parser.add_argument("target", metavar="FEEDSTOCK", help="a feedstock folder or a recipe .py file")
    lint_parser.add_argument("--recipe-id", help="check only this recipe")
    lint_parser.add_argument("--json", action="store_true", help="one JSON object per problem, then a result")
    lint_parser.set_defaults(run=_cmd_lint)

    stac_parser = sub.add_parser(
        "stac", help="write the STAC collection of a store, or validate STAC documents",
        usage="arcoforge stac STORE_URL [--id ID] [--output-root DIR] [--meta meta.yaml]\n"
              "       arcoforge stac validate PATH [PATH ...] [--schemas DIR]",
    )
    stac_parser.add_argument("target", nargs="+", help="a store URL, or `validate` and document paths")
    stac_parser.add_argument("--id", help="collection id (default: the store name without .zarr)")
    stac_parser.add_argument("--output-root", help="where stac/ goes (default: the store's parent folder)")
    stac_parser.add_argument("--meta", help="a feedstock meta.yaml for title, license, providers, keywords")
    stac_parser.add_argument("--schemas", help="folder of STAC JSON schemas laid out by URL "
                             "(default: $ARCOFORGE_STAC_SCHEMAS, else the schemas shipped with arcoforge)")
    stac_parser.set_defaults(run=_cmd_stac)

    demo_parser = sub.add_parser("demo", help="generate a small archive and bake it with an example recipe")
    demo_parser.add_argument("--workdir", default="arcoforge-demo", help="where inputs and stores go")
    demo_parser.add_argument("--days", type=int, default=90, help="number of daily files (default 90)")
    demo_parser.add_argument("--num-workers", type=int, default=1, help="local worker processes (default 1)")
    demo_parser.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(0 if args.quiet else args.verbose)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("arcoforge: interrupted", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception as error:  # one clear line instead of a traceback wall
        code, message = classify_failure(error)
        logger.debug("failure", exc_info=True)
        print(f"arcoforge: error: {message}", file=sys.stderr)
        return code


def console_main() -> None:
    """The ``arcoforge`` command: :func:`main`, then exit without tearing the interpreter down.

    A bake's local worker processes are started first, to import while this
    process does (:class:`~arcoforge.runtime.workers.WarmWorkers`). At the end every
    store, temporary folder and report is finished; the teardown of Beam's,
    xarray's and zarr's modules only added half a second to every command.
    """
    from .runtime.workers import WarmWorkers

    argv = sys.argv[1:]
    with WarmWorkers(_local_workers_wanted(argv)):  # before anything imports Beam here
        code = main(argv)
    from .runtime.process import exit_now

    exit_now(code)


def _local_workers_wanted(argv: Sequence[str]) -> int:
    """How many local worker processes a command line will run, to start them early (0: none).

    Only what the flags say: workers a ``--config`` file asks for are started
    when the runner needs them, as without warm workers.
    """
    try:  # quietly: main() prints --help, and reports usage errors
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit:
        return 0
    command = getattr(args, "run", None)
    if command is _cmd_bake:
        if (args.runner or "direct") != "direct" or (args.config and not args.runner):
            return 0  # another runner, or a config file that may choose one
    elif command is not _cmd_demo:
        return 0
    return args.num_workers if args.num_workers and args.num_workers > 1 else 0


if __name__ == "__main__":
    console_main()
