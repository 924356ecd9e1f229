"""`cifar-tui bench` on tiny sizes: every measurement runs, every key is there, the numbers
are positive and consistent.  No timing assertions: the goals live in docs/BENCHMARKS.md."""
from __future__ import annotations

import json
import math
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch
from rich.console import Console

from cifar_tui.bench import (GOALS_CPU, REQUIRED_KEYS, BenchContext, BenchPlan, SeedStyleDataset, render_bench,
                              run_bench)
from engine.config import ConfigError, DataConfig
from engine.data import DevicePipeline, synthetic_dataset

from tests.conftest import CLI


@pytest.fixture(scope="module")
def tiny_results() -> dict:
    return run_bench("cpu", progress=False, plan=BenchPlan.tiny())


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_every_figure_measured_and_consistent(tiny_results):
    r = tiny_results
    json.dumps(r)  # --json prints it as it is
    for key in REQUIRED_KEYS:
        assert key in r, key
    assert r["device"] == "cpu" and r["device_type"] == "cpu"
    assert r["cpu_count"] >= 1 and r["torch_version"] == torch.__version__
    # the tiny plan measures 32 and 48 (not 224): 224's keys are there, as null
    assert r["pipeline_ratio_224"] is None and r["train_vs_ceiling_224"] is None
    for key in ("pipeline_ratio_32", "pipeline_ratio_48", "train_vs_ceiling_32", "train_img_per_s_32",
                "train_ceiling_img_per_s_32", "tui_vs_headless", "tui_img_per_s", "headless_img_per_s",
                "help_s", "list_s", "tui_first_screen_s", "pipeline_engine_img_per_s_32",
                "pipeline_reference_img_per_s_32", "pipeline_crop_flip_img_per_s_32"):
        assert _positive(r[key]), (key, r[key])
    # ratios are engine / reference of the reported medians (rounded)
    for size in (32, 48):
        engine, ref = r[f"pipeline_engine_img_per_s_{size}"], r[f"pipeline_reference_img_per_s_{size}"]
        assert r[f"pipeline_ratio_{size}"] == pytest.approx(engine / ref, rel=0.02, abs=0.01)
        # the reference's setting is the faster of 0 workers and one per core
        tried = {w: r[f"pipeline_reference_img_per_s_{size}_w{w}"] for w in r["reference_workers_tried"]}
        assert r[f"pipeline_reference_workers_{size}"] == max(tried, key=tried.get)
        assert len(r["samples"][f"pipeline_engine_{size}"]) == r["repeats"]
    assert len(r["samples"]["train_engine_32"]) == len(r["samples"]["train_ceiling_32"]) == r["repeats"]
    assert r["samples"]["tui_attached"] and r["samples"]["tui_headless"]
    assert r["tui_cpu_cores"] is None or r["tui_cpu_cores"] >= 0
    assert r["channels_last"] is True and r["precision"] == "fp32"
    assert set(r["section_s"]) == {"startup", "pipeline", "train_32", "tui", "augment", "train_augment", "study"}
    # a study's tab (bench/study.py): the tiny plan's 40 runs, 4 groups
    assert r["study_runs"] == 40 and r["study_groups"] == 4 and r["study_tab_redraws"] >= 3
    assert all(_positive(r[k]) for k in ("study_tab_first_s", "study_tab_redraw_s", "study_grid_ms"))
    assert r["study_tab_idle_cores"] >= 0
    # the recipes' augmentations: ratios of the reported medians; the training pairs alternate A/P
    for name in ("augment", "randaugment"):
        engine, ref = r[f"{name}_engine_img_per_s_32"], r[f"{name}_reference_img_per_s_32"]
        assert _positive(engine) and _positive(ref)
        assert r[f"{name}_ratio_32"] == pytest.approx(engine / ref, rel=0.02, abs=0.01)
    assert r["augment_reference_workers_32"] in r["reference_workers_tried"]
    assert _positive(r["train_augment_vs_plain_32"])
    assert len(r["samples"]["train_augment_32"]) == len(r["samples"]["train_plain_32"]) == r["repeats"]


def test_render_bench_shows_goals(tiny_results):
    console = Console(record=True, width=160)
    render_bench(tiny_results, console)
    text = console.export_text()
    assert "vs model-only ceiling" in text and ">= 0.95" in text and "<= 0.5" in text
    assert "pass" in text or "miss" in text
    assert "not measured" in text  # 224x224 in the tiny plan


