"""The ``arcoforge`` command: bake recipes, and a demo that needs nothing but this package.

Exit codes (for bots): 0 success; 2 the recipe or the command line is wrong;
3 an input is bad (unreadable, or inconsistent with the others); 4 the
infrastructure failed (storage, workers); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_RECIPE = 2
EXIT_INPUT = 3
EXIT_INFRASTRUCTURE = 4

logger = logging.getLogger("arcoforge")

# How a worker's traceback names our errors, when a runner hands them back as text.
_ERROR_LINE = re.compile(r"arcoforge\.errors\.(RecipeError|InputError|SchemaError): (.+?)(?: \[while running|$)", re.M)


def classify_failure(error: BaseException) -> tuple[int, str]:
    """The exit code and one clear message for a failed bake."""
    from .errors import InputError, RecipeError

    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RecipeError):
            return EXIT_RECIPE, _strip_beam_context(str(current))
        if isinstance(current, InputError):
            return EXIT_INPUT, _strip_beam_context(str(current))
        current = current.__cause__ or current.__context__
    matches = _ERROR_LINE.findall(str(error))
    if matches:
        kind, message = matches[-1]
        return (EXIT_RECIPE if kind == "RecipeError" else EXIT_INPUT), message.strip()
    if isinstance(error, OSError):
        return EXIT_INFRASTRUCTURE, f"{type(error).__name__}: {error}"
    return EXIT_UNEXPECTED, f"{type(error).__name__}: {_strip_beam_context(str(error))}"


def _strip_beam_context(message: str) -> str:
    return re.sub(r" \[while running '.*?'\]", "", message).strip()


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("arcoforge").setLevel(level)
    from .runners import quiet_beam_logging

    quiet_beam_logging(debug=verbose > 1)


def bake(
    recipe_file: str,
    target_root: str,
    recipe_id: str | None = None,
    num_workers: int = 1,
    max_mem: str | None = None,
    stac: bool = True,
    stac_schemas: str | None = None,
    metadata: dict | None = None,
) -> list[str]:
    """Run the recipe(s) of ``recipe_file`` on the embedded runner; returns the store URLs.

    Progress is shown while it runs (a bar on a terminal, log lines otherwise),
    and a summary logged at the end of each recipe. Each store then gets a STAC
    collection under ``<target_root>/stac`` (validated when a schema folder is known).
    """
    import apache_beam as beam

    from .feedstock import load_recipe_module, recipes_in_module
    from .progress import ProgressReporter
    from .runners import local_pipeline_options, local_runner, use_runtime_defaults

    from .stac import provenance, write_store_collection

    module = load_recipe_module(recipe_file)
    recipes = recipes_in_module(module, recipe_id)
    pattern = getattr(module, "pattern", None)
    stores: list[str] = []
    for name, recipe in recipes.items():
        logger.info("baking recipe %r from %s with %d worker(s)", name, recipe_file, num_workers)
        known = provenance(recipe_file=recipe_file, recipe_id=name,
                           pattern=pattern if hasattr(pattern, "sha256") else None)
        known = {k: known[k] for k in ("recipe_id", "recipe_sha256", "pattern_sha256") if k in known}
        with tempfile.TemporaryDirectory(prefix="arcoforge-progress-") as progress_dir, use_runtime_defaults(
            target_root=target_root, num_workers=num_workers, max_mem=max_mem, progress_dir=progress_dir,
            provenance=known,
        ):
            pipeline = beam.Pipeline(runner=local_runner(num_workers), options=local_pipeline_options(num_workers))
            _ = pipeline | recipe
            with ProgressReporter(progress_dir) as reporter:
                pipeline.run().wait_until_finish()
            summary = reporter.progress.summary()
        baked = _stores_of(recipe, target_root)
        stores.extend(baked)
        if stac:
            for url in baked:
                collection_id = name if (len(recipes) > 1 or name != "recipe") and len(baked) == 1 else None
                path = write_store_collection(url, target_root, collection_id=collection_id, metadata=metadata,
                                              provenance=known, schemas_dir=stac_schemas)
                print(f"wrote STAC collection {path}")
        logger.info(
            "recipe %r done: %d inputs, %d write tasks, %.0f MiB in %.1f s (%.1f MiB/s)",
            name, summary["inputs"], summary["write_tasks"], summary["bytes_written"] / 2**20,
            summary["seconds"], summary["mib_per_second"],
        )
    return stores


def _stores_of(recipe: object, target_root: str) -> list[str]:
    """Store URLs a recipe wrote, found from its StoreToZarr parts."""
    from .transforms import StoreToZarr
    from .writers import store_url

    parts = getattr(recipe, "_parts", [recipe])
    found = []
    for part in parts:
        if isinstance(part, StoreToZarr):
            found.append(store_url(part.target_root or target_root, part.store_name))
        elif hasattr(part, "_parts"):
            found.extend(_stores_of(part, target_root))
    return found


def _cmd_bake(args: argparse.Namespace) -> int:
    stores = bake(args.recipe_file, args.target_root, args.recipe_id, args.num_workers, args.max_mem,
                  stac=not args.no_stac, stac_schemas=args.stac_schemas)
    for url in stores:
        print(f"wrote {url}")
    return EXIT_OK


def _cmd_stac(args: argparse.Namespace) -> int:
    from . import stac
    from .errors import RecipeError

    if args.target[0] == "validate":
        paths = args.target[1:]
        if not paths:
            raise RecipeError("arcoforge stac validate needs at least one document path")
        schemas = args.schemas or stac.default_schemas_dir()
        if not schemas:
            raise RecipeError(f"no STAC schema folder: pass --schemas DIR or set {stac.SCHEMAS_ENV}")
        errors = []
        for path in paths:
            document = stac._read_json(path) or {}
            found = (stac.validate_stac_tree(path, schemas) if document.get("type") == "Catalog"
                     else stac.validate_stac_file(path, schemas))
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

    bake_parser = sub.add_parser("bake", help="run a recipe file on the embedded Beam runner")
    bake_parser.add_argument("recipe_file", help="path to a recipe.py")
    bake_parser.add_argument("--target-root", required=True, help="where stores are written (path or fsspec URL)")
    bake_parser.add_argument("--recipe-id", help="which recipe object of the file to run (default: `recipe`)")
    bake_parser.add_argument("--num-workers", type=int, default=1, help="local worker processes (default 1)")
    bake_parser.add_argument("--max-mem", help="memory budget for array data of the whole bake, e.g. 2GB "
                             "(default: each StoreToZarr's max_mem, 1GB)")
    bake_parser.add_argument("--no-stac", action="store_true", help="do not write STAC collections")
    bake_parser.add_argument("--stac-schemas", help="folder of STAC JSON schemas laid out by URL, to validate "
                             "what is written (default: $ARCOFORGE_STAC_SCHEMAS)")
    bake_parser.set_defaults(run=_cmd_bake)

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
                             "(default: $ARCOFORGE_STAC_SCHEMAS)")
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


if __name__ == "__main__":
    sys.exit(main())
