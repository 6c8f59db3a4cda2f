"""The command line of ``arcoforge``: every subcommand's arguments, and the conventions they share.

Its own module so that :mod:`arcoforge.cli` holds only what the commands do.
The conventions: ``--version``; ``-v`` (debug) and ``-q`` (warnings only)
accepted before and after the subcommand, INFO by default; no abbreviated
flags (``--target`` is not ``--target-root``); an error prints the usage of
the subcommand it is about. Each parser records its command's name
(``args.command``, ``args.stac_command``) and itself (``args.parser``), so
the caller reports leftover arguments with the right usage.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

DESCRIPTION = "Turn archives of NetCDF/HDF5 files into Zarr stores catalogued in STAC, on Apache Beam."
STAC_COMMANDS = ("validate", "write")


def _verbosity(parser: argparse.ArgumentParser, top: bool) -> None:
    """``-v``/``-q`` on ``parser``; under a subcommand they leave the top-level value unless given."""
    default = 0 if top else argparse.SUPPRESS
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="debug output (default: INFO messages and above)")
    group.add_argument("-q", "--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                       help="warnings and errors only")


def _subparser(sub: argparse._SubParsersAction, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", allow_abbrev=False,
                            **kwargs)
    _verbosity(parser, top=False)
    parser.set_defaults(parser=parser)
    return parser


def _bake_arguments(parser: argparse.ArgumentParser) -> None:
    from .runtime.context import OVERRIDABLE

    parser.add_argument("target", metavar="FEEDSTOCK", nargs="?",
                        help="a feedstock folder (holding meta.yaml) or a recipe .py file; with --repo, the "
                             "feedstock's folder inside the repository (default: its top)")
    parser.add_argument("--repo", metavar="URL", help="bake the feedstock of this git repository (any URL or "
                        "path `git clone` takes), checked out at --ref")
    parser.add_argument("--ref", help="the branch, tag or commit of --repo (default: its default branch)")
    parser.add_argument("--recipe-id", help="bake only this recipe (an id of meta.yaml, or an object of the file)")
    parser.add_argument("--prune", nargs="?", type=int, const=2, metavar="N",
                        help="a test bake: keep the first N inputs of each concat dimension (default N: 2)")
    parser.add_argument("--target-root", help="where stores are written (path or fsspec URL; "
                        "default: target.root of --config)")
    parser.add_argument("--cache-root", help="where inputs are cached (path or fsspec URL)")
    parser.add_argument("--runner", choices=["direct", "dask", "dataflow", "flink"],
                        help="where the pipeline runs (default: runner.name of --config, else direct)")
    parser.add_argument("--config", help="a TOML or YAML file: target and cache storage, runner options, "
                        "secrets named by environment variable (flags override it)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per line for each event, the last a summary")
    parser.add_argument("--num-workers", type=int, help="local worker processes, or dask LocalCluster "
                        "workers (default 1)")
    parser.add_argument("--override", action="append", metavar="NAME", choices=OVERRIDABLE,
                        help="let this run-time value win over the recipe's own (repeatable): "
                             + ", ".join(OVERRIDABLE))
    parser.add_argument("--max-mem", help="memory budget for array data of the whole bake, e.g. 2GB "
                        "for StoreToZarr steps that set no max_mem of their own (default 1GB)")
    parser.add_argument("--dask-address", help="dask scheduler address for --runner dask "
                        "(default: a LocalCluster of --num-workers processes)")
    parser.add_argument("--flink-master", help="Flink REST endpoint (host:8081) for --runner flink")
    parser.add_argument("--job-name", help="Dataflow job name (default: feedstock-recipe-time)")
    parser.add_argument("--dry-run", action="store_true", help="build and check the pipeline (Dataflow: "
                        "the job) without running or submitting it")
    parser.add_argument("--skip-bad-inputs", action="store_true",
                        help="go on without inputs that fail (their places get fill values; each one is "
                             "recorded in the store's attrs and the run summary)")
    parser.add_argument("--retries", type=int, help="attempts for a transient fetch failure (default 5)")
    parser.add_argument("--max-concurrency", type=int, help="remote inputs fetched at once, in all")
    parser.add_argument("--append", action="store_true",
                        help="append inputs the stores do not hold yet along their concat dimension")
    parser.add_argument("--break-lease", action="store_true",
                        help="take over a store another bake holds (only if that bake is dead)")
    parser.add_argument("--lease-ttl", type=float, metavar="SECONDS",
                        help="a store's lease is taken over when its heartbeat is this old (default 60)")
    parser.add_argument("--input-deadline", type=float, metavar="SECONDS",
                        help="total time one input may take to read, retries included (default 120)")
    stac = parser.add_argument_group("STAC")
    stac.add_argument("--no-stac", action="store_true", help="do not write STAC collections")
    stac.add_argument("--stac-schemas", help="folder of STAC JSON schemas laid out by URL, to validate what is "
                      "written (default: $ARCOFORGE_STAC_SCHEMAS, else the schemas shipped with arcoforge)")
    stac.add_argument("--license", help="the collections' licence: an SPDX id (CC-BY-4.0) or a URL "
                      "(over StoreToZarr(license=...) and meta.yaml's provenance.license)")
    stac.add_argument("--quicklook-variable", metavar="NAME", help="the variable the quicklook shows "
                      "(default: StoreToZarr(quicklook_variable=...), meta.yaml's, else the largest)")
    stac.add_argument("--public-url", metavar="URL", help="where a copy of the target root is published "
                      "(https://..., s3://...): asset hrefs point there (default: stac.public_url of --config; "
                      "without it they are relative to each collection)")


def _stac_arguments(sub: argparse._SubParsersAction) -> None:
    stac_parser = _subparser(sub, "stac", "write the STAC collection of a store, or validate STAC documents")
    stac_sub = stac_parser.add_subparsers(dest="stac_command", required=True, metavar="{validate,write}")
    validate = _subparser(stac_sub, "validate", "validate STAC documents offline against the packaged schemas")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="catalog.json or collection.json paths")
    validate.add_argument("--schemas", help="folder of STAC JSON schemas laid out by URL "
                          "(default: $ARCOFORGE_STAC_SCHEMAS, else the schemas shipped with arcoforge)")
    write = _subparser(stac_sub, "write", "write (and validate) the STAC collection of an existing store")
    write.add_argument("store", metavar="STORE_URL", help="the Zarr store (path or fsspec URL)")
    write.add_argument("--id", help="collection id (default: the store name without .zarr)")
    write.add_argument("--output-root", help="where stac/ goes (default: the store's parent folder)")
    write.add_argument("--meta", help="a feedstock meta.yaml for title, license, providers, keywords")
    write.add_argument("--license", help="an SPDX id or a URL (over --meta's)")
    write.add_argument("--quicklook-variable", metavar="NAME", help="the variable the quicklook shows")
    write.add_argument("--public-url", metavar="URL", help="where a copy of --output-root is published")
    write.add_argument("--schemas", help="folder of STAC JSON schemas laid out by URL")


def build_parser() -> argparse.ArgumentParser:
    """The ``arcoforge`` parser with every subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="arcoforge", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"arcoforge {__version__}")
    _verbosity(parser, top=True)
    parser.set_defaults(parser=parser, stac_command=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{bake,lint,expand-meta,stac,demo,history}")

    _bake_arguments(_subparser(sub, "bake", "bake a feedstock or a recipe file on a Beam runner"))

    lint = _subparser(sub, "lint", "check a feedstock's meta.yaml and recipes without running them")
    lint.add_argument("target", metavar="FEEDSTOCK", help="a feedstock folder or a recipe .py file")
    lint.add_argument("--recipe-id", help="check only this recipe")
    lint.add_argument("--json", action="store_true", help="one JSON object per problem, then a result")

    expand = _subparser(sub, "expand-meta", "list a feedstock's recipe ids and the stores each writes")
    expand.add_argument("target", metavar="FEEDSTOCK", help="a feedstock folder or a recipe .py file")
    expand.add_argument("--target-root", default="", help="where the stores would go (default: store names "
                        "relative to the target root)")
    expand.add_argument("--json", action="store_true", help="one JSON document, as a bot reads it")

    _stac_arguments(sub)

    demo = _subparser(sub, "demo", "generate a small archive and bake it with an example recipe")
    demo.add_argument("--workdir", default="arcoforge-demo", help="where inputs and stores go")
    demo.add_argument("--days", type=int, default=90, help="number of daily files (default 90)")
    demo.add_argument("--num-workers", type=int, default=1, help="local worker processes (default 1)")

    from .history import HELP, add_history_arguments  # (Icechunk stores; arcoforge.history runs it)

    add_history_arguments(_subparser(sub, "history", HELP))
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line; leftover arguments are an error in the usage of the subcommand they follow.

    ``arcoforge stac STORE_URL`` (before ``stac write`` existed) still means ``stac write STORE_URL``.
    """
    argv = list(argv)
    first = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    if first is not None and argv[first] == "stac":
        at = first + 1
        if at < len(argv) and argv[at] not in (*STAC_COMMANDS, "-h", "--help") and not argv[at].startswith("-"):
            argv.insert(at, "write")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def log_level(args: argparse.Namespace) -> int:
    """The level of arcoforge's logger: DEBUG with ``-v``, WARNING with ``-q``, else INFO."""
    import logging

    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", 0) else logging.INFO
