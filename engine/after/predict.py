"""Classify image files with a trained run: top classes and probabilities.

Each file is read at CIFAR's 32x32 (engine/after/images.py); from there it goes through the run's
own test batches: the bilinear resize to ``data.image_size``, the scale to [0, 1] and the
normalisation, exactly as the run's test images did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.formats import Dataset, Split
from .images import read_image
from .run_model import RunModel, class_names, eval_batch_size, eval_pipeline, load_run_model


@torch.no_grad()
def image_probabilities(run: RunModel, images: np.ndarray) -> torch.Tensor:
    """Class probabilities (N, C) of uint8 (N, 3, 32, 32) images, through the run's test batches."""
    split = Split(images=images, labels=np.zeros(len(images), dtype=np.int64))
    empty = Split(images=images[:0], labels=split.labels[:0])
    pipeline = eval_pipeline(Dataset(train=empty, test=split, classes=[], source="images"), run.cfg, run.device)
    out = [torch.softmax(run.logits(x), dim=1).float().cpu() for x, _ in pipeline.test_batches(eval_batch_size(run.cfg))]
    return torch.cat(out)


def predict_files(home: Path, data_root: Path, run_id: str, paths: list[Path], *,
                  ckpt: str = "best", device: str = "auto", top: int = 5) -> list[dict[str, Any]]:
    """The `top` classes of each image file. Every file is read before the model is loaded:
    one unreadable file refuses the lot (ImageError) and nothing is predicted."""
    from ..ddp import DistInfo, select_device

    images = [(str(p), read_image(p)) for p in paths]
    run = load_run_model(home, run_id, ckpt, select_device(device, DistInfo()))
    names = class_names(run.cfg, data_root)
    probs = image_probabilities(run, np.stack([image for _, image in images]))
    k = min(top, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [{"image": name, "run_id": run.run_id, "ckpt": ckpt,
             "top": [{"index": int(i), "name": names[int(i)] if int(i) < len(names) else str(int(i)), "prob": float(v)}
                     for v, i in zip(values[n], indices[n])]}
            for n, (name, _) in enumerate(images)]
