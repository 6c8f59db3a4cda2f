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
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bake import BakeReport, bake
from .errors import EXIT_CODES, EXIT_INFRASTRUCTURE, EXIT_INPUT, EXIT_OK, EXIT_RECIPE, EXIT_UNEXPECTED
from .runtime.context import OVERRIDABLE
from .runtime.events import Events

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


def _bake_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The bake arguments given on the command line (``None`` where not given)."""
    return dict(target_root=args.target_root, recipe_id=args.recipe_id, num_workers=args.num_workers,
                max_mem=args.max_mem, stac=False if args.no_stac else None, stac_schemas=args.stac_schemas,
                break_lease=args.break_lease, append=args.append, runner=args.runner, cache_root=args.cache_root,
                prune=args.prune, dry_run=args.dry_run,
                on_error="skip" if args.skip_bad_inputs else None, retries=args.retries,
                max_concurrency=args.max_concurrency, lease_ttl=args.lease_ttl,
                input_deadline=args.input_deadline, overrides=args.override)


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
        report = bake(args.target, config=config, **flags)
        for url in report.stores:
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
    from .demo import DEMO_METADATA, write_demo_archive

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
    stores = bake(str(recipe_file), str(workdir / "stores"), num_workers=args.num_workers,
                  metadata=DEMO_METADATA).stores
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
    bake_parser.add_argument("--override", action="append", metavar="NAME", choices=OVERRIDABLE,
                             help="let this run-time value win over the recipe's own (repeatable): "
                                  + ", ".join(OVERRIDABLE))
    bake_parser.add_argument("--max-mem", help="memory budget for array data of the whole bake, e.g. 2GB "
                             "for StoreToZarr steps that set no max_mem of their own (default 1GB)")
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
