"""`cifar_tui` imports torch only inside the commands that train (DESIGN.md): importing the CLI,
`--help` and the commands that only read the workspace load no torch, no optuna, no Textual.
Checked in fresh interpreters (sys.modules after the command); the static import rules are
tests/unit/test_import_rules.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "optuna", "textual", "timm", "matplotlib")
# the config models (engine.config): what reads or runs a config loads them; the bare CLI and --help do not
CONFIG_MODELS = "pydantic"

PROBE = """
import json, sys
argv = json.loads(sys.argv[1])
if argv is None:
    import cifar_tui.cli
else:
    from cifar_tui.cli import main
    sys.argv = ["cifar-tui", *argv]
    try:
        main()
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in %r if m in sys.modules)), file=sys.stderr)
""" % ((*HEAVY, CONFIG_MODELS),)


@pytest.mark.parametrize("argv", [None, ["--help"], ["runs"], ["runs", "--json"], ["leaderboard"], ["list"],
                                  ["show", "resnet18_baseline"], ["stop", "nosuchrun"], ["runs", "rm", "x", "--yes"],
                                  ["runs", "prune", "--status", "failed", "--yes"]])
def test_the_cli_starts_without_heavy_imports(workspace, argv):
    env = {**workspace["env"], "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], env=env, cwd=workspace["tmp"],
                         capture_output=True, text=True, timeout=120)
    loaded = json.loads(res.stderr.strip().splitlines()[-1])
    allowed = [] if argv in (None, ["--help"]) else [CONFIG_MODELS]
    assert [m for m in loaded if m not in allowed] == [], f"{argv}: imported {loaded}"
