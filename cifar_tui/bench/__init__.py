"""`cifar-tui bench`: throughput figures, each a ratio against its reference measured in the same
process, several repeats, medians reported, the device named.

Sections, one module each, run in this order (BenchPlan.sections selects them by name):

``startup`` (startup.py)
    wall time of ``cifar-tui --help``, ``cifar-tui list`` and the TUI's first screen.
``pipeline`` (pipeline.py)
    the engine's data pipeline vs a per-sample loader written like the seed's, 32x32 and 224x224.
``train`` (training.py)
    resnet18 training through the engine's Trainer vs the model-only ceiling.
``tui`` (tui.py)
    the same training with a live TUI attached vs headless.
``augment`` (augment.py)
    the recipes' batched augmentations vs torchvision.transforms.v2 per sample, and training
    with RandAugment + MixUp/CutMix vs without.
``study`` (study.py)
    a study's tab at 1,000 runs: its first showing, a run's change redrawn, the grid's figures,
    idle CPU (the real app, headless).
``slurm`` (slurm.py), only when asked for (``--section slurm``: it submits jobs)
    ``--launcher slurm`` on the cluster this shell reaches: a 100-run sweep submitted as one array,
    ``cifar-tui runs`` with 100 runs queued there, a task's start to its ``start`` event.

A new section is a module with ``SECTION = Section(name, run, details)``: ``run(ctx)`` adds its
figures to ``ctx.out`` (timing its parts with ``ctx.timed``), ``details(results)`` gives its rows
of the absolute-figures table.  List it in SECTIONS and its name in BenchPlan.sections; a figure
with a goal goes in plan.py's GOALS (and REQUIRED_KEYS if it must always be present).
Timing goals live here and in docs/BENCHMARKS.md, never in tests.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from . import augment, pipeline, slurm, startup, study, training, tui
from .common import BenchContext, Section, _Progress, cpu_count, cpu_model, device_name, loadavg, resolve_device
from .pipeline import SeedStyleDataset
from .plan import GOALS_CPU, GOALS_GPU, REQUIRED_KEYS, BenchPlan, goals_for
from .render import render_bench as _render

__all__ = ["BenchContext", "BenchPlan", "GOALS_CPU", "GOALS_GPU", "REQUIRED_KEYS", "SECTIONS", "Section",
           "SeedStyleDataset", "goals_for", "render_bench", "run_bench"]

SECTIONS: list[Section] = [startup.SECTION, pipeline.SECTION, training.SECTION, tui.SECTION, augment.SECTION,
                           study.SECTION, slurm.SECTION]

_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def run_bench(device: str = "auto", quick: bool = False, progress: bool = True, *,
              plan: Optional[BenchPlan] = None) -> dict:
    """Every figure as a dict (JSON-ready); keys in REQUIRED_KEYS are always present
    (None where not measured).  Raises ConfigError for an unavailable device."""
    plan = plan or (BenchPlan.quick() if quick else BenchPlan.full())
    dev = resolve_device(device)
    plan = plan.for_device(dev.type)
    import torch

    t_start = time.perf_counter()
    out: dict[str, Any] = {k: None for k in REQUIRED_KEYS}
    out.update({
        "device": str(dev), "device_name": device_name(dev), "device_type": dev.type,
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "cpu_count": cpu_count(), "cpu_model": cpu_model(), "torch_threads": torch.get_num_threads(),
        "quick": bool(quick), "repeats": plan.repeats, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": loadavg(), "train_vs_ceiling_224": None, "train_img_per_s_224": None,
        "env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
        "samples": {},
    })
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    workdir = tempfile.mkdtemp(prefix="cifar-tui-bench-")
    try:
        if dev.type == "cpu":  # as the Trainer runs on the CPU
            torch.use_deterministic_algorithms(True, warn_only=True)
        with _Progress(progress) as prog:
            ctx = BenchContext(plan, dev, out, prog, Path(workdir))
            for section in SECTIONS:
                if section.name in plan.sections:
                    section.run(ctx)
        out["section_s"] = ctx.section_s
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        shutil.rmtree(workdir, ignore_errors=True)
    out["loadavg_end"] = loadavg()
    out["bench_s"] = round(time.perf_counter() - t_start, 1)
    return out


def render_bench(results: dict, console: Any) -> None:
    """A table of each figure, its goal and pass/miss; then each section's absolute figures."""
    _render(results, console, SECTIONS)
