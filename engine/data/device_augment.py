"""The batched augmentations of a training step, in the order a per-sample recipe applies them:

1. RandAugment / TrivialAugmentWide on the uint8 crop (after crop/flip, before resize and
   float conversion): :mod:`engine.data.auto_augment`;
2. Random Erasing on the normalised float batch: :mod:`engine.data.erasing`;
3. MixUp / CutMix on the float batch, turning the labels into soft targets (n, classes):
   :mod:`engine.data.mixing`.  Label smoothing is not folded in here: the loss applies it to
   the soft targets (``F.cross_entropy(..., label_smoothing=s)`` gives exactly timm's
   ``mixup_target(..., smoothing=s)``, the smoothing being linear in the target).

Every random choice of a step is a function of (seed, epoch, step): one CPU generator draws
the parameters of the whole global batch (rank r takes [r::world_size], as the pipeline does
with crops and flips), and the fill noise of ``pixel``/``rand`` erasing comes from a generator
on the device seeded from (seed, epoch, step, rank).  A resumed run therefore sees the same
augmented batches as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from . import auto_augment, erasing, mixing
from .rng import seed_int


@dataclass(frozen=True)
class StepDraw:
    """Everything random about one step's augmentation, on the CPU."""

    auto: Optional[auto_augment.AutoAugmentDraw]
    erase: Optional[erasing.EraseDraw]
    mix: Optional[mixing.MixDraw]

    def take(self, index: slice) -> "StepDraw":
        return StepDraw(*(part.take(index) if part is not None else None for part in (self.auto, self.erase, self.mix)))


class DeviceAugment:
    """Built from a DataConfig (``auto_augment``, ``erasing``, ``mixup``); None when none is on."""

    def __init__(self, cfg, num_classes: int, device: torch.device):
        self.auto_cfg = cfg.auto_augment if cfg.auto_augment.policy != "none" else None
        self.erase_cfg = cfg.erasing if cfg.erasing.p > 0 else None
        self.mix_cfg = cfg.mixup if cfg.mixup.enabled else None
        self.num_classes = num_classes
        self.device = torch.device(device)
        self._noise = torch.Generator(device=self.device) if self.erase_cfg and self.erase_cfg.mode != "const" else None

    @classmethod
    def from_config(cls, cfg, num_classes: int, device: torch.device) -> Optional["DeviceAugment"]:
        aug = cls(cfg, num_classes, device)
        return aug if (aug.auto_cfg or aug.erase_cfg or aug.mix_cfg) else None

    @property
    def soft_targets(self) -> bool:
        """Whether batches come with (n, classes) float targets instead of class indices."""
        return self.mix_cfg is not None

    def draw(self, seed: int, epoch: int, step: int, n: int) -> StepDraw:
        """The parameters of a global batch of n images (a fixed order of draws from one generator)."""
        g = torch.Generator(device="cpu")
        g.manual_seed(seed_int(seed, epoch, step, tag="device-augment"))
        auto = erase = mix = None
        if self.auto_cfg is not None:
            a = self.auto_cfg
            auto = auto_augment.draw(g, n, a.policy, num_ops=a.num_ops, magnitude=a.magnitude,
                                     num_magnitude_bins=a.num_magnitude_bins)
        if self.erase_cfg is not None:
            erase = erasing.draw(g, n)
        if self.mix_cfg is not None:
            m = self.mix_cfg
            mix = mixing.draw(g, n, mixup_alpha=m.mixup_alpha, cutmix_alpha=m.cutmix_alpha, prob=m.prob,
                              switch_prob=m.switch_prob, mode=m.mode)
        return StepDraw(auto, erase, mix)

    def apply(self, x: Tensor, y: Tensor, finish: Callable[[Tensor], Tensor], *, seed: int, epoch: int, step: int,
              global_n: int, rank: int = 0, world_size: int = 1) -> tuple[Tensor, Tensor]:
        """uint8 (n, 3, 32, 32) crop and labels of this rank -> finished float batch and targets.
        ``finish`` is the pipeline's resize/float/normalise step."""
        params = self.draw(seed, epoch, step, global_n).take(slice(rank, None, world_size))
        if params.auto is not None:
            x = auto_augment.apply(x, params.auto)
        x = finish(x)
        if params.erase is not None:
            e = self.erase_cfg
            box = erasing.boxes(params.erase, x.shape[-2], x.shape[-1], p=e.p, min_area=e.min_area,
                                max_area=e.max_area, min_aspect=e.min_aspect, max_aspect=e.max_aspect)
            if self._noise is not None:
                self._noise.manual_seed(seed_int(seed, epoch, step, rank, tag="erase-noise"))
            x = erasing.erase(x, box, self.erase_cfg.mode, self._noise)
        if params.mix is not None:
            x, lam = mixing.mix(x, params.mix, correct_lam=self.mix_cfg.correct_lam)
            y = mixing.mixed_targets(y, lam, self.num_classes)
        return x, y


__all__ = ["DeviceAugment", "StepDraw"]
