"""MixUp and CutMix on float batches on the training device, with timm's semantics.

timm's ``timm.data.Mixup`` is the reference: each image i is mixed with image n-1-i of its
batch (the batch flipped); with both alphas set, CutMix is chosen with ``switch_prob``, else
MixUp; mixing happens at all with probability ``prob``; lambda ~ Beta(alpha, alpha); CutMix
pastes a box of area about (1 - lambda) centred uniformly (clipped at the borders) and,
with ``correct_lam``, lambda becomes the share of the image left unpasted; the targets are
``lam * onehot_smooth(y) + (1 - lam) * onehot_smooth(flip(y))`` with label smoothing
folded in.  ``mode: batch`` draws one set of parameters per batch (timm's default),
``mode: elem`` one per image (timm's ``elem``) -- here without a Python loop over images.

The draw (:func:`draw`) happens on the CPU from a ``torch.Generator``; box centres are drawn
as fractions so that the box is fixed only when the image size is known (a batch may be
resized after the draw).  tests/unit/test_mixing.py checks :func:`mix` against timm's
``Mixup`` given the same parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MixDraw:
    """Per-image parameters (n,) on the CPU: ``lam`` float64 (1 = untouched), ``cutmix`` bool,
    and the box centre as fractions ``cy``/``cx`` in [0, 1)."""

    lam: Tensor
    cutmix: Tensor
    cy: Tensor
    cx: Tensor

    def take(self, index: slice | Tensor) -> "MixDraw":
        return MixDraw(self.lam[index], self.cutmix[index], self.cy[index], self.cx[index])


def _beta(g: torch.Generator, alpha: float, n: int) -> Tensor:
    """Beta(alpha, alpha) samples from `g` (torch's Beta sampler takes no generator)."""
    a = torch._standard_gamma(torch.full((n,), alpha, dtype=torch.float64), generator=g)
    b = torch._standard_gamma(torch.full((n,), alpha, dtype=torch.float64), generator=g)
    return a / (a + b)


def draw(g: torch.Generator, n: int, *, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0,
         switch_prob: float = 0.5, mode: str = "elem") -> MixDraw:
    """timm's _params_per_elem (mode elem) or _params_per_batch (mode batch: one draw shared by
    the batch), drawing in the same order, then the box centres."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mixing needs mixup_alpha > 0 or cutmix_alpha > 0")
    if mode == "elem":
        lam, cutmix = _params_per_elem(g, n, mixup_alpha, cutmix_alpha, prob, switch_prob)
    elif mode == "batch":
        lam, cutmix = (t.expand(n) for t in _params_per_batch(g, mixup_alpha, cutmix_alpha, prob, switch_prob))
    else:
        raise ValueError(f"unknown mixing mode {mode!r} (expected elem or batch)")
    k = n if mode == "elem" else 1
    cy, cx = (torch.rand(k, generator=g, dtype=torch.float64).expand(n) for _ in range(2))
    return MixDraw(lam, cutmix & (lam != 1.0), cy, cx)


def _params_per_elem(g: torch.Generator, n: int, mixup_alpha: float, cutmix_alpha: float, prob: float,
                     switch_prob: float) -> tuple[Tensor, Tensor]:
    if mixup_alpha > 0 and cutmix_alpha > 0:
        cutmix = torch.rand(n, generator=g, dtype=torch.float64) < switch_prob
        lam_mix = torch.where(cutmix, _beta(g, cutmix_alpha, n), _beta(g, mixup_alpha, n))
    elif mixup_alpha > 0:
        cutmix = torch.zeros(n, dtype=torch.bool)
        lam_mix = _beta(g, mixup_alpha, n)
    else:
        cutmix = torch.ones(n, dtype=torch.bool)
        lam_mix = _beta(g, cutmix_alpha, n)
    lam_mix = lam_mix.float().double()  # timm keeps the per-element lambdas in float32
    applied = torch.rand(n, generator=g, dtype=torch.float64) < prob
    return torch.where(applied, lam_mix, torch.ones_like(lam_mix)), cutmix


def _params_per_batch(g: torch.Generator, mixup_alpha: float, cutmix_alpha: float, prob: float,
                      switch_prob: float) -> tuple[Tensor, Tensor]:
    lam, cutmix = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.bool)
    if float(torch.rand(1, generator=g, dtype=torch.float64)) < prob:
        if mixup_alpha > 0 and cutmix_alpha > 0:
            cutmix[0] = float(torch.rand(1, generator=g, dtype=torch.float64)) < switch_prob
            lam = _beta(g, cutmix_alpha if cutmix[0] else mixup_alpha, 1)
        elif mixup_alpha > 0:
            lam = _beta(g, mixup_alpha, 1)
        else:
            cutmix[0] = True
            lam = _beta(g, cutmix_alpha, 1)
    return lam, cutmix


def cutmix_boxes(params: MixDraw, height: int, width: int) -> tuple[Tensor, Tensor]:
    """timm's rand_bbox (+ correct_lam) for every image: boxes (n, 4) int64 (y0, y1, x0, x1)
    and the corrected lambda (n,) float64 (1 - box area / image area)."""
    ratio = torch.sqrt(1.0 - params.lam)
    cut_h, cut_w = (height * ratio).to(torch.int64), (width * ratio).to(torch.int64)
    cy = (params.cy * height).to(torch.int64)  # uniform over 0..H-1, as np.random.randint(0, H)
    cx = (params.cx * width).to(torch.int64)
    y0, y1 = (cy - cut_h // 2).clamp(0, height), (cy + (cut_h + 1) // 2).clamp(0, height)
    x0, x1 = (cx - cut_w // 2).clamp(0, width), (cx + (cut_w + 1) // 2).clamp(0, width)
    lam = 1.0 - ((y1 - y0) * (x1 - x0)).double() / float(height * width)
    return torch.stack([y0, y1, x0, x1], dim=1), lam


def effective_lam(params: MixDraw, height: int, width: int, correct_lam: bool = True) -> Tensor:
    """Each image's share of its own label: lambda, or the corrected one for CutMix."""
    if not correct_lam:
        return params.lam
    _, corrected = cutmix_boxes(params, height, width)
    return torch.where(params.cutmix, corrected, params.lam)


def mix(x: Tensor, params: MixDraw, correct_lam: bool = True) -> tuple[Tensor, Tensor]:
    """Mix a float batch (n, C, H, W) with its flip: returns (mixed batch, each image's share of
    its own label (n,) float32 on x's device). ``params`` live on the CPU: one small
    host-to-device copy, no sync. One pass: ``lerp(flipped, x, weight)`` with a per-pixel weight
    of 0 inside a CutMix box and 1 outside (exact copies), lambda for MixUp, 1 when untouched."""
    n, _, h, w = x.shape
    boxes, _ = cutmix_boxes(params, h, w)
    lam = effective_lam(params, h, w, correct_lam)
    packed = torch.cat([boxes.double(), lam[:, None], params.lam[:, None], params.cutmix.double()[:, None]], dim=1)
    packed = packed.float()  # box corners are small integers: exact in float32
    if x.device.type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(x.device, non_blocking=True)
    y0, y1, x0, x1, _, mix_lam, cut = (packed[:, i].view(n, 1, 1, 1) for i in range(7))
    rows = torch.arange(h, device=x.device, dtype=packed.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=packed.dtype).view(1, 1, 1, w)
    outside = (rows < y0) | (rows >= y1) | (cols < x0) | (cols >= x1)
    weight = torch.where(cut.bool(), outside.to(x.dtype), mix_lam.to(x.dtype))  # (n, 1, H, W)
    # spelled out to x's shape and layout: lerp over a broadcast channel dimension is 10x slower on CPU
    weight = torch.empty_like(x).copy_(weight.expand_as(x))
    out = x.flip(0).lerp_(x, weight)
    return out, packed[:, 4].clone()


def mixed_targets(labels: Tensor, lam: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """timm's mixup_target with a lambda per image: (n, classes) float32 soft targets."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = torch.full((labels.shape[0], num_classes), off, device=labels.device).scatter_(1, labels.view(-1, 1), on)
    lam = lam.view(-1, 1).to(y1.dtype)
    return y1 * lam + y1.flip(0) * (1.0 - lam)


__all__ = ["MixDraw", "cutmix_boxes", "draw", "effective_lam", "mix", "mixed_targets"]
