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
    The seed's per-image CPU recipe (``A.OneOf([...], p)``) in DataLoader workers;
    each worker returns a whole uint8 batch; resize/float/normalise are the same
    batched code as above (the resize to ``image_size`` runs batched on the device
    after collation, where the seed resized each image with cv2 bilinear).

Sharding (DDP): ``batch_size`` is the global batch; rank r takes ``[r::world_size]`` of
every global batch, with the crop/flip/size drawn for the global batch, so the union of
the ranks' batches is exactly the single-process batch.  A last global batch smaller than
``world_size`` is dropped (every rank must step together).  Test batches are split the
same way; a rank whose share of the short last test batch is empty skips it.

Randomness never touches the global RNGs.  The epoch order is a function of
``(seed, epoch)``; everything random inside a step is a function of
``(seed, epoch, step)`` (device pipeline) or ``(seed, epoch, sample index)``
(albumentations).  Starting at ``(epoch, start_step)`` therefore reproduces the
batches of an uninterrupted run exactly: there is no RNG state to checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DataConfig

__all__ = [
    "AlbumentationsPipeline",
    "CIFAR100_FOLDER",
    "CIFAR100_MD5",
    "CIFAR100_TGZ",
    "CIFAR100_URL",
    "DataError",
    "Dataset",
    "DevicePipeline",
    "NORMALIZE_STATS",
    "SYNTHETIC_FOLDER",
    "Split",
    "download_cifar100",
    "load_dataset",
    "make_pipeline",
    "verify_cifar100",
    "write_synthetic",
]


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


# ---------------------------------------------------------------------------
# Checksums


