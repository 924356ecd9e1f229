"""Section 2: training images/s through the engine's own Trainer vs the model-only ceiling.

Resnet18 with the seed's resnet18_baseline settings, end to end through the real Trainer
(its `_train_epoch`: pipeline, forward, loss, backward, clip, step, schedule, running sums,
step events), timed per epoch by a TrainerHook, vs the model-only ceiling: the same model,
optimizer, batch, precision and memory format on a pre-staged batch (forward + loss + backward
+ clip + step, as the seed).  Engine and ceiling epochs alternate.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from engine.config import ConfigError

from .common import BenchContext, DetailRow, Section, median, number, rounded, sync

NEVER = 1_000_000  # eval.every / train.checkpoint_every: only the last epoch evaluates and checkpoints


def bench_config(plan: Any, device: Any, image_size: int, batch: int, steps: int, epochs: int,
                 precision: Optional[str] = None) -> Any:
    """The seed's resnet18_baseline (from configs/ when present), on synthetic data."""
    from engine.config import config_from_dict, load_config

    overrides = {
        "data.source": "synthetic", "data.root": None, "data.image_size": image_size,
        "data.train_limit": batch * steps, "data.test_limit": batch, "model.backbone": plan.backbone,
        "model.pretrained": False, "model.weights": None, "train.batch_size": batch, "train.epochs": epochs,
        "train.device": str(device), "train.compile": False, "train.checkpoint_every": NEVER, "eval.every": NEVER,
    }
    if precision:
        overrides["train.precision"] = precision
    try:
        raw = load_config("resnet18_baseline").to_dict()
    except ConfigError:
        raw = {"name": "resnet18_baseline", "data": {"augment": "none", "normalize": "none", "shuffle": False},
               "optim": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 1e-3, "no_decay": "bias"},
               "schedule": {"name": "multistep", "interval": "step", "milestones": [100000, 200000], "gamma": 0.316},
               "train": {"precision": "fp32", "grad_clip": 5.0, "seed": 0}}
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_from_dict(raw, "bench config")


def make_trainer(cfg: Any, home: Path, on_epoch: Callable[[Any, float, float], None]) -> Any:
    """A Trainer whose epochs are timed, device-synchronised, by a hook: everything timed is the
    engine's own loop; on_epoch(trainer, seconds, images) follows each epoch's last step."""
    from engine.hooks import TrainerHook
    from engine.record.paths import new_run_id
    from engine.trainer import Trainer

    class EpochTimer(TrainerHook):
        def epoch_start(self, trainer: Any) -> None:
            sync(trainer.device)
            self.t0 = time.perf_counter()

        def epoch_trained(self, trainer: Any, totals: Any) -> None:
            sync(trainer.device)
            on_epoch(trainer, time.perf_counter() - self.t0, totals.seen)

    trainer = Trainer(cfg, run_id=new_run_id(cfg.name), home=home / "runs", data_root=home / "data",
                      hooks=[EpochTimer()])
    trainer.prepare()
    return trainer


def check_exit(code: int) -> None:
    from engine.lifecycle import EXIT_OK, EXIT_STOPPED

    if code == EXIT_STOPPED:  # Ctrl-C: the Trainer stopped gracefully; stop the benchmark too
        raise KeyboardInterrupt
    if code != EXIT_OK:
        raise RuntimeError(f"the bench training run ended with exit code {code}")


def _ceiling_epoch(trainer: Any, x: Any, y: Any, steps: int) -> float:
    """The model-only ceiling: the trainer's model and optimizer on a pre-staged batch; returns img/s."""
    from contextlib import nullcontext

    import torch
    import torch.nn.functional as F

    model, opt, clip = trainer.model, trainer.optimizer, trainer.cfg.train.grad_clip
    amp = torch.autocast(trainer.device.type, dtype=trainer.amp_dtype) if trainer.amp_dtype else nullcontext()
    model.train()
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        with amp:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    sync(trainer.device)
    return steps * x.shape[0] / (time.perf_counter() - t0)


def _memory_format(trainer: Any) -> Any:
    import torch

    return torch.channels_last if trainer.cfg.train.channels_last else torch.contiguous_format


