"""Batches built on the training device: gather, crop, flip, resize, normalise; no per-sample Python."""
from __future__ import annotations

import math
import sys
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import DataConfig
from .device_augment import DeviceAugment
from .formats import NORMALIZE_STATS, Dataset
from .rng import seed_int

# ---------------------------------------------------------------------------
# Batches


def _normalize_affine(mode: str) -> tuple[list[float], list[float]]:
    """(scale, bias) with float = uint8 * scale + bias."""
    mean, std = NORMALIZE_STATS[mode]
    return [1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]


def _resize_uint8_ok(device: torch.device) -> bool:
    """Whether bilinear interpolation takes uint8 (channels_last) on this device."""
    try:
        x = torch.zeros(1, 3, 4, 4, dtype=torch.uint8, device=device).contiguous(memory_format=torch.channels_last)
        y = F.interpolate(x, size=(6, 6), mode="bilinear", align_corners=False, antialias=False)
        return y.dtype == torch.uint8
    except (RuntimeError, NotImplementedError):
        return False


def _uses(t: Tensor) -> tuple[int, int, int]:
    """Python references, TensorImpl references and storage references of ``t``."""
    return sys.getrefcount(t), t._use_count(), torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class _BufferPool:
    """Reuse of large CPU output batches that nobody holds any more.

    A fresh 150 MB float batch (250 x 3 x 224 x 224) costs more in page faults than the
    conversion itself: glibc returns such blocks to the OS on free.  A pooled buffer is
    handed out again only when no Python name, tensor view, autograd graph, numpy array
    or other tensor refers to it or its storage (all three reference counts are back to
    what they were right after it was made).  With the usual ``for x, y in batches``
    loop two buffers alternate.  CUDA needs none of this (caching allocator)."""

    MIN_BYTES = 16 << 20
    SLOTS = 3

    def __init__(self, device: torch.device):
        self.enabled = device.type == "cpu" and hasattr(torch.Tensor, "_use_count") and hasattr(
            torch._C, "_storage_Use_Count")
        self._pools: dict[tuple, list[list[Any]]] = {}

    def get(self, shape: tuple[int, ...], fmt: torch.memory_format) -> Optional[Tensor]:
        if not self.enabled or math.prod(shape) * 4 < self.MIN_BYTES:
            return None
        pool = self._pools.setdefault((shape, fmt), [])
        for entry in pool:
            buf = entry[0]
            if _uses(buf) == entry[1]:
                return buf
        if len(pool) >= self.SLOTS:
            return None
        with torch.inference_mode(False):  # a normal tensor even when made during inference
            buf = torch.empty(shape, dtype=torch.float32, memory_format=fmt)
        entry = [buf, None]
        pool.append(entry)
        entry[1] = _uses(buf)
        return buf


class _BatchFinisher:
    """uint8 (B, 3, H, W) in any layout -> resized, float32, normalised, in the wanted layout."""

    def __init__(self, normalize: str, device: torch.device, channels_last: bool):
        self.device = device
        self.channels_last = channels_last
        self.mode = normalize
        scale, bias = _normalize_affine(normalize)
        self._scale = torch.tensor(scale, dtype=torch.float32, device=device)
        self._bias = torch.tensor(bias, dtype=torch.float32, device=device)
        self._rows: dict[int, tuple[Tensor, Tensor]] = {}
        self.uint8_resize = _resize_uint8_ok(device)
        self._buffers = _BufferPool(device)

    def _row_affine(self, width: int) -> tuple[Tensor, Tensor]:
        # channels_last rows are (W * 3) long with channels interleaved: tile the per-channel
        # constants so that the in-place ops broadcast along a long contiguous inner dim.
        if width not in self._rows:
            self._rows[width] = (self._scale.repeat(width), self._bias.repeat(width))
        return self._rows[width]

    def __call__(self, x: Tensor, size: int, pooled: bool = True) -> Tensor:
        """`pooled=False` for batches whose shape changes from step to step (multi-scale groups):
        a pool per shape would keep buffers for every group size it ever saw."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if x.shape[-1] != size or x.shape[-2] != size:
            if self.uint8_resize:
                x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(size, size),
                                  mode="bilinear", align_corners=False, antialias=False)
            else:
                x = self._to_float(x.contiguous(memory_format=fmt), fmt, pooled)
                return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                     antialias=False).contiguous(memory_format=fmt)
        return self._to_float(x.contiguous(memory_format=fmt), fmt, pooled)

    def _to_float(self, x: Tensor, fmt: torch.memory_format, pooled: bool = True) -> Tensor:
        y = self._buffers.get(tuple(x.shape), fmt) if pooled else None
        if y is None:
            y = x.float()  # keeps the (dense) layout
        else:
            y.copy_(x)
        if self.mode == "none":
            return y.div_(255.0)  # bit-identical to the seed's img.astype(np.float32) / 255.
        b, c, h, w = y.shape
        if fmt == torch.channels_last:
            scale, bias = self._row_affine(w)
            rows = y.permute(0, 2, 3, 1).view(b * h, w * c)
            torch.addcmul(bias, rows, scale, out=rows)  # one in-place pass: rows * scale + bias
        else:
            torch.addcmul(self._bias.view(1, c, 1, 1), y, self._scale.view(1, c, 1, 1), out=y)
        return y


# BatchNorm in training needs more than one value per channel; the margin head's BatchNorm1d
# sees one per image. A scale group smaller than this on any rank is not run on its own.
MIN_SCALE_GROUP = 2


def scale_groups(choice: Tensor, num_sizes: int, world_size: int) -> Tensor:
    """The size group (an index into the sorted train sizes) of each image of a global batch, from
    the per-image draws `choice`.  Rank r trains on images r, r + world_size, ...; every rank
    must run the same forwards (DDP and SyncBN communicate in them), and each forward needs
    MIN_SCALE_GROUP images.  A size that would give some rank fewer of its images than that
    joins the largest size that gives every rank enough (the largest size if none does).
    With the seed's batch of 250 and two sizes this practically never happens."""
    n = choice.shape[0]
    counts = torch.zeros(world_size, num_sizes, dtype=torch.int64)
    counts.index_put_((torch.arange(n) % world_size, choice), torch.ones(n, dtype=torch.int64), accumulate=True)
    enough = counts.min(0).values >= MIN_SCALE_GROUP
    if bool(enough.all()):
        return choice
    kept = enough.nonzero().flatten()
    target = int(kept[-1]) if kept.numel() else num_sizes - 1
    return torch.where(enough[choice], choice, torch.full_like(choice, target))


