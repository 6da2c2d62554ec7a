"""The package's rooms: each module small enough to hold one idea, imports without cycles, and
scoring a checkpoint without the training loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from convbench.provenance import PACKAGE, PACKAGE_DIR

MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, at module level or inside functions (a lazy import
    hides a cycle, it does not remove it), but not under ``if TYPE_CHECKING``, which never runs."""
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                walk(child)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] == PACKAGE:
                found.add(name)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(ast.parse(path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_500_lines(name: str) -> None:
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it along its ideas"


def test_no_import_cycles() -> None:
    found = modules()
    graph = {name: imports(path, set(found)) - {name} for name, path in found.items()}
    # a package imports its own modules; a module importing its parent package is not a cycle
    graph = {name: {dep for dep in deps if not name.startswith(dep + ".")} for name, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    """It sees imports at module level and inside functions, and skips TYPE_CHECKING-only ones."""
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text(f"from {PACKAGE}.b import x\n")
    b.write_text(f"def later():\n    import {PACKAGE}.a\n")
    c.write_text(f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from {PACKAGE}.a import y\n")
    known = {f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c"}
    assert imports(a, known) == {f"{PACKAGE}.b"}
    assert imports(b, known) == {f"{PACKAGE}.a"}
    assert imports(c, known) == set()


def test_evaluation_imports_no_training_code() -> None:
    """Scoring a checkpoint needs its format, the batch transform and inference, not the loop."""
    imported = {path.relative_to(PACKAGE_DIR).as_posix() for path in module_closure("convbench.evaluate")}
    assert "checkpoint.py" in imported and "inference.py" in imported
    assert not {"train.py", "train_job.py", "run.py"} & imported


def module_closure(module: str) -> frozenset[Path]:
    """The package files importing ``module`` runs, lazy imports included (provenance's reading)."""
    from convbench.provenance import _closure

    return _closure(module)
