"""The import rules of DESIGN.md, as import-linter contracts (pyproject.toml [tool.importlinter]):
engine imports no UI (cifar_tui, textual, typer, rich); the supervisor and the store side
import no Textual and no torch. Checked in-process with import-linter (static: imports inside
functions count too). That `cifar_tui.cli` imports no torch at start-up is a runtime fact,
checked in tests/integration/test_startup_imports.py. No module imports itself through others
(an import cycle), lazy imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

import importlinter.api  # noqa: F401 - configures import-linter (readers, graph builder)
from importlinter.application import use_cases

from tests.conftest import ROOT


def test_the_import_contracts_are_kept(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))  # the checkout's packages, not an installed copy
    passed = use_cases.lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    report = capsys.readouterr().out
    assert passed, report
    assert "Contracts: 2 kept, 0 broken." in report


# ---------------------------------------------------------------- no import cycles


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import statement, in functions too (a lazy import is still a dependency), except
    those under `if TYPE_CHECKING:` (annotations only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        yield from _imports(node)


def import_graph(root: Path, packages=("engine", "cifar_tui")) -> dict[str, set[str]]:
    """module -> the modules of `packages` it imports (`from pkg import mod` counts as pkg.mod)."""
    files = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            files[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in files.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in candidates:
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_of_engine_or_cifar_tui_imports_itself_through_others():
    graph = import_graph(ROOT)
    assert {"engine.record.store", "cifar_tui.supervisor", "cifar_tui.commands.runs"} <= set(graph)
    assert "engine.record.status" in graph["engine.record.store"]  # the walk sees the imports it must see
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_lazy_cycle_and_ignores_type_checking_imports(tmp_path):
    pkg = tmp_path / "engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\nx = 1\n")
    (tmp_path / "cifar_tui").mkdir()
    assert find_cycle(import_graph(tmp_path)) is None
    (pkg / "b.py").write_text("def later():\n    from engine import a\n")  # a lazy import closes the loop
    assert find_cycle(import_graph(tmp_path)) == ["engine.a", "engine.b", "engine.a"]