def test_render_bench_with_nothing_measured():
    console = Console(record=True, width=160)
    render_bench({k: None for k in REQUIRED_KEYS} | {"device": "cpu"}, console)
    assert console.export_text().count("not measured") == len(GOALS_CPU)


def test_seed_style_reference_matches_the_engine_at_32():
    ds = synthetic_dataset(0, 64, 0)
    ref = SeedStyleDataset(ds.train.images.reshape(64, -1), [int(v) for v in ds.train.labels], 32)
    img, label = ref[5]
    assert img.dtype == np.float32 and img.shape == (3, 32, 32) and label.dtype == np.int64
    pipe = DevicePipeline(ds, DataConfig(source="synthetic", augment="none", normalize="none", shuffle=False), "cpu")
    x, y = next(pipe.train_batches(0, 0, 8))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 32, 32)
    assert torch.equal(x[5], torch.from_numpy(img)) and int(y[5]) == int(label)
    big, _ = SeedStyleDataset(ds.train.images.reshape(64, -1), [0] * 64, 224, length=1000)[999]
    assert big.shape == (3, 224, 224) and 0.0 <= big.min() and big.max() <= 1.0


def test_bad_device_is_a_config_error():
    with pytest.raises(ConfigError, match="--device"):
        run_bench("tpu", progress=False, plan=BenchPlan.tiny())
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device"):
            run_bench("cuda:0", progress=False, plan=BenchPlan.tiny())


def test_cli_bench_bad_device_exits_2():
    proc = subprocess.run([*CLI, "bench", "--device", "tpu", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--device" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_cli_bench_unknown_section_exits_2():
    proc = subprocess.run([*CLI, "bench", "--section", "augmnet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--section: unknown section 'augmnet'" in proc.stderr and "augment" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tui_first_screen_without_tmux(tmp_path, monkeypatch):
    """Where tmux is missing the first screen is timed headless (run_test) in a fresh process: one
    warm-up start, then tui_screen_repeats timed ones, each a real app that showed its experiments
    table (the probe raises otherwise); the figure is the median of those samples."""
    import cifar_tui.bench.startup as startup
    from cifar_tui.bench.common import _Progress

    monkeypatch.setattr(startup.shutil, "which", lambda name: None)
    timed: list[float] = []
    headless = startup._tui_first_screen_headless
    monkeypatch.setattr(startup, "_tui_first_screen_headless", lambda *a: timed.append(headless(*a)) or timed[-1])
    plan = BenchPlan.tiny()  # one warm-up and one timed start
    out: dict = {"samples": {}}
    startup.bench_startup(BenchContext(plan, None, out, _Progress(False), tmp_path))
    assert out["tui_first_screen_method"].startswith("headless")
    assert len(timed) == plan.tui_screen_repeats + 1 and all(t > 0 for t in timed)
    assert out["samples"]["tui_first_screen_s"] == [round(t, 3) for t in timed[1:]]  # the warm-up is not counted
    assert out["tui_first_screen_s"] == pytest.approx(float(np.median(timed[1:])), abs=1e-3)
    for key in ("help_s", "list_s"):
        assert len(out["samples"][key]) == plan.startup_repeats and _positive(out[key])


def test_a_new_section_plugs_in_and_renders(monkeypatch):
    """Sections are a list: another module adds one without touching the others."""
    import cifar_tui.bench as bench

    def run(ctx: BenchContext) -> None:
        with ctx.timed("extra"):
            ctx.out["extra_figure"] = 1.5

    extra = bench.Section("extra", run, lambda r: [("extra figure", str(r["extra_figure"]), "-")])
    monkeypatch.setattr(bench, "SECTIONS", [*bench.SECTIONS, extra])
    results = run_bench("cpu", progress=False, plan=replace(BenchPlan.tiny(), sections=("extra",)))
    assert results["extra_figure"] == 1.5 and set(results["section_s"]) == {"extra"}
    assert all(results[k] is None for k in REQUIRED_KEYS if k != "device")  # the other sections did not run
    console = Console(record=True, width=160)
    render_bench(results, console)
    assert "extra figure" in console.export_text()