def _md5(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(str(path))


def _hint(root: Path) -> str:
    return (f"run `cifar-tui data download` or place the official archive at {root / CIFAR100_TGZ}")


def _read_stamp(folder: Path) -> dict:
    try:
        obj = json.loads((folder / _STAMP).read_text())
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_stamp(folder: Path, stamp: dict) -> None:
    tmp = folder / f"{_STAMP}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        tmp.write_text(json.dumps(stamp, sort_keys=True))
        os.replace(tmp, folder / _STAMP)
    except OSError:  # a read-only data folder only costs a re-hash next time
        try:
            tmp.unlink()
        except OSError:
            pass


def _check_files(folder: Path, root: Path, expected: dict[str, str], use_stamp: bool) -> None:
    """md5 of each extracted file; the stamp skips files whose size+mtime+md5 were seen before."""
    stamp = _read_stamp(folder) if use_stamp else {}
    new_stamp = {}
    for name in _FILES:
        path = folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DataError(f"{path}: file is missing; delete {folder} and {_hint(root)}") from None
        want = expected[name]
        seen = stamp.get(name)
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": want}
        if seen == key:
            new_stamp[name] = key
            continue
        got = _md5(path)
        if got != want:
            raise DataError(
                f"{path}: checksum mismatch (expected md5 {want}, got {got}); delete it and {_hint(root)}"
            )
        new_stamp[name] = key
    if new_stamp != stamp:
        _write_stamp(folder, new_stamp)


# ---------------------------------------------------------------------------
# Download / extract


def _check_archive_members(tgz: Path) -> None:
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if (
                    not parts
                    or parts[0] != CIFAR100_FOLDER
                    or Path(m.name).is_absolute()
                    or ".." in parts
                    or not (m.isfile() or m.isdir())
                ):
                    raise DataError(f"{tgz}: unexpected archive member {m.name!r}; expected only {CIFAR100_FOLDER}/...")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{tgz}: not a readable tar.gz ({exc}); delete it and run `cifar-tui data download`") from None


def _extract(tgz: Path, root: Path, expected: dict[str, str]) -> Path:
    """Extract into a temporary folder, check the files, then move into place."""
    from torchvision.datasets.utils import extract_archive

    _check_archive_members(tgz)
    folder = root / CIFAR100_FOLDER
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR100_FOLDER}.extract-", dir=root))
    except OSError as exc:
        raise DataError(f"{root}: cannot extract here ({exc.strerror or exc})") from None
    try:
        try:
            extract_archive(str(tgz), str(tmp))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{tgz}: cannot extract ({exc}); delete it and run `cifar-tui data download`") from None
        got = tmp / CIFAR100_FOLDER
        for name in _FILES:
            if not (got / name).is_file():
                raise DataError(
                    f"{tgz}: archive has no {CIFAR100_FOLDER}/{name}; delete it and run `cifar-tui data download`"
                )
        try:
            _check_files(got, root, expected, use_stamp=False)
        except DataError as exc:
            raise DataError(f"{tgz}: extracted files do not match ({exc})") from None
        if folder.exists() and _folder_ok(folder, root, expected):
            return folder  # another process (a DDP rank) extracted it meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(got, folder)
        except OSError:
            if not _folder_ok(folder, root, expected):
                raise DataError(f"{folder}: cannot move the extracted files into place; delete it and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _folder_ok(folder: Path, root: Path, expected: dict[str, str]) -> bool:
    try:
        _check_files(folder, root, expected, use_stamp=True)
        return True
    except DataError:
        return False


def _tgz_ok(tgz: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(tgz), md5)


_DOWNLOAD_LOCK = threading.Lock()


def _resolve_host(url: str, timeout: float) -> None:
    """DNS is not covered by socket timeouts: resolve in a thread and give up after ``timeout``."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        raise OSError("no host in URL")
    result: dict[str, BaseException] = {}

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            result["error"] = exc

    t = threading.Thread(target=lookup, daemon=True, name="cifar-tui-dns")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise OSError(f"name lookup for {host} timed out after {timeout:g} s")
    if "error" in result:
        raise OSError(f"name lookup for {host} failed: {result['error']}")


def _fetch(url: str, dest: Path, progress: bool, timeout: float) -> None:
    """Copy ``url`` to ``dest`` (file:// by copy; http(s) through torchvision's download_url)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        src = Path(urllib.request.url2pathname(parts.path))
        shutil.copyfile(src, dest)
        return
    if parts.scheme not in ("http", "https"):
        raise OSError(f"unsupported URL scheme {parts.scheme!r}")
    import torchvision.datasets.utils as tvu

    _resolve_host(url, timeout)
    with _DOWNLOAD_LOCK:
        old_timeout = socket.getdefaulttimeout()
        old_tqdm = tvu.tqdm
        socket.setdefaulttimeout(timeout)  # download_url has no timeout argument
        if not progress:
            tvu.tqdm = _SilentTqdm  # download_url always draws a tqdm bar (to stderr)
        try:
            tvu.download_url(url, str(dest.parent), filename=dest.name, md5=None)
        finally:
            socket.setdefaulttimeout(old_timeout)
            tvu.tqdm = old_tqdm


class _SilentTqdm:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_SilentTqdm":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


def _one_line(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None else exc) or type(exc).__name__
    return " ".join(text.split())


def download_cifar100(
    root: Path,
    url: str = CIFAR100_URL,
    md5: str = CIFAR100_MD5,
    progress: bool = True,
    timeout: float = 10.0,
    *,
    expected_md5: Optional[dict[str, str]] = None,
) -> Path:
    """Make ``root/cifar-100-python`` hold verified ``train``/``test``/``meta``; return that folder.

    Nothing is downloaded when the folder already verifies, or when a verified
    ``root/cifar-100-python.tar.gz`` is there (it is just extracted).  The download
    goes to ``<archive>.part`` and only replaces the archive once its md5 matches.
    ``expected_md5`` (tests) overrides the official md5s of the extracted files.
    """
    root = Path(root)
    expected = dict(expected_md5) if expected_md5 else _official_md5()
    folder = root / CIFAR100_FOLDER
    tgz = root / CIFAR100_TGZ
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{root}: cannot create the data folder ({exc.strerror or exc})") from None
    if folder.is_dir():
        try:
            _check_files(folder, root, expected, use_stamp=True)
            return folder
        except DataError:
            pass  # re-extract (or re-download) below; the folder is replaced only by a verified one
    if not (tgz.is_file() and _tgz_ok(tgz, md5)):
        part = tgz.with_name(tgz.name + ".part")
        try:
            _fetch(url, part, progress, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure is a one-line DataError
            _unlink(part)
            raise DataError(
                f"cannot download {url} ({_one_line(exc)}); place {CIFAR100_TGZ} "
                f"(or the extracted {CIFAR100_FOLDER}/ folder) in {root} by hand"
            ) from None
        if not _tgz_ok(part, md5):
            got = _md5(part) if part.is_file() else "nothing"
            _unlink(part)
            raise DataError(
                f"{url}: downloaded file has md5 {got}, expected {md5}; try again later or place "
                f"{CIFAR100_TGZ} (or the extracted {CIFAR100_FOLDER}/ folder) in {root} by hand"
            )
        os.replace(part, tgz)
    return _extract(tgz, root, expected)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _ensure_cifar100(root: Path, verify: bool, expected_md5: Optional[dict[str, str]]) -> Path:
    folder = root / CIFAR100_FOLDER
    tgz = root / CIFAR100_TGZ
    expected = dict(expected_md5) if expected_md5 else _official_md5()
    if not folder.is_dir():
        if not tgz.is_file():
            raise DataError(
                f"{folder}: CIFAR-100 not found; run `cifar-tui data download` (or `--data synthetic` to try "
                f"without it), or place the official archive at {tgz}"
            )
        # the archive md5 is official unless the caller passes its own (key "cifar-100-python.tar.gz");
        # with custom md5s only the extracted files are checked
        tgz_md5 = expected.get(CIFAR100_TGZ) if expected_md5 else CIFAR100_MD5
        if tgz_md5 and not _tgz_ok(tgz, tgz_md5):
            raise DataError(
                f"{tgz}: checksum mismatch (expected md5 {tgz_md5}, got {_md5(tgz)}); delete it and "
                f"run `cifar-tui data download`"
            )
        _extract(tgz, root, expected)
    elif verify:
        _check_files(folder, root, expected, use_stamp=True)
    return folder


def verify_cifar100(root: Path, expected_md5: Optional[dict[str, str]] = None) -> dict:
    """Re-hash ``root/cifar-100-python/{train,test,meta}`` and read them.

    Returns ``{"train": 50000, "test": 10000, "classes": 100}`` (the counts found).
    A missing folder is extracted from a verified archive when one is present."""
    root = Path(root)
    folder = _ensure_cifar100(root, verify=False, expected_md5=expected_md5)
    expected = dict(expected_md5) if expected_md5 else _official_md5()
    _check_files(folder, root, expected, use_stamp=False)
    ds = _load_folder(folder, "cifar100", f"delete {folder} and {_hint(root)}")
    return {"train": len(ds.train), "test": len(ds.test), "classes": len(ds.classes)}


# ---------------------------------------------------------------------------
# Synthetic data

_SYN_CHUNK = 2500
_SYN_CLASSES = 100


def _seed_int(*values: int, tag: str = "") -> int:
    """A 63-bit seed from integers: stable across processes, platforms and Python versions."""
    h = hashlib.blake2b(digest_size=8, person=b"cifar-tui-data")
    h.update(tag.encode())
    for v in values:
        h.update(int(v).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


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
    rng = np.random.default_rng(_seed_int(seed, split, chunk, tag="synthetic"))
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


# ---------------------------------------------------------------------------
# Loading


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

    def __call__(self, x: Tensor, size: int) -> Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if x.shape[-1] != size or x.shape[-2] != size:
            if self.uint8_resize:
                x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(size, size),
                                  mode="bilinear", align_corners=False, antialias=False)
            else:
                x = self._to_float(x.contiguous(memory_format=fmt), fmt)
                return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                     antialias=False).contiguous(memory_format=fmt)
        return self._to_float(x.contiguous(memory_format=fmt), fmt)

    def _to_float(self, x: Tensor, fmt: torch.memory_format) -> Tensor:
        y = self._buffers.get(tuple(x.shape), fmt)
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
        self.train_sizes = tuple(cfg.train_sizes)
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
        g.manual_seed(_seed_int(seed, epoch, tag="epoch-order"))
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

    def _step_params(self, seed: int, epoch: int, step: int, n: int) -> tuple[int, Tensor, Tensor, Tensor]:
        """Size, crop offsets and flips for a whole global batch of n, from (seed, epoch, step)."""
        g = torch.Generator(device="cpu")
        g.manual_seed(_seed_int(seed, epoch, step, tag="step"))
        size = self.image_size
        if self.train_sizes:
            size = self.train_sizes[int(torch.randint(len(self.train_sizes), (1,), generator=g))]
        if self.augment == "crop_flip":
            oy = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
            ox = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
        else:
            oy = ox = torch.zeros(n, dtype=torch.int64)
        if self.augment in ("flip", "crop_flip"):
            flip = torch.randint(0, 2, (n,), generator=g)
        else:
            flip = torch.zeros(n, dtype=torch.int64)
        return size, oy, ox, flip

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
                      ) -> Iterator[tuple[Tensor, Tensor]]:
        steps = self.steps_per_epoch(batch_size)
        order = self.epoch_order(epoch, seed)
        ws, r = self.world_size, self.rank
        for step in range(max(0, start_step), steps):
            gidx = self._global_batch(order, step, batch_size)
            size, oy, ox, flip = self._step_params(seed, epoch, step, gidx.shape[0])
            packed = torch.stack([gidx, oy, ox, flip])[:, r::ws]
            if self.device.type == "cuda":  # pinned + non_blocking: no host sync per step
                packed = packed.pin_memory().to(self.device, non_blocking=True)
            else:
                packed = packed.to(self.device)
            idx, oy, ox, flip = packed.unbind(0)
            x = self._gather(idx, oy, ox, flip)
            y = self._train_y.index_select(0, idx)
            yield self._finish(x, size), y


# ---------------------------------------------------------------------------
# The seed's albumentations recipe


def _build_seed_aug(p: float) -> Any:
    """``A.OneOf([ShiftScaleRotate, CoarseDropout, ColorJitter, HorizontalFlip, VerticalFlip], p)``.

    albumentations 2.x changed several defaults; the seed ran 1.x, so the 1.x defaults are
    spelled out: ShiftScaleRotate reflect-101 border, CoarseDropout 8 holes of 8x8 px,
    ColorJitter hue 0.2."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    import albumentations as A
    import cv2

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ShiftScaleRotate is a special case of Affine.*")
        if hasattr(A, "ShiftScaleRotate"):
            ssr = A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=45,
                                     interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101)
        else:  # the documented equivalent
            ssr = A.Affine(translate_percent={"x": (-0.0625, 0.0625), "y": (-0.0625, 0.0625)},
                           scale=(0.9, 1.1), rotate=(-45, 45),
                           interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101)
        try:
            drop = A.CoarseDropout(num_holes_range=(8, 8), hole_height_range=(8, 8), hole_width_range=(8, 8), fill=0)
        except TypeError:  # albumentations 1.x names
            drop = A.CoarseDropout(max_holes=8, max_height=8, max_width=8)
        jitter = A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2)
        return A.OneOf([ssr, drop, jitter, A.HorizontalFlip(), A.VerticalFlip()], p=p)


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
            self._aug = _build_seed_aug(self.p)
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


class AlbumentationsPipeline(_PipelineBase):
    """The seed's per-image CPU recipe (augment: albumentations) in DataLoader workers,
    same interface as DevicePipeline.

    Each image is augmented at 32x32 with a transform reseeded from (seed, epoch, index),
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
        self._set._aug = _build_seed_aug(cfg.augment_p)  # imported once here, inherited by forked workers
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
            gidx = self._global_batch(order, step, batch_size)[r::ws].tolist()
            plan.append([(i, _seed_int(seed, epoch, i, tag="albumentations")) for i in gidx])
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


def make_pipeline(dataset: Dataset, cfg: DataConfig, device: Any, *, channels_last: bool = True,
                  rank: int = 0, world_size: int = 1) -> DevicePipeline | AlbumentationsPipeline:
    cls = AlbumentationsPipeline if cfg.augment == "albumentations" else DevicePipeline
    return cls(dataset, cfg, device, channels_last=channels_last, rank=rank, world_size=world_size)
