"""A deterministic, learnable CIFAR-100-shaped data set, generated locally."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .formats import SYNTHETIC_FOLDER, DataError, Dataset, Split, _write_pickle_folder
from .rng import seed_int

# ---------------------------------------------------------------------------
# Synthetic data

_SYN_CHUNK = 2500
_SYN_CLASSES = 100


def _syn_palette() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class factors: blob colour (10), blob place (10, on a ring), background tint+stripes (per class)."""
    blob_rgb = np.array(
        [[230, 40, 40], [40, 200, 60], [50, 70, 235], [235, 220, 40], [220, 50, 220],
         [40, 220, 230], [245, 140, 20], [120, 40, 160], [245, 245, 245], [20, 20, 20]],
        dtype=np.float32,
    )
    ang = np.arange(10) * (2 * np.pi / 10)
    places = np.stack([16 + 9.5 * np.sin(ang), 16 + 9.5 * np.cos(ang)], 1).astype(np.float32)  # (y, x)
    rng = np.random.default_rng(20240501)
    bg_rgb = rng.uniform(80, 175, size=(_SYN_CLASSES, 3)).astype(np.float32)
    return blob_rgb, places, bg_rgb


def _synthetic_chunk(seed: int, split: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of _SYN_CHUNK images (balanced classes), a function of (seed, split, chunk) only."""
    n = _SYN_CHUNK
    rng = np.random.default_rng(seed_int(seed, split, chunk, tag="synthetic"))
    blob_rgb, places, bg_rgb = _syn_palette()
    labels = rng.permutation(np.arange(n) % _SYN_CLASSES).astype(np.int64)
    colour, place = labels % 10, labels // 10
    f32 = np.float32
    coords = np.arange(32, dtype=f32)
    # Blob: a soft-edged disk at a class-specific place (+-2 px jitter) in a class-specific colour.
    cy = places[place, 0] + rng.uniform(-2, 2, n).astype(f32)
    cx = places[place, 1] + rng.uniform(-2, 2, n).astype(f32)
    r = rng.uniform(4.0, 6.5, n).astype(f32)
    d2 = ((coords[None, :] - cy[:, None]) ** 2)[:, :, None] + ((coords[None, :] - cx[:, None]) ** 2)[:, None, :]
    mask = (r * r)[:, None, None] - d2
    mask /= (2 * r)[:, None, None]
    mask += f32(0.5)
    np.clip(mask, 0, 1, out=mask)  # (n, 32, 32), ~1 px soft edge
    # Background: class tint + low-frequency stripes (class orientation, random phase) + noise.
    theta = (labels * 37 % 100).astype(f32) * f32(np.pi / 100)
    freq = f32(2 * np.pi * 1.5 / 32)
    phase = rng.uniform(0, 2 * np.pi, n).astype(f32)
    a = (np.cos(theta) * freq)[:, None] * coords[None, :] + phase[:, None]  # along x
    b = (np.sin(theta) * freq)[:, None] * coords[None, :]  # along y
    field = np.sin(a)[:, None, :] * np.cos(b)[:, :, None]
    field += np.cos(a)[:, None, :] * np.sin(b)[:, :, None]
    field *= rng.uniform(15, 35, n).astype(f32)[:, None, None]
    field *= 1 - mask
    noise = np.frombuffer(rng.bytes(field.size), dtype=np.uint8).reshape(field.shape)
    field += noise.astype(f32) * f32(56 / 255) - f32(28)  # luminance noise, +-28
    bright = rng.uniform(0.8, 1.2, (n, 1)).astype(f32)
    bg = bg_rgb[labels] * bright + rng.normal(0, 18, (n, 3)).astype(f32)
    fg = blob_rgb[colour] * bright
    img = np.multiply(mask[:, None], (fg - bg)[:, :, None, None])  # (n, 3, 32, 32)
    img += field[:, None]
    img += bg[:, :, None, None]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), labels


def _synthetic_split(seed: int, split: int, n: int) -> Split:
    images = np.empty((n, 3, 32, 32), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    for chunk, start in enumerate(range(0, n, _SYN_CHUNK)):
        m = min(_SYN_CHUNK, n - start)
        x, y = _synthetic_chunk(seed, split, chunk)
        images[start:start + m], labels[start:start + m] = x[:m], y[:m]
    return Split(images=images, labels=labels)


def _synthetic_classes() -> list[str]:
    return [f"class_{i:03d}" for i in range(_SYN_CLASSES)]


def synthetic_dataset(seed: int = 0, n_train: int = 50000, n_test: int = 10000) -> Dataset:
    """The synthetic set in memory.  Image i depends only on (seed, split, i): asking for
    fewer images gives a prefix of the full set."""
    return Dataset(
        train=_synthetic_split(seed, 0, n_train),
        test=_synthetic_split(seed, 1, n_test),
        classes=_synthetic_classes(),
        source="synthetic",
    )


def write_synthetic(root: Path, seed: int = 0, n_train: int = 50000, n_test: int = 10000) -> Path:
    """Write the synthetic set to ``root/synthetic-100-python/{train,test,meta}`` in the
    CIFAR-100 pickle format; return the folder."""
    root = Path(root)
    folder = root / SYNTHETIC_FOLDER
    ds = synthetic_dataset(seed, n_train, n_test)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_pickle_folder(folder, ds.train, ds.test, ds.classes, note=f"synthetic-seed{seed}")
    except OSError as exc:
        raise DataError(f"{folder}: cannot write the synthetic set ({exc.strerror or exc})") from None
    return folder
