"""`scripts/gpu-check.sh` (`python -m cifar_tui.gpucheck`): what a GPU machine is checked for, in one
command and one table, in under 8 minutes on one H200.

1. environment: the GPU, driver, torch / CUDA / cuDNN / NCCL versions;
2. NCCL: a 1-process NCCL process group under torchrun (all_reduce checked, a DDP-wrapped ResNet-18
   stepping), in its own process;
3. the GPU bench: `cifar-tui bench`'s data-pipeline, training and augmentation sections on the GPU (quick plan);
4. every config (or --configs), compile off and on: the engine's own Trainer on synthetic data at
   the config's batch size and precision; one warm-up epoch (compile, cuDNN autotuning, CUDA graph
   capture), then up to --steps steps or --window-s seconds measured; img/s and peak GPU memory.
   Pretrained weights are replaced by random ones and the KD teacher by a random run of its
   config: speed does not depend on them.

Compiling every config takes most of the time: before anything is measured, --warm-workers
processes compile the configs once (Inductor's on-disk caches), grouped so that configs sharing a
network compile it once; the measured runs then find the caches warm.  --budget-s bounds the
whole: what would start after it is listed as skipped.  --dry-run prints the plan without torch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from engine.config import ConfigError, ExperimentConfig, list_config_paths, load_config

CHECK_OVERRIDES = ["data.source=synthetic", "data.root=null", "model.pretrained=false", "model.weights=null",
                   "train.checkpoint_every=100000"]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/gpu-check.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", metavar="NAME", help="configs to run (default: every one in configs/)")
    p.add_argument("--steps", type=int, default=200, help="measured steps per config and compile setting (default 200)")
    p.add_argument("--window-s", type=float, default=4.0, help="at most this many measured seconds each (default 4)")
    p.add_argument("--compile", choices=["both", "on", "off"], default="both")
    p.add_argument("--budget-s", type=float, default=450.0, help="start nothing after this many seconds (default 450)")
    p.add_argument("--warm-workers", type=int, default=None, help="compile-cache warming processes (default: CPUs / 4, at most 4)")
    p.add_argument("--skip", nargs="*", default=[], choices=["nccl", "bench", "configs", "warm"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every config (e.g. train.precision=bf16)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    p.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit (no torch, no GPU)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.window_s <= 0 or args.budget_s <= 0:
        p.error("--steps, --window-s and --budget-s must be positive")
    return args


def plan(args: argparse.Namespace, configs_dir: Optional[Path] = None) -> list[ExperimentConfig]:
    """The configs to measure, validated with the check's overrides (a bad name or --set is a ConfigError)."""
    names = args.configs or [p.stem for p in list_config_paths(configs_dir)]
    return [load_config(n, CHECK_OVERRIDES + args.overrides, configs_dir) for n in names]


def graph_key(cfg: ExperimentConfig) -> tuple:
    """Configs with equal keys compile the same network (the loss and the data are outside it)."""
    m, d, t = cfg.model, cfg.data, cfg.train
    return (m.backbone, m.stem, m.head, m.hid_dim, m.drop_path_rate, d.image_size, tuple(d.train_sizes), t.precision,
            t.channels_last, cfg.optim.sam is not None, t.batch_size)


def warm_groups(cfgs: list[ExperimentConfig], workers: int) -> list[list[str]]:
    """Configs split over `workers` processes, the configs of one network in the same process."""
    by_key: dict[tuple, list[str]] = {}
    for cfg in cfgs:
        by_key.setdefault(graph_key(cfg), []).append(cfg.name)
    groups: list[list[str]] = [[] for _ in range(max(1, workers))]
    for names in sorted(by_key.values(), key=len, reverse=True):
        min(groups, key=len).extend(names)
    return [g for g in groups if g]


def describe_plan(args: argparse.Namespace, cfgs: list[ExperimentConfig], workers: int) -> str:
    modes = {"both": "off and on", "on": "on", "off": "off"}[args.compile]
    lines = [f"gpu-check plan on {args.device}: {len(cfgs)} configs, compile {modes}, up to {args.steps} steps or "
             f"{args.window_s:g} s measured each after a warm-up epoch; budget {args.budget_s:g} s",
             "phases: environment" + ("" if "nccl" in args.skip else ", NCCL probe (torchrun, 1 process)")
             + ("" if "warm" in args.skip or args.compile == "off" else f", compile-cache warming ({workers} process{'es' if workers != 1 else ''})")
             + ("" if "bench" in args.skip else ", GPU bench (pipeline + training + augmentation, quick)")
             + ("" if "configs" in args.skip else ", every config")]
    groups = len({graph_key(c) for c in cfgs})
    lines.append(f"{groups} distinct networks to compile")
    for cfg in cfgs:
        kd = f", KD teacher {cfg.loss.kd.teacher} (random weights)" if cfg.loss.kd else ""
        lines.append(f"  {cfg.name:40s} {cfg.model.backbone:24s} {cfg.data.image_size:4d}px batch {cfg.train.batch_size:5d} "
                     f"{cfg.train.precision}{kd}")
    return "\n".join(lines)


