"""One optimization step of the training loop: forward, loss, backward, clipping and the
optimizer step, plain or Sharpness-Aware (optim.sam, engine/sam.py).

Targets are class indices, or (n, classes) probabilities when MixUp/CutMix mixed the batch
(engine/data/device_augment.py).  ``F.cross_entropy`` takes both; with probabilities and
``label_smoothing=s`` it trains on ``(1 - s) * target + s / classes``, exactly timm's
``mixup_target(..., smoothing=s)`` followed by its SoftTargetCrossEntropy (the smoothing is
linear in the target, so smoothing the mixed target equals mixing the smoothed ones).
Accuracy on a mixed batch counts the class with the largest share of each image.

A step returns the loss and the number of correct images as device tensors: nothing here
reads a value back to the host (no sync per step).  With CUDA graphs (torch.compile's
``reduce-overhead``) each forward is marked as a new step, and everything a step keeps from a
forward is computed before the next forward replays the graph.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Optional

import torch
from torch import nn

from .fast import mark_step
from .losses import Criterion
from .sam import SAM

Batch = torch.Tensor | tuple[torch.Tensor, ...]  # a tuple: one tensor per scale group (data.train_sizes)


def forward_groups(model: nn.Module, x: Batch) -> torch.Tensor:
    """Model outputs for a batch. A multi-scale batch runs one forward per scale group, smallest
    first, as the seed does: BatchNorm normalises each group by itself and the largest group
    moves the running statistics last. The outputs are concatenated in the labels' order."""
    if isinstance(x, torch.Tensor):
        return model(x)
    return torch.cat([model(group) for group in x])


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices: the labels themselves, or each mixed target's largest share."""
    return y.argmax(1) if y.dim() == 2 else y


class TrainStep:
    """Built once per run by the Trainer; ``step(x, y, share)`` trains on one batch.

    ``forward`` is the (DDP-wrapped, compiled) model the batches go through; ``model`` the bare module
    (its parameters are clipped, its BatchNorm statistics frozen in SAM's second pass);
    ``ddp`` the DistributedDataParallel wrapper or None (SAM's first pass skips its all-reduce)."""

    def __init__(self, *, model: nn.Module, forward: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, criterion: Criterion,
                 teacher: Any = None, amp_dtype: Optional[torch.dtype], device: torch.device,
                 grad_clip: Optional[float], sam: Any = None, ddp: Optional[nn.Module] = None,
                 compile_mode: Optional[str] = None):
        self.model, self.forward, self.optimizer, self.scaler = model, forward, optimizer, scaler
        self.criterion, self.teacher, self.grad_clip = criterion, teacher, grad_clip
        self.compile_mode = compile_mode
        self.sam = SAM(optimizer, rho=sam.rho, adaptive=sam.adaptive) if sam is not None else None
        self._first_pass: Callable[[], ContextManager] = ddp.no_sync if ddp is not None else nullcontext
        self._amp_dtype, self._device_type = amp_dtype, device.type

    def _amp(self) -> ContextManager:
        return torch.autocast(self._device_type, dtype=self._amp_dtype) if self._amp_dtype else nullcontext()

    def _forward_backward(self, x: Batch, y: torch.Tensor, share: float,
                          teacher: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss and the scaled backward; (loss, correct) of this pass, detached.
        `teacher` caches the teacher's logits for SAM's second pass (a frozen teacher gives the same)."""
        mark_step(self.compile_mode)
        with self._amp():
            output = forward_groups(self.forward, x)
            logits = self.criterion.train_logits(output, y)
            if self.teacher is not None and "logits" not in teacher:  # after the student, as before SAM existed
                teacher["logits"] = self.teacher.logits(x, y)
            loss = self.criterion.loss(logits, y, teacher.get("logits"))
        with torch.no_grad():  # before the next forward: a CUDA graph replay reuses `output`
            correct = (output.argmax(1) == hard_labels(y)).sum()
        self.scaler.scale(loss * share).backward()
        return loss.detach(), correct

    def step(self, x: Batch, y: torch.Tensor, share: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on (x, y); `share` weights this rank's mean loss (engine.ddp.share_of_global_batch).
        Returns (loss, correct) of the forward at the current weights, on the device."""
        teacher: dict[str, torch.Tensor] = {}
        if self.sam is not None:
            return self.sam.step(lambda: self._forward_backward(x, y, share, teacher), scaler=self.scaler,
                                 grad_clip=self.grad_clip, model=self.model, first_pass=self._first_pass)
        self.optimizer.zero_grad(set_to_none=True)
        result = self._forward_backward(x, y, share, teacher)
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return result


__all__ = ["Batch", "TrainStep", "forward_groups", "hard_labels"]
