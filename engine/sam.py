"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021)
around any torch optimizer (SGD, AdamW), with gradient clipping and a GradScaler.

One step is two forward/backward passes:

1. gradients g at the weights w (under DDP without the all-reduce: each rank perturbs with its
   own batch, the paper's m-sharpness);
2. w is moved to w + e, e = rho * g / ||g|| (ASAM: e = rho * w^2 g / ||w g||, the scale of each
   weight taken out); the gradients at w + e are computed (BatchNorm running statistics left as
   they were after pass 1);
3. w is put back exactly (a saved copy, not w + e - e), then the base optimizer steps with the
   pass-2 gradients: unscaled, clipped, skipped by the scaler when they are not finite.

e does not depend on the gradients' scale, so the pass-1 gradients are used as the scaler left
them (no unscale, no host sync); a non-finite pass-1 gradient gives e = 0 (pass 2 then runs at w).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ContextManager, Iterator, Optional

import torch
from torch import nn


class SAM:
    def __init__(self, optimizer: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False,
                 eps: float = 1e-12):
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.base = optimizer
        self.rho, self.adaptive, self.eps = rho, adaptive, eps
        self._saved: Optional[tuple[list[torch.Tensor], list[torch.Tensor]]] = None

    # the base optimizer's face, so that schedulers and checkpoints treat SAM like it
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)

    def _with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.base.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def perturb(self) -> None:
        """w <- w + e from the current gradients (scaled or not)."""
        params = self._with_grad()
        if not params:
            return
        grads = [p.grad for p in params]
        directed = torch._foreach_mul(grads, [p.abs() for p in params]) if self.adaptive else grads
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(directed)).float())
        scale = torch.where(torch.isfinite(norm), self.rho / (norm + self.eps), torch.zeros_like(norm))
        steps = torch._foreach_mul(directed, [p.abs() for p in params]) if self.adaptive else \
            [g.clone() for g in grads]
        torch._foreach_mul_(steps, scale)
        for s in steps:  # inf * 0 when pass 1 overflowed: no perturbation then
            torch.nan_to_num_(s, nan=0.0, posinf=0.0, neginf=0.0)
        self._saved = (params, [p.detach().clone() for p in params])
        torch._foreach_add_(params, steps)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by perturb()."""
        if self._saved is not None:
            params, originals = self._saved
            torch._foreach_copy_(params, originals)
            self._saved = None

    def step(self, forward_backward: Callable[[], Any], *, scaler: Optional[torch.amp.GradScaler] = None,
             grad_clip: Optional[float] = None, model: Optional[nn.Module] = None,
             first_pass: Callable[[], ContextManager] = nullcontext) -> Any:
        """One SAM step. ``forward_backward()`` runs forward, loss and the (scaled) backward, and
        returns what the caller wants to keep from pass 1 (its loss and outputs): that is returned.
        ``model``: its BatchNorm running statistics are not updated in pass 2. ``first_pass``:
        a context for pass 1, e.g. DDP's ``no_sync``."""
        self.base.zero_grad(set_to_none=True)
        with first_pass():
            result = forward_backward()
        self.perturb()
        self.base.zero_grad(set_to_none=True)
        with frozen_batchnorm_stats(model) if model is not None else nullcontext():
            forward_backward()
        self.restore()
        params = [p for group in self.base.param_groups for p in group["params"]]
        if scaler is not None:
            scaler.unscale_(self.base)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if scaler is not None:
            scaler.step(self.base)
            scaler.update()
        else:
            self.base.step()
        return result


_NORMS = (nn.modules.batchnorm._BatchNorm,)


@contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers still normalise with batch statistics but leave their running ones alone."""
    saved = []
    for m in model.modules():
        if isinstance(m, _NORMS) and m.track_running_stats and m.training:
            saved.append((m, m.momentum))
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


__all__ = ["SAM", "frozen_batchnorm_stats"]
