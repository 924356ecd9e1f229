"""The CIFAR-100 pickle format: the dataset types, safe unpickling and the reader/writer."""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class DataError(Exception):
    """Missing, corrupt or truncated data; ``str(e)`` is one line naming the file and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"  # of the tar.gz
CIFAR100_TGZ = "cifar-100-python.tar.gz"
CIFAR100_FOLDER = "cifar-100-python"
SYNTHETIC_FOLDER = "synthetic-100-python"
_FILES = ("train", "test", "meta")
_STAMP = ".verified"
_IMG_BYTES = 3 * 32 * 32


def _official_md5() -> dict[str, str]:
    # torchvision's CIFAR100 carries the md5s of the extracted files.
    from torchvision.datasets import CIFAR100

    md5 = {name: digest for name, digest in CIFAR100.train_list + CIFAR100.test_list}
    md5[CIFAR100.meta["filename"]] = CIFAR100.meta["md5"]
    return md5


# Per-channel statistics in [0, 1] units.
NORMALIZE_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (N, 3, 32, 32), C-contiguous
    labels: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    classes: list[str]
    source: str  # "cifar100" | "synthetic"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------
# Pickle I/O in the CIFAR-100 format


class _CifarUnpickler(pickle.Unpickler):
    """Only what a CIFAR pickle holds: dicts, lists, bytes, ints and numpy arrays.

    A tampered data folder cannot run code through ``pickle``."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol < 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 without the deprecation shim
        return super().find_class(module, name)


def _read_pickle(path: Path, fix: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing; {fix}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); {fix}") from None
    except MemoryError:
        raise DataError(f"{path}: corrupt pickle (implausible sizes); {fix}") from None
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, ... from a damaged file
        reason = "truncated" if isinstance(exc, EOFError) or "truncated" in str(exc) else "corrupt"
        raise DataError(f"{path}: {reason} pickle ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-100 pickle (a {type(obj).__name__}, expected a dict); {fix}")
    return obj


def _parse_split(path: Path, fix: str, num_classes: int) -> Split:
    obj = _read_pickle(path, fix)
    data = obj.get(b"data")
    labels = obj.get(b"fine_labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: not a CIFAR-100 pickle (needs b'data' and b'fine_labels'); {fix}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMG_BYTES:
        raise DataError(f"{path}: data has shape {data.shape} {data.dtype}, expected (N, 3072) uint8; {fix}")
    try:
        labels_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: fine_labels are not integers; {fix}") from None
    if labels_arr.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels_arr.size} labels; {fix}")
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}; {fix}")
    images = data.reshape(-1, 3, 32, 32)
    if not (images.flags.c_contiguous and images.flags.writeable):
        images = np.array(images, order="C")
    return Split(images=images, labels=labels_arr)


def _parse_meta(path: Path, fix: str) -> list[str]:
    obj = _read_pickle(path, fix)
    names = obj.get(b"fine_label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: not a CIFAR-100 meta file (needs b'fine_label_names'); {fix}")
    out = []
    for n in names:
        if isinstance(n, bytes):
            n = n.decode("utf-8", "replace")
        if not isinstance(n, str):
            raise DataError(f"{path}: fine_label_names holds a {type(n).__name__}, expected strings; {fix}")
        out.append(n)
    return out


def _load_folder(folder: Path, source: str, fix: str) -> Dataset:
    classes = _parse_meta(folder / "meta", fix)
    train = _parse_split(folder / "train", fix, len(classes))
    test = _parse_split(folder / "test", fix, len(classes))
    return Dataset(train=train, test=test, classes=classes, source=source)


def _write_pickle_folder(folder: Path, train: Split, test: Split, classes: list[str], note: str) -> None:
    """Write train/test/meta as CIFAR-100 writes them (bytes keys, (N, 3072) uint8)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name, split in (("train", train), ("test", test)):
            labels = [int(v) for v in split.labels]
            obj = {
                b"filenames": [f"{note}_{name}_{i:05d}.png".encode() for i in range(len(labels))],
                b"batch_label": f"{name} batch 1 of 1 ({note})".encode(),
                b"fine_labels": labels,
                b"coarse_labels": [v // 5 for v in labels],
                b"data": np.ascontiguousarray(split.images.reshape(len(labels), _IMG_BYTES)),
            }
            with open(tmp / name, "wb") as f:
                pickle.dump(obj, f, protocol=4)
        meta = {
            b"fine_label_names": [c.encode() for c in classes],
            b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range((len(classes) + 4) // 5)],
        }
        with open(tmp / "meta", "wb") as f:
            pickle.dump(meta, f, protocol=4)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
