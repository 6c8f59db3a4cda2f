"""The package's import graph: no module imports, however indirectly, a module that imports it.

The graph is read from the source with ``ast``, so it sees every import a
module can make, not only those one run happens to execute: module-level and
function-level imports, and the modules named as string literals to
:func:`arcoforge.import_quickly` or :func:`importlib.import_module` (a worker
preloading the transforms is a real dependency). Importing a module also
imports its parent packages; those edges count too, except a module's edges to
its own parents (Python imports them first whatever the module says). Imports
under ``if TYPE_CHECKING:`` never run and do not count: a package that names
its modules' exports there for type checkers, and imports them lazily, would
otherwise seem to import all of them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import arcoforge

SRC = Path(arcoforge.__file__).parent

# Cycles that exist today, each to be broken by a later step of issue 13. The test fails on any
# other cycle; when one of these is broken, delete its line.
KNOWN_CYCLES: set[frozenset[str]] = set()


def modules(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Every module under ``root``: dotted name -> (file, is a package)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _imported_names(tree: ast.AST, package: str, known: dict) -> list[str]:
    """The dotted names a module's source imports, relative imports resolved against ``package``."""
    names = []
    type_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(node.test) for statement in node.body for inner in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            # ``from package import name``: the submodule if there is one, else the package.
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Call):
            called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if called in ("import_quickly", "import_module"):
                names += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return names


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (their parent packages included)."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, (path, package) in known.items():
        here = name if package else name.rpartition(".")[0]
        for target in _imported_names(ast.parse(path.read_text()), here, known):
            while target and target not in known:  # arcoforge.x.attribute -> arcoforge.x
                target = target.rpartition(".")[0]
            while target and target != name and not name.startswith(target + "."):
                graph[name].add(target)  # the module, then the packages it is in
                target = target.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.add(frozenset(group))
    return found


def test_the_cycle_finder_sees_function_level_and_string_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("import typing\nif typing.TYPE_CHECKING:\n"
                                                 "    from . import b\n")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "b.py").write_text("from .. import import_quickly\nimport_quickly('pkg.a')\n")
    (package / "sub" / "c.py").write_text("import pkg.d\n")
    (package / "d.py").write_text("from pkg.sub.c import x\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b", "pkg.sub"}  # the module, and the package it is in
    assert graph["pkg.sub.b"] == {"pkg.a"}  # its own parents do not count
    assert graph["pkg.sub"] == set()  # nor imports for type checkers only
    assert cycles(graph) == {frozenset({"pkg.a", "pkg.sub.b"}), frozenset({"pkg.sub.c", "pkg.d"})}


def test_no_import_cycles_beyond_those_known():
    found = cycles(import_graph())
    assert KNOWN_CYCLES <= found, f"broken, so delete from KNOWN_CYCLES: {KNOWN_CYCLES - found}"
    new = found - KNOWN_CYCLES
    assert not new, "import cycles: " + "; ".join(" <-> ".join(sorted(group)) for group in new)


def test_workers_and_runners_no_longer_import_each_other():
    graph = import_graph()
    assert "arcoforge.runtime.runners" not in graph["arcoforge.runtime.workers"]
    assert "arcoforge.runtime.workers" in graph["arcoforge.runtime.runners"]


def test_the_worker_entry_point_and_the_runtime_package_import_no_heavy_library():
    # The command starts its warm workers before it imports Beam, and a worker re-executes
    # itself with its tunables before importing numpy.
    code = ("import sys, arcoforge.runtime, arcoforge.runtime.workers, arcoforge.runtime.process; "
            "heavy = [m for m in ('apache_beam', 'numpy', 'xarray', 'zarr') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# The layers, bottom first: a module imports only from its own layer and those below it.
# docs/architecture.md describes the same table. Packages are matched by their longest prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("errors", "names", "faults", "scratch", "patterns", "documents", "packing", "features",
                     "compat", "types", "storage", "packed_strings", "compressed_pickle")),  # compat: pangeo-forge's types, targets, alias (issue 17)
    ("pure model", ("schema", "schema_parts", "schema_pool", "input_checks", "zarr_encoding", "chunking", "rechunk",
                    "multistage", "store_plan", "store_template", "core.options", "compat.xarray_zarr_steps")),
    ("I/O", ("io", "openers", "hdf5_chunks")),
    ("process services", ("runtime", "runtime.context", "runtime.injection", "runtime.progress", "runtime.events",
                          "runtime.memory", "runtime.process")),
    ("model over I/O", ("append", "append_txn", "skipping")),
    ("STAC", ("stac",)),
    ("bake core", ("core", "core.bake")),
    ("Beam shell", ("beam", "compat.concurrency", "compat.xarray_zarr_beam")),
    ("public API", ("transforms",)),
    ("runners", ("runtime.runners", "runtime.workers", "runtime.dask_runner", "runtime.pipeline_options")),
    ("service", ("config", "feedstock", "feedstock_meta", "lint", "bake", "demo", "history", "cli_args", "cli",
                 "compat.xarray_zarr", "compat.hdf_reference", "compat.legacy_recipes", "recipes",
                 "examples")),  # the example recipes (recipes/ in the repository) as installed; `demo` runs one
]
# Imports that go up a layer today, each with the reason it has not moved yet.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest prefix naming ``module`` (None for the top package)."""
    best: tuple[int, int] | None = None
    name = module.removeprefix("arcoforge.")
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (number, len(prefix))
    return None if module == "arcoforge" else (best[0] if best else None)


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = import_graph()
    assert [m for m in graph if m != "arcoforge" and layer_of(m) is None] == []
    upward = {(a, b) for a, targets in graph.items() for b in targets
              if b != "arcoforge" and layer_of(a) is not None and layer_of(b) > layer_of(a)}
    assert KNOWN_UPWARD <= upward, f"fixed, so delete from KNOWN_UPWARD: {KNOWN_UPWARD - upward}"
    assert upward - KNOWN_UPWARD == set(), "imports that go up a layer: " + ", ".join(
        f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})" for a, b in sorted(upward - KNOWN_UPWARD))
