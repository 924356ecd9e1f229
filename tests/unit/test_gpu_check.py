"""scripts/gpu-check.sh's CPU-side parts: arguments, the plan, the warming groups and the table."""
from __future__ import annotations

import pytest
from rich.console import Console

from cifar_tui.gpucheck import check as gpu_check
from cifar_tui.gpucheck.report import config_rows, render, seed_run_seconds
from engine.config import ConfigError, list_config_paths

from tests.conftest import CONFIGS


def test_dry_run_plans_every_config_with_its_batch_size(capsys):
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    names = [p.stem for p in list_config_paths(CONFIGS)]
    assert f"{len(names)} configs, compile off and on" in out
    for name in names:
        assert f"  {name} " in out
    assert "resnet18_fast" in out and "batch   512 bf16" in out
    assert "KD teacher resnet50_pretrained_arcface_224x224 (random weights)" in out


def test_plan_applies_the_check_overrides_and_refuses_bad_input():
    args = gpu_check.parse_args(["--configs", "resnet18_pretrained", "--set", "train.precision=bf16"])
    (cfg,) = gpu_check.plan(args)
    assert cfg.data.source == "synthetic" and not cfg.model.pretrained and cfg.train.precision == "bf16"
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        gpu_check.plan(gpu_check.parse_args(["--configs", "nope"]))
    with pytest.raises(ConfigError, match="train.precision"):
        gpu_check.plan(gpu_check.parse_args(["--set", "train.precision=fp8"]))
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--window-s", "0"])
    assert gpu_check.main(["--dry-run", "--configs", "nope"]) == 2


def test_warm_groups_keep_one_network_in_one_process():
    cfgs = gpu_check.plan(gpu_check.parse_args([]))
    groups = gpu_check.warm_groups(cfgs, 4)
    assert len(groups) == 4 and sorted(n for g in groups for n in g) == sorted(c.name for c in cfgs)
    where = {n: i for i, g in enumerate(groups) for n in g}
    by_name = {c.name: c for c in cfgs}
    seed_like = ["resnet18_baseline", "resnet18_baseline_wd01", "resnet18_baseline_lbsmooth", "resnet18_augment"]
    assert gpu_check.graph_key(by_name["resnet18_baseline"]) == gpu_check.graph_key(by_name["resnet18_augment"])
    assert len({where[n] for n in seed_like}) == 1  # the same network: compiled once, in one process


def _measurement(config, compiled, img_per_s, error=None):
    return {"config": config, "compiled": compiled, "batch": 250, "image_size": 32, "precision": "fp32",
            "compile_mode": "reduce-overhead" if compiled else None, "steps": 200, "img_per_s": img_per_s,
            "warmup_s": 30.0 if compiled else 2.0, "peak_mem_mb": 2048.0, "error": error, "epoch_s": []}


def test_table_has_one_row_per_config_and_the_goals():
    results = {"environment": {"gpu": "NVIDIA H200", "torch": "2.x"},
               "configs": [_measurement("resnet18_baseline", False, 40_000.0),
                           _measurement("resnet18_baseline", True, 200_000.0),
                           _measurement("wrn28_10_sam", False, None, error="OutOfMemoryError: CUDA out of memory")],
               "skipped": [{"config": "wrn28_10_sam", "compiled": True, "reason": "time budget"}],
               "nccl": {"ok": True, "ddp_img_per_s": 30_000.0, "init_s": 1.0, "nccl_version": "2.21.5"},
               "bench": {"train_vs_ceiling_32": 0.95}, "wall_s": 420.0}
    rows = config_rows(results)
    assert [r["config"] for r in rows] == ["resnet18_baseline", "wrn28_10_sam"]
    assert seed_run_seconds(results) == pytest.approx(200 * 50_000 / 200_000)  # the faster of the two: 50 s
    console = Console(width=250, record=True)
    render(results, console)
    text = console.export_text()
    assert "5.00" in text and "200,000" in text  # compiled vs eager speed-up
    assert "eager: OutOfMemoryError" in text and "compiled: skipped (time budget)" in text
    assert "NCCL: 1-process DDP ResNet-18" in text and "ok (init 1.0 s" in text
    assert "the seed's 200-epoch resnet18_baseline" in text and "50" in text