def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version(), "cpus": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_mem_gb=round(props.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                   nccl=".".join(map(str, torch.cuda.nccl.version())))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def run_nccl_probe(timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           "-m", "cifar_tui.gpucheck.probe", "nccl"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("NCCL "):
            out = json.loads(line[5:])
            out.update(ok=out["all_reduce_ok"] and out["loss_finite"], wall_s=round(time.monotonic() - t0, 1))
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"ok": False, "error": f"exit {proc.returncode}: {tail[0][:300]}"}


def start_warmers(groups: list[list[str]], overrides: list[str], home: Path, device: str) -> list[subprocess.Popen]:
    procs = []
    for names in groups:
        cmd = [sys.executable, "-m", "cifar_tui.gpucheck.probe", "warm", str(home), device, *names, "--", *overrides]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    return procs


def wait_warmers(procs: list[subprocess.Popen], deadline: float) -> dict[str, Any]:
    warmed: dict[str, Any] = {}
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for line in (out or "").splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                warmed[row["warmed"]] = row
    return warmed


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    try:
        cfgs = plan(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    workers = args.warm_workers if args.warm_workers is not None else max(1, min(4, (os.cpu_count() or 4) // 4))
    print(describe_plan(args, cfgs, workers), flush=True)
    if args.dry_run:
        return 0
    from . import probe
    from .report import render

    results: dict[str, Any] = {"environment": environment(args.device), "configs": [], "skipped": []}
    with tempfile.TemporaryDirectory(prefix="cifar-tui-gpu-check-") as tmp:
        home = Path(tmp)
        kd = {c.loss.kd.teacher for c in cfgs if c.loss.kd}
        teachers = {t: probe.make_teacher(home, t, CHECK_OVERRIDES + args.overrides) for t in sorted(kd)}

        def overrides_for(cfg: ExperimentConfig) -> list[str]:
            extra = [f"loss.kd.teacher={teachers[cfg.loss.kd.teacher]}"] if cfg.loss.kd else []
            return CHECK_OVERRIDES + args.overrides + extra

        procs = []
        if args.compile != "off" and "warm" not in args.skip and "configs" not in args.skip:
            # KD students compile the same network as their config without KD: no teacher needed here
            groups = warm_groups([c for c in cfgs if not c.loss.kd], workers)
            procs = start_warmers(groups, CHECK_OVERRIDES + args.overrides, home, args.device)
        if "nccl" not in args.skip:
            print("NCCL probe ...", flush=True)
            results["nccl"] = run_nccl_probe(timeout=120)
        if procs:
            print(f"waiting for {len(procs)} compile-cache warmers ...", flush=True)
            results["warm"] = wait_warmers(procs, t_start + 0.45 * args.budget_s)
        if "bench" not in args.skip:
            print("GPU bench (quick: pipeline + training + augmentation) ...", flush=True)
            results["bench"] = _bench(args.device)
        if "configs" not in args.skip:
            settings = {"both": [False, True], "on": [True], "off": [False]}[args.compile]
            for cfg in cfgs:
                for compiled in settings:
                    if time.monotonic() > deadline:
                        results["skipped"].append({"config": cfg.name, "compiled": compiled, "reason": "time budget"})
                        continue
                    m = probe.measure(cfg.name, overrides_for(cfg), compiled=compiled, steps=args.steps,
                                          window_s=args.window_s, home=home, device=args.device)
                    results["configs"].append(m.as_dict())
                    print(f"  {cfg.name} compile {'on' if compiled else 'off'}: "
                          f"{m.error or f'{m.img_per_s} img/s over {m.steps} steps'}", flush=True)
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    render(results)
    failed = [r for r in results["configs"] if r["error"]] or (results.get("nccl") and not results["nccl"].get("ok"))
    return 1 if failed else 0


def _bench(device: str) -> dict[str, Any]:
    from dataclasses import replace

    from ..bench import BenchPlan, run_bench

    try:
        return run_bench(device=device, progress=False,
                         plan=replace(BenchPlan.quick(), sections=("pipeline", "train", "augment")))
    except Exception as exc:  # noqa: BLE001 - the rest of the check still runs
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}

