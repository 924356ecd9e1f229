"""Classify image files with a trained run: top classes and probabilities.

An image of any size and common format (PNG, JPEG, BMP, GIF, WebP, TIFF; colour, grayscale,
palette, with alpha) is read with Pillow, turned upright (EXIF), converted to RGB (a
grayscale image repeats its one channel) and brought to CIFAR's 32x32 (area average when
shrinking, bilinear when enlarging; the whole image, no crop). From there it goes through the
run's own test batches: the bilinear resize to ``data.image_size``, the scale to [0, 1] and
the normalisation, exactly as the run's test images did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError
from .data.formats import Dataset, Split
from .run_model import RunModel, class_names, eval_batch_size, eval_pipeline, load_run_model

CIFAR_SIZE = 32


class ImageError(ConfigError):
    """An image file that cannot be read (missing, not an image, damaged)."""


def read_image(path: Path) -> np.ndarray:
    """(3, 32, 32) uint8 RGB of an image file; ImageError naming the file when it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated or damaged file fails here, not later
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits, not a clipped white
                im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), mode="L")
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, GIF, WebP, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{path}: damaged or truncated image ({str(exc).splitlines()[0][:120] or type(exc).__name__})") from None
    if rgb.size != (CIFAR_SIZE, CIFAR_SIZE):
        shrinking = rgb.width >= CIFAR_SIZE and rgb.height >= CIFAR_SIZE
        rgb = rgb.resize((CIFAR_SIZE, CIFAR_SIZE), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


@torch.no_grad()
def image_probabilities(run: RunModel, images: np.ndarray) -> torch.Tensor:
    """Class probabilities (N, C) of uint8 (N, 3, 32, 32) images, through the run's test batches."""
    split = Split(images=images, labels=np.zeros(len(images), dtype=np.int64))
    empty = Split(images=images[:0], labels=split.labels[:0])
    pipeline = eval_pipeline(Dataset(train=empty, test=split, classes=[], source="images"), run.cfg, run.device)
    out = [torch.softmax(run.logits(x), dim=1).float().cpu() for x, _ in pipeline.test_batches(eval_batch_size(run.cfg))]
    return torch.cat(out)


def predict_files(home: Path, data_root: Path, run_id: str, paths: list[Path], *, ckpt: str = "best",
                  device: str = "auto", top: int = 5) -> list[dict[str, Any]]:
    """The `top` classes of each image file. Every file is read before the model is loaded:
    one unreadable file refuses the lot (ImageError) and nothing is predicted."""
    from .trainer import DistInfo, select_device

    images = np.stack([read_image(p) for p in paths])
    run = load_run_model(home, run_id, ckpt, select_device(device, DistInfo()))
    names = class_names(run.cfg, data_root)
    probs = image_probabilities(run, images)
    k = min(top, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [{"image": str(p), "run_id": run.run_id, "ckpt": ckpt,
             "top": [{"index": int(i), "name": names[int(i)] if int(i) < len(names) else str(int(i)), "prob": float(v)}
                     for v, i in zip(values[n], indices[n])]}
            for n, p in enumerate(paths)]
