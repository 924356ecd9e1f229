"""The seed's albumentations recipe: per-image CPU transforms in DataLoader workers, batched output."""
from __future__ import annotations

import os
import random
import warnings
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from .formats import Dataset
from .pipeline import _PipelineBase
from .rng import seed_int

# ---------------------------------------------------------------------------
# The seed's albumentations recipe


def build_seed_augment(p: float) -> Any:
    """The seed's DefaultImageAug: ``A.OneOf([A.ShiftScaleRotate(), A.CoarseDropout(), A.ColorJitter(),
    A.HorizontalFlip(), A.VerticalFlip()], p=p)``, every transform with the library's defaults.

    The seed's Docker image installs albumentations unpinned (``pip install -U`` on
    nvcr.io/nvidia/pytorch:25.03-py3, May 2025), that is the 2.0 series, which pyproject.toml
    pins: a constant black border for ShiftScaleRotate, 1-2 holes of 10-20% of the side for
    CoarseDropout, hue jitter up to 0.5.  OneOf picks one transform (each has p=0.5, so all
    are equally likely) and always applies it."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    import albumentations as A

    with warnings.catch_warnings():  # 2.0 deprecates ShiftScaleRotate in favour of Affine; the seed calls it
        warnings.filterwarnings("ignore", message=".*ShiftScaleRotate is a special case of Affine.*")
        return A.OneOf([A.ShiftScaleRotate(), A.CoarseDropout(), A.ColorJitter(), A.HorizontalFlip(),
                        A.VerticalFlip()], p=p)


class _AlbuTrainSet(torch.utils.data.Dataset):
    """Items are (index, sample_seed); a worker augments a whole batch and returns uint8 NHWC.
    Workers are forked, so they share the parent's arrays without a copy."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, p: float):
        self.images = images_hwc
        self.labels = labels
        self.p = p
        self._aug: Any = None

    def __getstate__(self) -> dict:  # spawn-started workers (not Linux) rebuild the transform
        state = dict(self.__dict__)
        state["_aug"] = None
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def _augment(self, images: np.ndarray, i: int, sample_seed: int) -> np.ndarray:
        if self._aug is None:
            self._aug = build_seed_augment(self.p)
        self._aug.set_random_state(np.random.default_rng(sample_seed), random.Random(sample_seed))
        return self._aug(image=images[i])["image"]

    def __getitem__(self, item: tuple[int, int]) -> tuple[np.ndarray, int]:
        i, s = item
        return self._augment(self.images, i, s), int(self.labels[i])

    def __getitems__(self, items: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        out = np.empty((len(items),) + self.images.shape[1:], dtype=np.uint8)
        for k, (i, s) in enumerate(items):
            out[k] = self._augment(self.images, i, s)
        idx = np.fromiter((i for i, _ in items), dtype=np.int64, count=len(items))
        return torch.from_numpy(out), torch.from_numpy(self.labels[idx])


def _batch_collate(batch: Any) -> Any:
    return batch  # __getitems__ already returns the batch tensors


class _StepSampler:
    """Batch sampler over (index, sample_seed); its plan is set by train_batches each epoch."""

    def __init__(self) -> None:
        self.plan: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def _single_threaded_cv2() -> None:
    """OpenCV's own threads do not help on 32x32 images, and a forked DataLoader worker that
    touches OpenCV's inherited thread pool (even cv2.setNumThreads in the child) can deadlock.
    With threading off in the parent before the fork, workers run cv2 sequentially."""
    import cv2

    cv2.setNumThreads(0)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def worker_position(position: int, batch_size: int, workers: int) -> int:
    """Where the image at ``position`` of an epoch falls in its worker's sequence, in the seed's
    DataLoader: in-order batches go round-robin to ``workers`` workers (worker w gets batches w,
    w + workers, ...), and each worker augments its batches' images one after another."""
    batch, offset = divmod(position, batch_size)
    return (batch // workers) * batch_size + offset


def sample_seeds(cfg: DataConfig, seed: int, epoch: int, indices: list[int], positions: range,
                 batch_size: int) -> list[int]:
    """The seed each image's transform is drawn from (data.augment_seeding).

    ``per_epoch``: from (seed, epoch, image index), new every epoch.
    ``fixed_per_position``: what the seed's code did.  Since albumentations 1.4.21 each transform
    (the OneOf and its five children) keeps its own random.Random and np.random.Generator, seeded
    from OS entropy when it is built, and 2.0 does not reseed them in DataLoader workers.  The
    seed builds its OneOf in the main process and never calls it there; every epoch its DataLoader
    forks ``augment_fixed_workers`` (16) non-persistent workers from that unchanged state, with
    shuffle off.  The five transforms draw the same number of values for every 32x32 image, so
    all workers advance in lockstep: the k-th image a worker augments gets the same transform and
    parameters in every worker and every epoch.  Here that k (:func:`worker_position`) and
    train.seed give the seed, so the same positions share an augmentation as in the seed; its
    values came from OS entropy and cannot be matched."""
    if cfg.augment_seeding == "fixed_per_position":
        return [seed_int(seed, worker_position(p, batch_size, cfg.augment_fixed_workers), tag="albumentations-fixed")
                for p in positions]
    return [seed_int(seed, epoch, i, tag="albumentations") for i in indices]


class AlbumentationsPipeline(_PipelineBase):
    """The seed's per-image CPU recipe (augment: albumentations) in DataLoader workers,
    same interface as DevicePipeline.

    Each image is augmented at 32x32 with a transform reseeded for it (:func:`sample_seeds`: from
    (seed, epoch, index), or from its place in the seed's workers' sequences),
    so batches do not depend on the worker count and resume is exact.  Workers return
    whole uint8 batches; they are pinned (CUDA), moved, then resized to ``image_size``
    (batched, bilinear, on the device), converted and normalised like DevicePipeline.
    Test batches are not augmented (the seed's recipe) and come from the device copy.
    Workers are persistent (started on the first epoch); :meth:`close` stops them.  OpenCV
    threading is switched off in this process (see _single_threaded_cv2)."""

    def __init__(self, dataset: Dataset, cfg: DataConfig, device: Any, *, channels_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        super().__init__(dataset, cfg, device, channels_last=channels_last, rank=rank, world_size=world_size)
        self.num_workers = _cpu_count() if cfg.num_workers < 0 else cfg.num_workers
        images_hwc = np.ascontiguousarray(dataset.train.images.transpose(0, 2, 3, 1))
        self._set = _AlbuTrainSet(images_hwc, dataset.train.labels, cfg.augment_p)
        self._set._aug = build_seed_augment(cfg.augment_p)  # imported once here, inherited by forked workers
        _single_threaded_cv2()
        self._sampler = _StepSampler()
        self._loader: Optional[torch.utils.data.DataLoader] = None

    def _get_loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            workers = self.num_workers
            extra: dict[str, Any] = {}
            if workers > 0:
                extra = dict(
                    # the plan is re-read from the sampler every epoch and each sample carries its
                    # seed, so persistent workers cannot change the batches
                    persistent_workers=True,
                    prefetch_factor=2,
                )
            self._loader = torch.utils.data.DataLoader(
                self._set,
                batch_sampler=self._sampler,
                collate_fn=_batch_collate,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(0),  # keep the global RNG untouched
                **extra,
            )
        return self._loader

    def train_batches(self, epoch: int, seed: int, batch_size: int, start_step: int = 0
                      ) -> Iterator[tuple[Tensor, Tensor]]:
        steps = self.steps_per_epoch(batch_size)
        order = self.epoch_order(epoch, seed)
        ws, r = self.world_size, self.rank
        plan = []
        for step in range(max(0, start_step), steps):
            gidx = self._global_batch(order, step, batch_size).tolist()
            seeds = sample_seeds(self.cfg, seed, epoch, gidx, range(step * batch_size, step * batch_size + len(gidx)),
                                 batch_size)
            plan.append(list(zip(gidx, seeds))[r::ws])
        if not plan:
            return
        self._sampler.plan = plan
        non_blocking = self.device.type == "cuda"
        for x, y in self._get_loader():
            x = x.to(self.device, non_blocking=non_blocking).permute(0, 3, 1, 2)
            y = y.to(self.device, non_blocking=non_blocking)
            yield self._finish(x, self.image_size), y

    def close(self) -> None:
        """Stop the persistent workers (they also stop when the pipeline is garbage-collected)."""
        loader, self._loader = self._loader, None
        it = getattr(loader, "_iterator", None) if loader is not None else None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
