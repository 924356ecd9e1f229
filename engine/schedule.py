"""Learning-rate schedules: one LambdaLR whose factor follows schedule.name."""
from __future__ import annotations

import bisect
import math
from typing import Callable

import torch

from .config import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """The LR multiplier as a function of the optimizer step (one LambdaLR for every schedule)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "onecycle" and warmup == 0:
        warmup = int(0.3 * total_steps)
    min_ratio = cfg.min_lr / base_lr if base_lr > 0 else 0.0
    milestones = sorted(cfg.milestones)

    def unit(step: int) -> int:
        return step if cfg.interval == "step" else step // max(1, steps_per_epoch)

    def decay(step: int) -> float:
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "step":
            return cfg.gamma ** (unit(step) // cfg.step_size)
        if cfg.name == "multistep":
            return cfg.gamma ** bisect.bisect_right(milestones, unit(step))
        # cosine and onecycle anneal from the end of warm-up to the last step
        span = max(1, total_steps - warmup)
        progress = min(1.0, max(0.0, (step - warmup) / span))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            start = 1.0 / 25.0 if cfg.name == "onecycle" else 0.0
            return (start + (1.0 - start) * (step + 1) / warmup) * (1.0 if cfg.name == "onecycle" else decay(step))
        return decay(step)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, base_lr, steps_per_epoch, steps_per_epoch * epochs))
