"""The import rules of DESIGN.md, as import-linter contracts (pyproject.toml [tool.importlinter]):
engine imports no UI (cifar_tui, textual, typer, rich); the supervisor and the store side
import no Textual and no torch. Checked in-process with import-linter (static: imports inside
functions count too). That `cifar_tui.cli` imports no torch at start-up is a runtime fact,
checked in tests/integration/test_startup_imports.py."""
from __future__ import annotations

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
