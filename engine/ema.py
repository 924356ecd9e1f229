"""Weight EMA: timm's ModelEmaV3 plus what a run needs around it (update cadence, checkpoint
state, which of the two models is the better one).

The EMA keeps a moving average of the whole state_dict (parameters and BatchNorm buffers):
``ema = decay * ema + (1 - decay) * model`` after every ``every``-th optimizer step, the
first update copying the model.  With ``warmup`` the decay ramps up as timm's
``1 - (1 + n) ** -2/3`` (n = updates so far, capped at ``decay``), so that short runs are
not dominated by the random initial weights.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn

from .config import EmaConfig


class WeightEma:
    def __init__(self, model: nn.Module, cfg: EmaConfig):
        self.cfg = cfg
        self.ema = ModelEmaV3(model, decay=cfg.decay, use_warmup=cfg.warmup, foreach=True)
        self.ema.module.requires_grad_(False)
        self.updates = 0

    @property
    def module(self) -> nn.Module:
        """The averaged model (in evaluation mode; evaluate it like the raw model)."""
        return self.ema.module

    def decay(self, update: int) -> float:
        """The decay of the update-th update (1-based); 0 for the first (a copy)."""
        return self.ema.get_decay(update)

    @torch.no_grad()
    def step(self, model: nn.Module, global_step: int) -> None:
        """Call after each optimizer step; updates every `every` steps. Device work only, no host sync."""
        if global_step % self.cfg.every:
            return
        self.updates += 1
        self.ema.update(model, step=self.updates)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.ema.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def better_of(raw_acc: float, ema_acc: float | None) -> tuple[float, str]:
    """The accuracy a run records for an epoch and which model gave it ("model" or "ema")."""
    if ema_acc is not None and ema_acc > raw_acc:
        return ema_acc, "ema"
    return raw_acc, "model"


__all__ = ["WeightEma", "better_of"]
