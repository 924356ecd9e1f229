"""Random Erasing on float batches on the training device, with timm's semantics.

timm's ``timm.data.RandomErasing`` (one box per image) is the reference: with probability
``p`` an image gets one box; up to 10 attempts each draw an area fraction uniform in
[min_area, max_area] and a log-uniform aspect ratio in [min_aspect, max_aspect], and the
first attempt whose box fits (h < H and w < W, sides rounded half to even) is placed
uniformly; the box is filled with 0 (``const``), one normal value per channel (``rand``) or
one per pixel (``pixel``), in the normalised space the batch is in.  Every image is erased at
once with a mask; no loop over images.  The draw is on the CPU from a ``torch.Generator``
as fractions (the box is fixed at the image size of the batch); the fill noise comes from a
generator on the batch's device, for the erased images only.  tests/unit/test_mixing.py replays
timm's RandomErasing with the same draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ATTEMPTS = 10
MODES = ("const", "rand", "pixel")


@dataclass(frozen=True)
class EraseDraw:
    """Uniforms per image on the CPU (float64): ``apply`` (n,) < p erases; ``area``, ``aspect``
    (n, ATTEMPTS) the attempts' draws; ``top``, ``left`` (n,) the placement."""

    apply: Tensor
    area: Tensor
    aspect: Tensor
    top: Tensor
    left: Tensor

    def take(self, index: slice | Tensor) -> "EraseDraw":
        return EraseDraw(*(t[index] for t in (self.apply, self.area, self.aspect, self.top, self.left)))


def draw(g: torch.Generator, n: int) -> EraseDraw:
    def u(*shape: int) -> Tensor:
        return torch.rand(shape, generator=g, dtype=torch.float64)

    return EraseDraw(u(n), u(n, ATTEMPTS), u(n, ATTEMPTS), u(n), u(n))


def boxes(params: EraseDraw, height: int, width: int, *, p: float, min_area: float = 0.02,
          max_area: float = 1 / 3, min_aspect: float = 0.3, max_aspect: float | None = None) -> Tensor:
    """(n, 4) int64 boxes (top, left, h, w); h = w = 0 where the image is not erased."""
    max_aspect = max_aspect or 1 / min_aspect
    lo, hi = math.log(min_aspect), math.log(max_aspect)
    area = height * width
    target = (min_area + (max_area - min_area) * params.area) * area       # random.uniform(min, max) * area
    aspect = torch.exp(lo + (hi - lo) * params.aspect)                      # exp(random.uniform(log range))
    h = torch.round(torch.sqrt(target * aspect)).to(torch.int64)            # int(round(...)): half to even
    w = torch.round(torch.sqrt(target / aspect)).to(torch.int64)
    fits = (w < width) & (h < height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)                 # the first attempt that fits
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    erased = (params.apply < p) & fits.any(dim=1)                           # timm: skip when random() > p
    top = (params.top * (height - h + 1)).to(torch.int64)                   # random.randint(0, H - h)
    left = (params.left * (width - w + 1)).to(torch.int64)
    zero = torch.zeros_like(h)
    return torch.stack([torch.where(erased, top, zero), torch.where(erased, left, zero),
                        torch.where(erased, h, zero), torch.where(erased, w, zero)], dim=1)


def fill_values(x: Tensor, mode: str, generator: torch.Generator | None) -> Tensor:
    """What an erased pixel of x becomes, broadcastable to x: 0, N(0, 1) per image and channel, or per pixel."""
    n, c, h, w = x.shape
    if mode == "const":
        return torch.zeros((), dtype=x.dtype, device=x.device)
    shape = (n, c, h, w) if mode == "pixel" else (n, c, 1, 1)
    return torch.empty(shape, dtype=x.dtype, device=x.device).normal_(generator=generator)


def erase(x: Tensor, box: Tensor, mode: str, generator: torch.Generator | None = None) -> Tensor:
    """Erase each image's box (n, 4: top, left, h, w; on the CPU) in place and return x. Only the
    erased images are touched, and only they draw fill noise (from `generator`, in batch order)."""
    n, _, h, w = x.shape
    erased = (box[:, 2] > 0).nonzero().flatten()
    if not erased.numel():
        return x
    packed = torch.cat([erased[:, None], box[erased]], dim=1).to(torch.float32)  # small integers: exact
    if x.device.type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(x.device, non_blocking=True)
    index = packed[:, 0].long()
    top, left, bh, bw = (packed[:, i].view(-1, 1, 1, 1) for i in range(1, 5))
    rows = torch.arange(h, device=x.device, dtype=packed.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=packed.dtype).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
    images = x.index_select(0, index)
    inside = torch.empty_like(images, dtype=torch.bool).copy_(inside.expand_as(images))  # no broadcast: faster
    x.index_copy_(0, index, torch.where(inside, fill_values(images, mode, generator), images))
    return x


__all__ = ["EraseDraw", "MODES", "boxes", "draw", "erase", "fill_values"]
