"""The public API: every exported name resolves, type checkers see the same names, import has no side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import arcoforge


def _type_checking_names() -> dict[str, str]:
    """The names imported under ``if TYPE_CHECKING:`` in arcoforge/__init__.py, with their module."""
    tree = ast.parse(Path(arcoforge.__file__).read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                names.update({alias.name: statement.module for alias in statement.names})
    return names


def test_every_public_name_resolves_from_the_module_named():
    for name in arcoforge.__all__:
        value = getattr(arcoforge, name)
        assert value.__module__.startswith("arcoforge."), name


def test_type_checkers_see_exactly_the_public_names():
    assert _type_checking_names() == dict(arcoforge._PUBLIC)


def test_the_documented_errors_and_io_classes_are_exported():
    assert {"InfrastructureError", "LeaseError", "InputCache", "RetryPolicy"} <= set(arcoforge.__all__)


def test_importing_arcoforge_changes_no_logging_configuration():
    code = ("import logging; before = (list(logging.getLogger().filters), list(logging.getLogger().handlers)); "
            "import arcoforge, arcoforge.transforms; "
            "after = (list(logging.getLogger().filters), list(logging.getLogger().handlers)); "
            "assert before == after, (before, after)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_package_of_the_source_tree_is_installed():
    """pyproject's package list names every package under src/arcoforge (a missed one is absent from wheels)."""
    import tomllib

    root = Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root / "src").parts) for p in (root / "src").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
