"""cifar_tui.plot.plot_runs: PNG curves from the store (or events.jsonl), one-line errors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cifar_tui.plot import plot_runs
from engine.config import ConfigError
from engine.store import Store

from tests.support.tui import fake_workspace


def test_plot_writes_png(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    out = plot_runs(ws, [ids["c_base"], ids["s_stop"]], tmp_path / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_falls_back_to_events_without_store_rows(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    store = Store(ws.home)
    store.delete_run(ids["c_pre"])  # the run dir is the durable record
    store.close()
    out = plot_runs(ws, [ids["c_pre"]], tmp_path / "one.svg")
    assert out.read_text().lstrip().startswith("<?xml")


def test_plot_errors_are_one_line_config_errors(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    with pytest.raises(ConfigError, match="not found") as exc:
        plot_runs(ws, ["resnet18_baseline-20990101T000000Z-ffff"], tmp_path / "x.png")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError):
        plot_runs(ws, ["../etc"], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="does not exist"):
        plot_runs(ws, [ids["c_base"]], tmp_path / "missing" / "x.png")
    with pytest.raises(ConfigError, match="image file"):
        plot_runs(ws, [ids["c_base"]], tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="--out"):  # not writable even for root
        plot_runs(ws, [ids["c_base"]], Path("/proc/cifar_tui_plot.png"))
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConfigError, match="not writable"):
            plot_runs(ws, [ids["c_base"]], ro / "x.png")
