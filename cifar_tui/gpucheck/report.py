"""The one table `scripts/gpu-check.sh` prints (see cifar_tui/gpucheck/check.py), from its results dict."""
from __future__ import annotations

import shutil
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

SEED_EPOCHS, CIFAR_TRAIN = 200, 50_000
GOAL_SEED_RUN_S = 60.0          # the seed's 200-epoch resnet18_baseline, training only, on one H200
GOAL_TRAIN_VS_CEILING = 0.9


def _fmt(value: Optional[float], spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def config_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per config: eager and compiled side by side."""
    rows: dict[str, dict[str, Any]] = {}
    for m in results.get("configs", []):
        row = rows.setdefault(m["config"], {"config": m["config"], "batch": m["batch"], "size": m["image_size"],
                                            "precision": m["precision"]})
        row["compiled" if m["compiled"] else "eager"] = m
    for s in results.get("skipped", []):
        row = rows.setdefault(s["config"], {"config": s["config"]})
        row.setdefault("compiled" if s["compiled"] else "eager", {"error": f"skipped ({s['reason']})"})
    return list(rows.values())


def seed_run_seconds(results: dict[str, Any]) -> Optional[float]:
    """200 epochs of CIFAR-100 at resnet18_baseline's best measured speed (training only)."""
    rates = [m["img_per_s"] for m in results.get("configs", [])
             if m["config"] == "resnet18_baseline" and m.get("img_per_s")]
    return SEED_EPOCHS * CIFAR_TRAIN / max(rates) if rates else None


def render(results: dict[str, Any], console: Optional[Console] = None) -> None:
    console = console or Console(width=max(200, shutil.get_terminal_size().columns))
    env = results.get("environment", {})
    table = Table(title=f"gpu-check on {env.get('gpu', 'cpu')} (driver {env.get('driver')}, torch {env.get('torch')}, "
                        f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, NCCL {env.get('nccl')})",
                  title_justify="left")
    for col, justify in (("config", "left"), ("batch", "right"), ("px", "right"), ("precision", "left"),
                         ("eager img/s", "right"), ("compiled img/s", "right"), ("x", "right"),
                         ("compile s", "right"), ("steps", "right"), ("peak GiB eager / compiled", "right"),
                         ("note", "left")):
        table.add_column(col, justify=justify)
    for row in config_rows(results):
        e, c = row.get("eager", {}), row.get("compiled", {})
        speedup = c["img_per_s"] / e["img_per_s"] if e.get("img_per_s") and c.get("img_per_s") else None
        mem = " / ".join(_fmt(m.get("peak_mem_mb") and m["peak_mem_mb"] / 1024, ".1f") for m in (e, c))
        notes = [f"eager: {e['error']}" if e.get("error") else "", f"compiled: {c['error']}" if c.get("error") else "",
                 f"mode {c['compile_mode']}" if c.get("compile_mode") else ""]
        table.add_row(row["config"], _fmt(row.get("batch"), "d"), _fmt(row.get("size"), "d"), row.get("precision", ""),
                      _fmt(e.get("img_per_s")), _fmt(c.get("img_per_s")), _fmt(speedup, ".2f"),
                      _fmt(c.get("warmup_s"), ".0f"), f"{e.get('steps', 0)}/{c.get('steps', 0)}", mem,
                      "; ".join(n for n in notes if n)[:120])
    bench, nccl = results.get("bench") or {}, results.get("nccl") or {}
    if nccl:
        ok = "ok" if nccl.get("ok") else f"FAILED: {nccl.get('error', '')}"
        table.add_row("NCCL: 1-process DDP ResNet-18", "256", "32", "bf16", _fmt(nccl.get("ddp_img_per_s")), "", "", "",
                      "", "", f"{ok} (init {nccl.get('init_s')} s, NCCL {nccl.get('nccl_version')})")
    console.print(table)
    goals = Table(title="GPU bench and goals", title_justify="left")
    goals.add_column("figure")
    goals.add_column("measured", justify="right")
    goals.add_column("goal", justify="right")
    if bench.get("error"):
        goals.add_row("GPU bench", f"FAILED: {bench['error']}", "")
    for key, label, goal in (("pipeline_ratio_32", "data pipeline vs seed-style loader, 32px", ">= 10"),
                             ("pipeline_ratio_224", "data pipeline vs seed-style loader, 224px", ">= 10"),
                             ("train_vs_ceiling_32", "resnet18 training vs model-only ceiling, 32px",
                              f">= {GOAL_TRAIN_VS_CEILING}"),
                             ("train_vs_ceiling_224", "resnet18 training vs model-only ceiling, 224px",
                              f">= {GOAL_TRAIN_VS_CEILING}"),
                             ("train_vs_ceiling_32_amp", "resnet18 training vs ceiling, 32px, autocast", ""),
                             ("augment_ratio_32", "RandAugment+erasing+MixUp/CutMix vs v2 per sample, 32px", ">= 10"),
                             ("train_augment_vs_plain_32", "training with RandAugment+MixUp/CutMix vs without",
                              ">= 0.95")):
        if bench.get(key) is not None:
            goals.add_row(label, _fmt(bench[key], ".3g"), goal)
    goals.add_row("the seed's 200-epoch resnet18_baseline, training only (s)", _fmt(seed_run_seconds(results), ".0f"),
                  f"< {GOAL_SEED_RUN_S:g}")
    console.print(goals)
    console.print(f"wall time {results.get('wall_s')} s; {len(results.get('skipped', []))} measurements skipped "
                  f"(time budget)")
