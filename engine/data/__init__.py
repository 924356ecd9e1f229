"""Data: CIFAR-100 (download, verify, load) and a learnable synthetic stand-in, and
the batch pipelines the trainer consumes.

Sources
-------
``cifar100``
    The official python pickle archive ``cifar-100-python.tar.gz`` (files ``train``,
    ``test``, ``meta``), downloaded with :func:`download_cifar100` or placed by hand
    under the data root.  Extracted files are md5-checked against torchvision's
    official checksums; the result is cached in ``cifar-100-python/.verified``
    (size + mtime per file) so that later runs do not re-hash 180 MB.
``synthetic``
    Deterministic CIFAR-100-shaped data (50000/10000 images, 3x32x32 uint8, 100
    classes) generated in memory, or read from ``synthetic-100-python/`` written by
    :func:`write_synthetic` in the same pickle format as CIFAR-100.  Every class has
    a coloured blob at a class-specific place and colour over a tinted, striped
    background with noise: a small CNN learns it in a few epochs; no single pixel
    separates the classes.

Pipelines
---------
:class:`DevicePipeline`
    The uint8 dataset lives on the training device (copied once, as NHWC with the crop
    padding already in place).  Each step gathers the batch with one indexed copy that
    also does the random crop (zero padding) and horizontal flip, resizes on uint8
    (channels_last; float where the device has no uint8 bilinear) when the size is not
    32, then converts to float and normalises in place (``x / 255`` exactly for
    ``normalize: none``, one fused ``x * scale + bias`` pass otherwise).  No per-sample
    Python.  On CPU, large output batches (224x224) are recycled once nothing refers to
    them any more (see _BufferPool): a fresh 150 MB batch costs more in page faults
    than the conversion itself.
:class:`AlbumentationsPipeline`
    The seed's per-image CPU recipe (``A.OneOf([...], p)``, the bare transforms with the
    albumentations 2.0 defaults) in DataLoader workers;
    each worker returns a whole uint8 batch; resize/float/normalise are the same
    batched code as above (the resize to ``image_size`` runs batched on the device
    after collation, where the seed resized each image with cv2 bilinear).

Multi-scale (``train_sizes``, the seed's mst): each image of a global batch gets a size drawn
from the train sizes; a step yields ``x`` as a tuple with one tensor per size group (smallest
first) and ``y`` as the labels in that order, and the trainer runs one forward per group.  A
size that would leave some rank fewer than 2 images of it joins a larger group for that step
(see pipeline.scale_groups), so every rank runs the same forwards.

Sharding (DDP): ``batch_size`` is the global batch; rank r takes ``[r::world_size]`` of
every global batch, with the crop/flip/sizes drawn for the global batch, so the union of
the ranks' batches is exactly the single-process batch.  A last global batch smaller than
``world_size`` is dropped (every rank must step together).  Test batches are split the
same way; a rank whose share of the short last test batch is empty skips it.

Randomness never touches the global RNGs.  The epoch order is a function of
``(seed, epoch)``; everything random inside a step is a function of
``(seed, epoch, step)`` (device pipeline) or ``(seed, epoch, sample index)``
(albumentations; with ``augment_seeding: fixed_per_position``, ``(seed, place in the seed's
DataLoader worker's sequence)``, the same every epoch).  Starting at ``(epoch, start_step)``
therefore reproduces the batches of an uninterrupted run exactly: there is no RNG state to
checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import DataConfig
from .archive import _ensure_cifar100, _hint, download_cifar100, verify_cifar100
from .formats import (
    CIFAR100_FOLDER,
    CIFAR100_MD5,
    CIFAR100_TGZ,
    CIFAR100_URL,
    NORMALIZE_STATS,
    SYNTHETIC_FOLDER,
    DataError,
    Dataset,
    Split,
    _load_folder,
)
from .pipeline import DevicePipeline, EvalPipeline
from .seed_augment import AlbumentationsPipeline, build_seed_augment
from .synthetic import synthetic_dataset, write_synthetic

__all__ = [
    "AlbumentationsPipeline",
    "build_seed_augment",
    "CIFAR100_FOLDER",
    "CIFAR100_MD5",
    "CIFAR100_TGZ",
    "CIFAR100_URL",
    "DataError",
    "Dataset",
    "DevicePipeline",
    "EvalPipeline",
    "NORMALIZE_STATS",
    "SYNTHETIC_FOLDER",
    "Split",
    "download_cifar100",
    "load_dataset",
    "make_pipeline",
    "synthetic_dataset",
    "verify_cifar100",
    "write_synthetic",
]


def _limit(split: Split, n: int) -> Split:
    if n <= 0 or n >= len(split):
        return split
    # copy, so that a small subset does not keep the full arrays alive
    return Split(images=split.images[:n].copy(), labels=split.labels[:n].copy())


def load_dataset(
    cfg: DataConfig,
    data_root: Path,
    *,
    verify: bool = True,
    expected_md5: Optional[dict[str, str]] = None,
) -> Dataset:
    """Load ``cfg.source`` from ``cfg.root`` (when set) or ``data_root``, then apply the limits."""
    root = Path(cfg.root) if cfg.root else Path(data_root)
    if cfg.source == "synthetic":
        folder = root / SYNTHETIC_FOLDER
        if folder.is_dir():
            ds = _load_folder(folder, "synthetic", f"delete {folder} or run `cifar-tui data synth` again")
        else:
            ds = synthetic_dataset(
                0,
                cfg.train_limit if cfg.train_limit else 50000,
                cfg.test_limit if cfg.test_limit else 10000,
            )
    elif cfg.source == "cifar100":
        folder = _ensure_cifar100(root, verify, expected_md5)
        ds = _load_folder(folder, "cifar100", f"delete {folder} and {_hint(root)}")
    else:  # pragma: no cover - DataConfig validates the literal
        raise DataError(f"data.source: unknown source {cfg.source!r}")
    return Dataset(
        train=_limit(ds.train, cfg.train_limit),
        test=_limit(ds.test, cfg.test_limit),
        classes=ds.classes,
        source=ds.source,
    )


def make_pipeline(dataset: Dataset, cfg: DataConfig, device: Any, *, channels_last: bool = True,
                  rank: int = 0, world_size: int = 1) -> DevicePipeline | AlbumentationsPipeline:
    cls = AlbumentationsPipeline if cfg.augment == "albumentations" else DevicePipeline
    return cls(dataset, cfg, device, channels_last=channels_last, rank=rank, world_size=world_size)
