"""The install is honest: every third-party module the project imports is a declared dependency, and every
declared dependency is imported (by the code, not the tests). Read from pyproject.toml and the code's own import
statements (all of them, including the lazy ones inside functions)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "trainables", "search_spaces")
# imported only where it exists, never needed to install or run the study
OPTIONAL_IMPORTS = {"pynvml": "GPU hosts only (nvidia-ml-py): study.bench gpu samples utilisation through NVML"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in project["dependencies"]}


def imported_modules() -> dict[str, str]:
    """Top-level third-party module -> one file importing it."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES and top != "__future__":
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_import_is_a_declared_dependency():
    distributions = packages_distributions()
    declared = declared_dependencies()
    undeclared = {}
    for module, where in imported_modules().items():
        if module in OPTIONAL_IMPORTS:
            continue
        names = {_name(d) for d in distributions.get(module, [])}
        if not names & declared:
            undeclared[module] = (where, sorted(names))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_dependency_is_imported():
    distributions = packages_distributions()
    imported = {_name(d) for module in imported_modules() for d in distributions.get(module, [])}
    unused = declared_dependencies() - imported
    assert not unused, f"declared in pyproject.toml, never imported by {', '.join(PACKAGES)}: {sorted(unused)}"
