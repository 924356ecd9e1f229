"""cifar_tui.plot.plot_runs: PNG curves from the store (or events.jsonl), one-line errors."""
from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest

from cifar_tui.plot import plot_runs
from engine.config import ConfigError
from engine.record.store import Store

from tests.support.tui import fake_workspace
from tests.support.unwritable import WHY_NOT, unwritable


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_plot_writes_png_whose_legend_labels_the_synthetic_run(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved: list[list[str]] = []
    savefig = Figure.savefig

    def recording_savefig(fig, *args, **kwargs):  # the very figure written to the PNG
        saved.append(_legend_texts(fig))
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    ws, ids = fake_workspace(tmp_path)
    out = plot_runs(ws, [ids["c_base"], ids["s_stop"]], tmp_path / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    (labels,) = saved
    synthetic = [t for t in labels if t.startswith(ids["s_stop"])]
    cifar = [t for t in labels if t.startswith(ids["c_base"])]
    assert len(synthetic) == len(cifar) == 1, labels
    assert "(synthetic data)" in synthetic[0] and "(synthetic data)" not in cifar[0]


def test_the_rendered_legend_says_synthetic_data(tmp_path):
    import matplotlib

    ws, ids = fake_workspace(tmp_path)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        out = plot_runs(ws, [ids["s_base"], ids["c_pre"]], tmp_path / "curves.svg")
    root = ElementTree.parse(out).getroot()
    texts = ["".join(node.itertext()) for node in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.startswith(ids["s_base"]) and "(synthetic data)" in t for t in texts), texts
    assert any(t.startswith(ids["c_pre"]) and "(synthetic data)" not in t for t in texts), texts
    assert sum("(synthetic data)" in t for t in texts) == 1


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


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder that refuses new files, also to root (CI), or a skip that says why not."""
    folder = tmp_path / "ro"
    folder.mkdir()
    with unwritable(folder) as refused:
        if not refused:
            pytest.skip(WHY_NOT)
        yield folder


def test_plot_refuses_an_output_folder_it_cannot_write(tmp_path, unwritable_folder):
    ws, ids = fake_workspace(tmp_path)
    with pytest.raises(ConfigError, match="not writable") as exc:
        plot_runs(ws, [ids["c_base"]], unwritable_folder / "x.png")
    assert str(unwritable_folder / "x.png") in str(exc.value) and "\n" not in str(exc.value)
    assert list(unwritable_folder.iterdir()) == []
