"""The package's import graph, read with `ast` (imports inside functions count too): no cycles, nothing imports up."""

import ast
import graphlib
from pathlib import Path

import pytest

import digits

PACKAGE = Path(digits.__file__).parent
MODULES = {path.stem for path in PACKAGE.glob("*.py")}


def _absolute(node: ast.ImportFrom) -> str | None:
    """The dotted name a `from ... import` reads from; None for anything above the package."""
    if node.level == 0:
        return node.module
    if node.level == 1:
        return "digits" + (f".{node.module}" if node.module else "")
    return None


def _imported(tree: ast.Module) -> set[str]:
    """The package's modules that `tree` imports anywhere in it."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("digits.")}
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node) or ""
            if source == "digits":  # from . import x, y
                found |= {alias.name for alias in node.names}
            elif source.startswith("digits."):  # from .x import name
                found.add(source.split(".")[1])
    return found & MODULES


def import_graph() -> dict[str, set[str]]:
    """Module name -> the package's modules it imports."""
    graph = {}
    for module in MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
        graph[module] = _imported(tree) - {module}
    return graph


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert {"kaggle", "train", "report", "predict_image"} <= graph["cli"]
    assert "member" in graph["dispatch"]


def test_no_import_cycles():
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(reversed(err.args[1]))}")


def test_only_main_imports_the_cli():
    importers = {module for module, imported in import_graph().items() if "cli" in imported}
    assert importers == {"__main__"}


def test_the_run_folder_module_imports_nothing_above_it():
    assert import_graph()["runs"] <= {"atomic", "config", "errors"}
