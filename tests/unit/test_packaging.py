"""The wheel ships every package: a sub-package missing from pyproject.toml's explicit list
would import from a checkout but not from a non-editable install."""
from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_package_directory_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for top in ("engine", "cifar_tui")
               for p in (ROOT / top).rglob("__init__.py")}
    missing = on_disk - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert "cifar_tui.configs" in listed  # the configs ship inside the wheel
