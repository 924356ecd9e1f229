"""Points of the training loop where other code can act without copying the loop.

Pass hooks to ``Trainer(..., hooks=[...])``; every rank calls every hook, in order.  The
default methods do nothing, so a hook overrides only what it needs.  ``cifar-tui bench`` times
epochs with ``epoch_start``/``epoch_trained``; per-step additions (an EMA of the weights, a
divergence guard) belong in ``step_end``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer


@dataclass(frozen=True)
class EpochTotals:
    """An epoch's training figures, summed over every rank."""

    epoch: int          # 1-based: the epoch just trained
    train_loss: float
    train_acc: float
    seen: int           # images, all ranks
    train_s: float      # wall seconds of the training steps (not synchronised with the device)


class TrainerHook:
    def epoch_start(self, trainer: "Trainer") -> None:
        """Before the first step of an epoch (also of a resumed, part-done one)."""

    def step_end(self, trainer: "Trainer", loss: torch.Tensor, batch_size: int) -> None:
        """After the optimizer and scheduler stepped. `loss` is this rank's (on the device: reading
        it syncs with a GPU); `batch_size` the images this rank trained on."""

    def epoch_trained(self, trainer: "Trainer", totals: EpochTotals) -> None:
        """After an epoch's last step, before evaluation, events and checkpoints."""

    def epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        """After the epoch's evaluation and its `epoch` event (rank 0 writes it; `record` is the
        same on every rank), before its checkpoint."""