def _check_batch(batch_size: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if batch_size < world_size:
        raise ValueError(f"batch_size {batch_size} is smaller than world_size {world_size}")


def _to_nhwc(images: np.ndarray, device: torch.device, pad: int) -> Tensor:
    """(N, 3, 32, 32) uint8 numpy -> (N, 32+2p, 32+2p, 3) uint8 on device, zero border."""
    src = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    n, c, h, w = src.shape
    if pad == 0:
        return src.permute(0, 2, 3, 1).contiguous()
    out = torch.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=torch.uint8, device=device)
    out[:, pad:pad + h, pad:pad + w, :] = src.permute(0, 2, 3, 1)
    return out


class _PipelineBase:
    def __init__(self, dataset: Dataset, cfg: DataConfig, device: Any, *, channels_last: bool,
                 rank: int, world_size: int):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} / world_size {world_size} is not a valid pair")
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.num_train = len(dataset.train)
        self.num_test = len(dataset.test)
        self.num_classes = len(dataset.classes)
        self.image_size = cfg.image_size
        self.train_sizes = tuple(sorted(cfg.train_sizes))  # the seed runs the smaller scale first
        self._finish = _BatchFinisher(cfg.normalize, self.device, channels_last)
        self._test_x = _to_nhwc(dataset.test.images, self.device, 0)
        self._test_y = torch.from_numpy(dataset.test.labels).to(self.device)

    # ---- order
    def steps_per_epoch(self, batch_size: int) -> int:
        _check_batch(batch_size, self.world_size)
        steps = math.ceil(self.num_train / batch_size)
        rest = self.num_train % batch_size
        if self.world_size > 1 and 0 < rest < self.world_size:
            steps -= 1  # a last batch too small to give every rank an image is dropped
        return steps

    def epoch_order(self, epoch: int, seed: int) -> Tensor:
        """The permutation (CPU int64) of the train set for this epoch."""
        if not self.cfg.shuffle:
            return torch.arange(self.num_train, dtype=torch.int64)
        g = torch.Generator(device="cpu")
        g.manual_seed(seed_int(seed, epoch, tag="epoch-order"))
        return torch.randperm(self.num_train, generator=g)

    def _global_batch(self, order: Tensor, step: int, batch_size: int) -> Tensor:
        return order[step * batch_size:(step + 1) * batch_size]

    # ---- test
    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Sequential; each global batch of ``batch_size`` is split [rank::world_size].
        A rank whose share of the (short) last batch is empty skips it."""
        _check_batch(batch_size, 1)
        ws, r = self.world_size, self.rank
        for start in range(0, self.num_test, batch_size):
            end = min(start + batch_size, self.num_test)
            xs = self._test_x[start + r:end:ws]
            if xs.shape[0] == 0:
                continue
            ys = self._test_y[start + r:end:ws]
            yield self._finish(xs.permute(0, 3, 1, 2), self.image_size), ys

    def num_test_batches(self, batch_size: int) -> int:
        """Batches this rank gets from :meth:`test_batches`."""
        n = 0
        for start in range(0, self.num_test, batch_size):
            if min(start + batch_size, self.num_test) - start > self.rank:
                n += 1
        return n


class DevicePipeline(_PipelineBase):
    """GPU/CPU-resident batches: the uint8 dataset is moved to `device` once; crop/flip,
    resize to the image size and normalisation run batched there. No per-sample Python."""

    def __init__(self, dataset: Dataset, cfg: DataConfig, device: Any, *, channels_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        super().__init__(dataset, cfg, device, channels_last=channels_last, rank=rank, world_size=world_size)
        if cfg.augment == "albumentations":
            raise ValueError("augment: albumentations runs in AlbumentationsPipeline (use make_pipeline)")
        self.augment = cfg.augment
        self.pad = cfg.crop_padding if cfg.augment == "crop_flip" else 0
        self._train_x = _to_nhwc(dataset.train.images, self.device, self.pad)  # (N, Hp, Wp, 3)
        self._train_y = torch.from_numpy(dataset.train.labels).to(self.device)
        hp = 32 + 2 * self.pad
        self._pixels = self._train_x.view(-1, 3)  # one row per padded pixel
        self._ar = torch.arange(32, dtype=torch.int64, device=self.device)
        self._plane = hp * hp
        self._row = hp
        # int32 indices are faster to build and read; the padded dataset must fit in them
        self._index_dtype = torch.int32 if self._pixels.shape[0] < 2**31 else torch.int64
        # RandAugment / Random Erasing / MixUp-CutMix (engine/data/device_augment.py); None when off
        self.batch_augment = DeviceAugment.from_config(cfg, self.num_classes, self.device)

    def _step_params(self, seed: int, epoch: int, step: int, n: int
                     ) -> tuple[Optional[Tensor], Tensor, Tensor, Tensor]:
        """Size groups (multi-scale only, else None), crop offsets and flips for a whole global
        batch of n, from (seed, epoch, step). Each image's size is drawn uniformly from the train
        sizes, as the seed's CIFAR100DatasetMultiScale does (np.random.rand() < 0.5 per image)."""
        g = torch.Generator(device="cpu")
        g.manual_seed(seed_int(seed, epoch, step, tag="step"))
        groups = None
        if self.train_sizes:
            choice = torch.randint(len(self.train_sizes), (n,), generator=g)
            groups = scale_groups(choice, len(self.train_sizes), self.world_size)
        if self.augment == "crop_flip":
            oy = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
            ox = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
        else:
            oy = ox = torch.zeros(n, dtype=torch.int64)
        if self.augment in ("flip", "crop_flip"):
            flip = torch.randint(0, 2, (n,), generator=g)
        else:
            flip = torch.zeros(n, dtype=torch.int64)
        return groups, oy, ox, flip

    def _gather(self, idx: Tensor, oy: Tensor, ox: Tensor, flip: Tensor) -> Tensor:
        """One indexed copy: crop at (oy, ox) of the padded image, mirrored where flip == 1.
        Returns (B, 3, 32, 32) uint8 in channels_last layout."""
        b = idx.shape[0]
        if self.augment == "none":
            return self._train_x.index_select(0, idx).permute(0, 3, 1, 2)
        ar = self._ar
        rows = (idx * self._plane)[:, None] + (oy[:, None] + ar) * self._row  # (B, 32) first pixel of each row
        cols = ox[:, None] + torch.where(flip[:, None].bool(), 31 - ar, ar)  # (B, 32)
        rows, cols = rows.to(self._index_dtype), cols.to(self._index_dtype)
        flat = (rows[:, :, None] + cols[:, None, :]).view(-1)
        return self._pixels.index_select(0, flat).view(b, 32, 32, 3).permute(0, 3, 1, 2)

    def train_batches(self, epoch: int, seed: int, batch_size: int, start_step: int = 0
                      ) -> Iterator[tuple[Tensor | tuple[Tensor, ...], Tensor]]:
        """(x, y) per step of this rank. With train_sizes x is a tuple, one tensor per size group
        (smallest size first, empty groups left out) and y the labels in the same order."""
        steps = self.steps_per_epoch(batch_size)
        order = self.epoch_order(epoch, seed)
        ws, r = self.world_size, self.rank
        for step in range(max(0, start_step), steps):
            gidx = self._global_batch(order, step, batch_size)
            groups, oy, ox, flip = self._step_params(seed, epoch, step, gidx.shape[0])
            packed = torch.stack([gidx, oy, ox, flip])[:, r::ws]
            counts = None
            if groups is not None:  # this rank's images, grouped by size (stable: batch order within a group)
                local = groups[r::ws]
                packed = packed[:, torch.argsort(local, stable=True)]
                counts = torch.bincount(local, minlength=len(self.train_sizes)).tolist()
            if self.device.type == "cuda":  # pinned + non_blocking: no host sync per step
                packed = packed.pin_memory().to(self.device, non_blocking=True)
            else:
                packed = packed.to(self.device)
            idx, oy, ox, flip = packed.unbind(0)
            x = self._gather(idx, oy, ox, flip)
            y = self._train_y.index_select(0, idx)
            if counts is not None:
                yield tuple(self._finish(part, size, pooled=False)
                            for part, size in zip(x.split(counts), self.train_sizes) if part.shape[0]), y
            elif self.batch_augment is not None:  # targets are (n, classes) soft targets with mixup on
                yield self.batch_augment.apply(x, y, lambda u8: self._finish(u8, self.image_size), seed=seed,
                                               epoch=epoch, step=step, global_n=gidx.shape[0], rank=r, world_size=ws)
            else:
                yield self._finish(x, self.image_size), y


class EvalPipeline(_PipelineBase):
    """Test batches only (evaluation after training, predict, export parity): the very code
    the trainer's evaluation runs, without copying a training set to the device."""
