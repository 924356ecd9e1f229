"""Two small rules that end a run early: a loss that diverges, and test accuracy that stopped improving.

:class:`DivergenceGuard` watches every step on the device (a comparison and two selects, no
host sync) and remembers the first step whose loss was NaN/inf or above a limit; the trainer
reads that once per host sync it already makes (about five a second) and fails the run with a
message that names the step and suggests a lower learning rate.

:class:`EarlyStopping` counts evaluations without an improvement of more than ``min_delta``
(percentage points of test accuracy); after ``patience`` of them the run ends as completed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .config import ExperimentConfig


def chance_loss(cfg: ExperimentConfig, num_classes: int) -> float:
    """About the training loss of a model that guesses uniformly: ln(classes), plus what a margin
    (s * (1 + m) at most) or a distillation term (alpha * T^2 * ln(classes)) can add to it."""
    base = math.log(num_classes)
    loss = cfg.loss
    if loss.margin != "none":
        base += loss.s * (1.0 + loss.m)
    if loss.kd is not None:
        base += loss.kd.alpha * loss.kd.temperature ** 2 * math.log(num_classes)
    return base


@dataclass(frozen=True)
class Divergence:
    step: int          # global optimizer step (1-based) whose loss first went bad
    loss: float        # that loss (nan, inf or a large number)
    limit: float

    def message(self, steps_per_epoch: int, lr: float) -> str:
        epoch, in_epoch = divmod(self.step - 1, max(1, steps_per_epoch))
        where = f"at step {self.step} (epoch {epoch + 1}, step {in_epoch + 1} of {steps_per_epoch})"
        if math.isfinite(self.loss):
            what = (f"the loss reached {self.loss:.4g} {where}, above {self.limit:.4g} "
                    f"(train.divergence.max_loss_ratio x the loss of a uniform guess)")
        else:
            what = f"the loss became {'NaN' if math.isnan(self.loss) else 'infinite'} {where}"
        return f"training diverged: {what}; try a lower learning rate, e.g. --set optim.lr={lr / 10:g} (now {lr:g})"


class TrainingDiverged(RuntimeError):
    """Raised by the trainer when the guard saw a bad loss; its text is the run's error message."""


class DivergenceGuard:
    def __init__(self, limit: float, device: torch.device):
        self.limit = float(limit)
        self.device = torch.device(device)
        self._first = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._loss = torch.zeros((), dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Record `loss` of global step `step` (device ops only)."""
        value = loss.detach().double()
        bad = ~torch.isfinite(value) | (value > self.limit)
        new = bad & (self._first < 0)
        # torch.full, not torch.tensor: no host-to-device copy (and so no sync) on a GPU
        self._first = torch.where(new, torch.full((), step, dtype=torch.int64, device=self.device), self._first)
        self._loss = torch.where(new, value, self._loss)

    def check(self) -> Optional[Divergence]:
        """The first bad step seen so far, or None. Reads two numbers from the device (a sync):
        call it where the trainer syncs anyway."""
        first, loss = torch.stack([self._first.double(), self._loss]).tolist()
        return None if first < 0 else Divergence(int(first), loss, self.limit)

    def reset(self) -> None:
        self._first.fill_(-1)
        self._loss.zero_()


class EarlyStopping:
    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.stale = 0

    def update(self, epoch: int, acc: float) -> Optional[str]:
        """Record an evaluated epoch; returns the reason to stop, or None to go on."""
        if self.best is None or acc > self.best + self.min_delta:
            self.best, self.best_epoch, self.stale = acc, epoch, 0
            return None
        self.stale += 1
        if self.stale < self.patience:
            return None
        by = f" by more than {self.min_delta:g} points" if self.min_delta else ""
        return (f"early stop: test accuracy has not improved{by} for {self.stale} evaluations "
                f"(best {self.best:.2f}% at epoch {self.best_epoch})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.stale = state["best"], state["best_epoch"], int(state["stale"])


__all__ = ["Divergence", "DivergenceGuard", "EarlyStopping", "TrainingDiverged", "chance_loss"]
