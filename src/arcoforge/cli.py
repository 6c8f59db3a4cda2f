"""The ``arcoforge`` command: lint and bake feedstocks and recipes, and a demo that needs nothing but this package.

Exit codes (for bots): 0 success; 2 the recipe, feedstock, config or command
line is wrong (``lint`` found an error); 3 an input is bad (unreadable, or
inconsistent with the others); 4 the infrastructure failed (storage, workers,
the cluster); 1 anything unexpected. ``bake --json`` prints one JSON object per
line for each event, the last one ``{"event": "result", ...}``.

Commands: ``bake`` (a feedstock folder, a recipe file, or ``--repo URL --ref REF``),
``lint``, ``expand-meta`` (recipe ids and their stores, ``--json`` for bots),
``stac write`` / ``stac validate``, ``demo``, ``history`` (an Icechunk store's snapshots). The arguments and the conventions
they share (``--version``, ``-v``/``-q`` anywhere, no abbreviations) are
built in :mod:`arcoforge.cli_args`.
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
from .history import run_history
from .errors import EXIT_CODES, EXIT_INFRASTRUCTURE, EXIT_INPUT, EXIT_OK, EXIT_RECIPE, EXIT_UNEXPECTED
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


def _setup_logging(level: int) -> None:
    """arcoforge's messages at ``level`` (INFO by default), other libraries' warnings only."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("arcoforge").setLevel(level)
    from . import import_quickly

    import_quickly("arcoforge.runtime.runners", "arcoforge.transforms")  # what every command goes on to use
    from .runtime.runners import quiet_beam_logging

    quiet_beam_logging(debug=level <= logging.DEBUG)


def _bake_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The bake arguments given on the command line (``None`` where not given)."""
    return dict(target_root=args.target_root, recipe_id=args.recipe_id, num_workers=args.num_workers,
                max_mem=args.max_mem, stac=False if args.no_stac else None, stac_schemas=args.stac_schemas,
                break_lease=args.break_lease, append=args.append, runner=args.runner, cache_root=args.cache_root,
                prune=args.prune, dry_run=args.dry_run,
                on_error="skip" if args.skip_bad_inputs else None, retries=args.retries,
                max_concurrency=args.max_concurrency, lease_ttl=args.lease_ttl,
                input_deadline=args.input_deadline, overrides=args.override, license=args.license,
                quicklook_variable=args.quicklook_variable, public_url=args.public_url)


def _cmd_bake(args: argparse.Namespace) -> int:
    if args.repo:
        from .feedstock_meta import checkout_feedstock

        with checkout_feedstock(args.repo, args.ref, args.target) as folder:
            return _bake_target(args, str(folder))
    if args.ref:
        args.parser.error("--ref needs --repo")
    if not args.target:
        args.parser.error("the following arguments are required: FEEDSTOCK (or --repo URL)")
    return _bake_target(args, args.target)


def _bake_target(args: argparse.Namespace, target: str) -> int:
    from .config import BakeConfig, load_config

    config = load_config(args.config) if args.config else BakeConfig()
    config = config.with_overrides(
        dask={"address": args.dask_address} if args.dask_address else None,
        flink={"flink_master": args.flink_master} if args.flink_master else None,
        dataflow={"job_name": args.job_name} if args.job_name else None,
    )
    flags = _bake_flags(args)
    if not args.json:
        report = bake(target, config=config, **flags)
        for url in report.stores:
            print(f"wrote {url}")
        return EXIT_OK
    # --json: stdout carries only the events; anything else printed goes to stderr.
    stream = sys.stdout
    events = Events(stream)
    report = BakeReport(target)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            bake(target, config=config, events=events, report=report, **flags)
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


def _cmd_stac_validate(args: argparse.Namespace) -> int:
    from .stac import validate_stac_path

    errors = []
    for path in args.paths:
        found = validate_stac_path(path, args.schemas)  # offline; the packaged schemas by default
        errors.extend(found)
        if not found:
            print(f"valid: {path}")
    for error in errors:
        print(f"invalid: {error}", file=sys.stderr)
    return EXIT_OK if not errors else EXIT_INPUT


def _cmd_stac_write(args: argparse.Namespace) -> int:
    from . import stac

    url = args.store.rstrip("/")
    output_root = args.output_root or (url.rsplit("/", 1)[0] if "/" in url else ".")
    metadata = stac.read_meta_yaml(args.meta) if args.meta else None
    path = stac.write_store_collection(url, output_root, collection_id=args.id, metadata=metadata,
                                       schemas_dir=args.schemas, license=args.license,
                                       quicklook_variable=args.quicklook_variable, public_url=args.public_url)
    print(f"wrote STAC collection {path}")
    return EXIT_OK


def _cmd_expand_meta(args: argparse.Namespace) -> int:
    from .feedstock_meta import expand_meta

    expanded = expand_meta(args.target, args.target_root)
    if args.json:
        print(json.dumps(expanded, indent=2, default=str))
        return EXIT_OK
    for recipe in expanded["recipes"]:
        stores = ", ".join(store["url"] for store in recipe["stores"]) or "no store"
        print(f"{recipe['id']}: {stores}")
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


COMMANDS = {"bake": _cmd_bake, "lint": _cmd_lint, "expand-meta": _cmd_expand_meta, "demo": _cmd_demo,
            "stac validate": _cmd_stac_validate, "stac write": _cmd_stac_write, "history": run_history}


def build_parser() -> argparse.ArgumentParser:
    """The ``arcoforge`` parser (built in :mod:`arcoforge.cli_args`)."""
    from .cli_args import build_parser as build

    return build()


def main(argv: Sequence[str] | None = None) -> int:
    from .cli_args import log_level, parse

    args = parse(sys.argv[1:] if argv is None else argv)
    _setup_logging(log_level(args))
    try:
        return _command(args)(args)
    except KeyboardInterrupt:
        print("arcoforge: interrupted", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception as error:  # one clear line instead of a traceback wall
        code, message = classify_failure(error)
        logger.debug("failure", exc_info=True)
        print(f"arcoforge: error: {message}", file=sys.stderr)
        return code


def _command(args: argparse.Namespace):
    """The function of the (sub)command ``args`` names."""
    return COMMANDS[f"{args.command} {args.stac_command}" if args.stac_command else args.command]


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
    from .cli_args import parse

    try:  # quietly: main() prints --help, and reports usage errors
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = parse(argv)
    except SystemExit:
        return 0
    command = _command(args)
    if command is _cmd_bake:
        if (args.runner or "direct") != "direct" or (args.config and not args.runner):
            return 0  # another runner, or a config file that may choose one
    elif command is not _cmd_demo:
        return 0
    return args.num_workers if args.num_workers and args.num_workers > 1 else 0


if __name__ == "__main__":
    console_main()
