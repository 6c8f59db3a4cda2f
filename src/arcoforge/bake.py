"""Baking feedstocks and recipe files: the library-level service behind ``arcoforge bake``.

:func:`bake` loads the recipes of a feedstock folder or a recipe file, builds
each one's pipeline, takes the lease of every store it writes (kept by a
heartbeat while the run goes), runs it on the chosen runner with the run-time
values of a :class:`~arcoforge.runtime.context.BakeContext`, follows its
progress, and writes a STAC collection per store (unless the recipe writes its
own with ``WriteSTAC``). It returns a :class:`BakeReport`, recipe by recipe; what
happens on the way goes to :class:`~arcoforge.runtime.events.Events`. The
command (:mod:`arcoforge.cli`) only parses arguments, prints and picks exit
codes::

    from arcoforge.bake import bake
    report = bake("feedstock/", target_root="/data/out")
    report.stores  # the store URLs written
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runtime.events import Events, JsonProgress

logger = logging.getLogger(__name__)


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
    overrides: tuple[str, ...] | None = None,
    license: str | None = None,
    quicklook_variable: str | None = None,
    public_url: str | None = None,
) -> BakeReport:
    """Bake the recipe(s) of a feedstock folder or a recipe file; returns what each recipe did.

    Arguments given here override the :class:`~arcoforge.config.BakeConfig`
    ``config`` (from ``--config``). ``prune`` keeps the first N inputs of each
    concat dimension (a CI test bake). Progress is shown while a local run goes
    (a bar on a terminal, log lines otherwise, JSON events with ``events``), a
    summary logged at the end of each recipe, and each store gets a STAC
    collection under ``<target_root>/stac``, validated offline.
    ``report`` collects what each recipe did, also when a later one fails
    (it is the report returned); its ``stores`` are the URLs written.
    A recipe's own values (``max_mem``, ``target_root``...) win over these
    unless ``overrides`` names them.
    ``license`` and ``quicklook_variable`` go into every collection (over the
    recipe's StoreToZarr fields and meta.yaml); ``public_url`` is where a copy
    of the target root is published (asset hrefs point there; without it they
    are relative to each collection). A collection's id is its store's name.
    """
    from .config import BakeConfig

    config = (config or BakeConfig()).with_overrides(
        target_root=target_root, runner=runner, num_workers=num_workers, max_mem=max_mem, stac=stac,
        stac_schemas=stac_schemas, cache_root=cache_root, overrides=tuple(overrides) if overrides else None,
        stac_public_url=public_url,
    ).resolved()
    events = events or Events()
    report = report if report is not None else BakeReport(str(recipe_file))
    from .scratch import remove_stale

    remove_stale()  # what bakes killed on this host left in the temporary folder (progress folders, copies)
    feedstock, recipes = load_recipes(str(recipe_file), recipe_id)
    report.feedstock = feedstock.name if feedstock else None
    if feedstock is not None and metadata is None:
        metadata = feedstock.meta
    events.emit("bake_start", target=str(recipe_file), feedstock=report.feedstock, recipes=list(recipes),
                runner=config.runner, target_root=config.target_root, prune=prune, dry_run=dry_run)
    stac_fields = {"license": license, "quicklook_variable": quicklook_variable}
    for ref in recipes.values():
        outcome = _bake_recipe(ref, config, events, prune=prune, dry_run=dry_run, metadata=metadata,
                               break_lease=break_lease, append=append, feedstock_name=report.feedstock,
                               stac_fields=stac_fields,
                               inputs={"on_error": on_error, "retries": retries, "max_concurrency": max_concurrency,
                                       "input_deadline": input_deadline},
                               lease_ttl=lease_ttl)
        report.recipes.append(outcome)
    return report


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
                 stac_fields: dict[str, Any], inputs: dict[str, Any] | None = None,
                 lease_ttl: float | None = None) -> RecipeOutcome:
    """Build, (prune,) run and catalogue one recipe."""
    import datetime as dt

    import apache_beam as beam

    from .beam.create import compact_chain, compact_creates
    from .errors import RecipeError
    from .feedstock import prune_pipeline, pruned_recipe
    from .runtime.pipeline_options import dataflow_job_name
    from .runtime.progress import ProgressReporter
    from .runtime.context import use_runtime_defaults
    from .runtime.injection import inject, installed_injection_specs
    from .runtime.runners import choose_runner, discard_unrun, own_tempdir
    from .stac import provenance, write_store_collection
    from .names import safe_relative_path
    from .scratch import scratch_folder
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
        progress_dir = choice.progress_address or (
            stack.enter_context(scratch_folder("progress")) if choice.local else None)
        context = stack.enter_context(use_runtime_defaults(**_runtime_values(
            target_root=config.target_root, storage_options=config.target_storage_options or None,
            num_workers=choice.num_workers, max_mem=config.max_mem, progress_dir=progress_dir,
            provenance=known, owner=owner, break_lease=break_lease, cache_root=config.cache_root,
            lease_ttl=lease_ttl, overrides=frozenset(config.overrides),
            source_storage_options=config.source_storage_options or None, append=append,
            **{name: value for name, value in (inputs or {}).items() if value is not None},
        )))
        hooked = pruned_recipe(ref, prune) if prune else None
        try:
            pipeline = own_tempdir(beam.Pipeline(runner=choice.runner, options=choice.options))
        except ValueError as error:  # Beam's own check of the options (project id, locations...)
            raise RecipeError(f"{choice.name} options are not valid: {' '.join(str(error).split())}") from None
        stack.callback(discard_unrun, pipeline)  # run() removes its folder; a dry run or a failed build does not
        # Large Creates compact before they are applied (their expansion would encode every input).
        _ = pipeline | inject(compact_chain(hooked or ref.transform), context, installed_injection_specs())
        if prune and hooked is None:
            pruned = prune_pipeline(pipeline, prune, f"recipe {ref.id!r}")
            outcome.inputs_total = pruned.kept
        else:
            outcome.inputs_total = _pattern_inputs(pipeline)
        compact_creates(pipeline)  # after counting and pruning, which read the Creates
        outcome.stores = _stores_in(pipeline, config.target_root)
        if choice.name == "dataflow":
            from .runtime.pipeline_options import refuse_local_for_dataflow

            refuse_local_for_dataflow(outcome.stores, _pattern_urls(pipeline))
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
            reporter = JsonProgress(progress_dir, events, ref.id)
        else:
            reporter = ProgressReporter(progress_dir)
        try:
            # A dry run (Dataflow's: the job is built, not run) writes nothing, so it takes no lease.
            # Icechunk stores need no lease: their branch moves by compare-and-swap (see arcoforge.core.icechunk_bake).
            from .beam.icechunk import StoreToIcechunk

            leased = [url for url, step in store_steps(pipeline, config.target_root)
                      if not isinstance(step, StoreToIcechunk)]
            with _leases_kept([] if dry_run else leased, owner, config.target_storage_options or None, lease_ttl,
                              break_lease), reporter as progress:
                result = _run(pipeline, choice.name, config.flink)
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
        hints = _stac_hints(pipeline, config.target_root)
        for url in outcome.stores:
            fields = {**hints.get(url, {}), **{k: v for k, v in stac_fields.items() if v is not None}}
            path = write_store_collection(
                url, config.target_root or url.rstrip("/").rsplit("/", 1)[0], metadata=metadata,
                storage_options=config.target_storage_options or None, provenance=known,
                schemas_dir=config.stac_schemas, public_url=config.stac_public_url,
                reader_storage_options=config.stac_storage_options or None, **fields,
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
            try:
                lease.acquire(owner, ttl, break_lease)
            except OSError as error:  # the lease is the bake's first write: name the target, not the lease file
                raise _unwritable_target(url, error) from error
            leases.append(lease)
    except BaseException:
        for lease in leases:
            with contextlib.suppress(Exception):
                lease.release(owner)
        raise
    with LeaseKeeper(leases, owner, ttl):
        yield


def _unwritable_target(url: str, error: OSError) -> Exception:
    """The error of a target that cannot be written, naming the target as the user gave it."""
    from .errors import InfrastructureError
    from .io.redaction import public_url

    reason = error.strerror or type(error).__name__
    return InfrastructureError(f"cannot write the target {public_url(url)}: {reason} "
                               f"({type(error).__name__}; is the target root writable and a folder?)")


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


def _run(pipeline: Any, runner: str, flink: dict | None) -> Any:
    """Start the pipeline; Flink's job-server failures become classified errors with a hint."""
    try:
        return pipeline.run()
    except Exception as error:
        if runner == "flink":
            from .runtime.runners import flink_start_error

            classified = flink_start_error(dict(flink or {}), error)
            if classified is not None:
                raise classified from error
        raise


def _pattern_urls(pipeline: Any) -> list[str]:
    """The URLs of the ``(Index, url)`` inputs of the pipeline's ``beam.Create`` steps (compact ones too)."""
    import apache_beam as beam

    from .beam.create import CompactCreate
    from .feedstock import is_pattern_item
    from .lint import built_transforms

    return [str(value[1]) for t in built_transforms(pipeline) if type(t) in (beam.Create, CompactCreate)
            and t.values and all(map(is_pattern_item, t.values)) for value in t.values]


def _pattern_inputs(pipeline: Any) -> int | None:
    """How many ``(Index, url)`` inputs the pipeline's ``beam.Create`` steps hold (compact ones too), if any."""
    import apache_beam as beam

    from .beam.create import CompactCreate
    from .feedstock import is_pattern_item
    from .lint import built_transforms

    creates = [t for t in built_transforms(pipeline) if type(t) in (beam.Create, CompactCreate)
               and t.values and all(map(is_pattern_item, t.values))]
    return sum(len(t.values) for t in creates) if creates else None


def _writes_stac(pipeline: Any) -> bool:
    """Whether the recipe describes its stores in STAC itself (a WriteSTAC step)."""
    from .lint import built_transforms
    from .beam.stac import WriteSTAC

    return any(isinstance(transform, WriteSTAC) for transform in built_transforms(pipeline))


def store_steps(pipeline: Any, target_root: str | None) -> list[tuple[str, Any]]:
    """``(URL, StoreToZarr step)`` of every store a built pipeline writes, wherever the step sits.

    A step without its own target root writes under ``target_root``; one with
    neither is left out (its bake fails on it clearly).
    """
    from .lint import built_transforms
    from .beam.store import StoreToZarr
    from .runtime.context import is_unset
    from .store_plan import store_url

    found: dict[str, Any] = {}
    for transform in built_transforms(pipeline):
        if isinstance(transform, StoreToZarr):
            root = target_root if is_unset(transform.target_root) else transform.target_root
            if root:
                found.setdefault(store_url(str(root), transform.store_name), transform)
    return list(found.items())


def _stac_hints(pipeline: Any, target_root: str | None) -> dict[str, dict[str, Any]]:
    """``{store URL: {license, quicklook_variable}}`` as the recipe's StoreToZarr steps give them."""
    hints: dict[str, dict[str, Any]] = {}
    for url, step in store_steps(pipeline, target_root):
        given = {"license": step.license, "quicklook_variable": step.quicklook_variable}
        hints[url] = {k: v for k, v in given.items() if v is not None}
    return hints


def _stores_in(pipeline: Any, target_root: str | None) -> list[str]:
    """URLs of the stores a built pipeline writes, from its StoreToZarr steps wherever they sit."""
    return [url for url, _ in store_steps(pipeline, target_root)]