def bench_train(ctx: BenchContext, plan: Any, size: int, batch: int, steps: int,
                precision: Optional[str] = None) -> None:
    """Alternating epochs: engine (warm-up), ceiling (warm-up), then `repeats` engine/ceiling pairs.
    With `precision` (e.g. "auto": bf16/fp16 autocast on a GPU) the keys end in `_amp`."""
    out = ctx.out
    suffix = f"{size}_amp" if precision else f"{size}"
    label = f"training {plan.backbone} {size}x{size}, batch {batch}{', ' + precision + ' precision' if precision else ''}"
    with ctx.prog.step(f"{label}: engine vs model-only ceiling") as note:
        cfg = bench_config(plan, ctx.device, size, batch, steps, epochs=plan.repeats + 1, precision=precision)
        engine: list[float] = []
        ceiling: list[float] = []
        staged: dict[str, Any] = {}

        def on_epoch(trainer: Any, elapsed: float, seen: float) -> None:
            if trainer.epoch == 1:  # the engine's warm-up epoch: stage the ceiling's batch, warm it up
                x, y = next(trainer.pipeline.train_batches(0, trainer.cfg.train.seed, batch))
                staged["x"], staged["y"] = x.clone(memory_format=_memory_format(trainer)), y.clone()
                _ceiling_epoch(trainer, staged["x"], staged["y"], 1)
                return
            engine.append(seen / elapsed)
            ceiling.append(_ceiling_epoch(trainer, staged["x"], staged["y"], steps))

        trainer = make_trainer(cfg, ctx.workdir / f"train{suffix}", on_epoch)
        check_exit(trainer.run())
        ratio = median([e / c for e, c in zip(engine, ceiling)])
        out[f"train_vs_ceiling_{suffix}"] = rounded(ratio, 3)
        out[f"train_img_per_s_{suffix}"] = rounded(median(engine), 1)
        out[f"train_ceiling_img_per_s_{suffix}"] = rounded(median(ceiling), 1)
        out[f"train_batch_{suffix}"] = batch
        out[f"train_steps_{suffix}"] = steps
        out["samples"][f"train_engine_{suffix}"] = [round(v, 1) for v in engine]
        out["samples"][f"train_ceiling_{suffix}"] = [round(v, 1) for v in ceiling]
        if precision:
            out["amp_dtype"] = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else None
        else:
            out["channels_last"] = bool(trainer.cfg.train.channels_last)
            out["precision"] = trainer.cfg.train.precision
        note(f"{ratio:.3f} ({median(engine):,.1f} vs {median(ceiling):,.1f} img/s)")


def run(ctx: BenchContext) -> None:
    plan, device = ctx.plan, ctx.device
    with ctx.timed("train_32"):
        bench_train(ctx, plan, 32, plan.train_batch, plan.train_steps)
    if plan.wants_224_training(device.type):
        batch = plan.train_batch if device.type == "cuda" else plan.train_224_batch
        with ctx.timed("train_224"):
            bench_train(ctx, replace(plan, repeats=plan.train_224_repeats), 224, batch, plan.train_224_steps)
    if device.type == "cuda":  # the seed trains in fp32; mixed precision is the engine's GPU option
        with ctx.timed("train_32_amp"):
            bench_train(ctx, plan, 32, plan.train_batch, plan.train_steps, precision="auto")


def training_details(results: dict) -> list[DetailRow]:
    rows = []
    for size in (32, 224):
        if results.get(f"train_img_per_s_{size}") is not None:
            rows.append((f"training {size}x{size} img/s (batch {results.get(f'train_batch_{size}')}; reference: ceiling)",
                         number(results, f"train_img_per_s_{size}", ",.1f"),
                         number(results, f"train_ceiling_img_per_s_{size}", ",.1f")))
    if results.get("train_img_per_s_32_amp") is not None:
        rows.append((f"training 32x32 img/s, {results.get('amp_dtype')} autocast (reference: ceiling, "
                     f"ratio {number(results, 'train_vs_ceiling_32_amp', '.3f')})",
                     number(results, "train_img_per_s_32_amp", ",.1f"),
                     number(results, "train_ceiling_img_per_s_32_amp", ",.1f")))
    return rows


SECTION = Section("train", run, training_details)
