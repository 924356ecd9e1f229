"""`cifar-tui plot` and `export` on the command line, in process (typer's CliRunner): plot without
--out writes curves.png in the run's directory and prints the path, its usage names RUN_ID; an
--out that cannot be written is one line and exit 2, before any model is loaded."""
from __future__ import annotations

import os

from typer.testing import CliRunner

from cifar_tui.cli import app

from tests.support.tui import T0, fake_run

runner = CliRunner()


def invoke(tmp_path, *args: str):
    return runner.invoke(app, ["--home", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"), *args],
                         env={"COLUMNS": "200"})


def test_plot_without_out_writes_into_the_run_directory(tmp_path):
    home = tmp_path / "runs"
    one = fake_run(home, "resnet18_baseline", "0a0a", epochs=3)
    two = fake_run(home, "resnet18_baseline", "0b0b", epochs=3, t0=T0 + 60)
    res = invoke(tmp_path, "plot", one[:-2])  # a unique prefix
    assert res.exit_code == 0, res.output
    png = home / one / "curves.png"
    assert res.stdout.strip() == f"wrote {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = invoke(tmp_path, "plot", one, two)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"wrote {home / one / 'curves-vs-0b0b.png'}"
    assert (home / one / "curves-vs-0b0b.png").stat().st_size > 0


def test_plot_usage_names_its_argument(tmp_path):
    res = invoke(tmp_path, "plot", "--help")
    assert "RUN_ID..." in res.stdout and "{run_ids}" not in res.stdout
    res = invoke(tmp_path, "plot")
    assert res.exit_code == 2 and "RUN_ID..." in res.output and "{run_ids}" not in res.output


def test_export_into_a_directory_that_cannot_be_written_is_one_line(tmp_path):
    home = tmp_path / "runs"
    run_id = fake_run(home, "resnet18_baseline", "0c0c", epochs=2)  # no checkpoint: the --out check comes first
    target = "/proc/x.pt" if os.path.isdir("/proc") else str(tmp_path / "nowhere" / "x.pt")
    res = invoke(tmp_path, "export", run_id, "--format", "torchscript", "--out", target)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {target}: "), res.output
    assert "Traceback" not in res.output
