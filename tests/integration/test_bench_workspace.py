"""`cifar-tui bench --workspace` on tiny sizes (a fixture run as the template): every figure is
measured with the real CLI and the real TUI. No timing assertions: the goals live in
docs/BENCHMARKS.md."""
from __future__ import annotations

import json
import math
import subprocess

from rich.console import Console

from cifar_tui.bench.workspace import EXTRA, GOALS, WorkspacePlan, bench_workspace, render_workspace

from tests.conftest import CLI
from tests.support.tui import fake_run


def test_every_figure_measured_for_each_size(tmp_path):
    (tmp_path / "template").mkdir()
    template = tmp_path / "template" / fake_run(tmp_path / "template", "resnet18_baseline", "0001")
    results = bench_workspace([0, 3], template=template, progress=False, plan=WorkspacePlan.tiny())
    json.dumps(results)  # --json prints it as it is
    assert list(results["sizes"]) == ["0", "3"] and results["template"] == template.name
    for n, figures in results["sizes"].items():
        assert figures["runs"] == int(n)
        for key in [k for k, *_ in GOALS] + [k for k, *_ in EXTRA]:
            value = figures[key]
            assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (n, key, value)
        assert figures["tui_first_screen_s"] > 0 and figures["runs_cmd_s"] > 0 and figures["rebuild_s"] > 0
    console = Console(record=True, width=200)
    render_workspace(results, console)
    text = console.export_text()
    assert "3 runs" in text and "goal (3 runs)" in text and "store rebuild" in text


def test_bad_arguments_are_one_line(tmp_path):
    for args, expected in ((["--workspace", "-1"], "--workspace"), (["--workspace", "5", "--template", str(tmp_path)],
                                                                   "events.jsonl")):
        proc = subprocess.run([*CLI, "bench", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr
