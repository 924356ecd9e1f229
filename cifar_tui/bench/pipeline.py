"""Section 1: the engine's data pipeline vs a per-sample loader written like the seed's.

The engine's DevicePipeline (the seed's settings: augment none, normalize none; also crop_flip)
vs :class:`SeedStyleDataset` behind a torch DataLoader with the default collate, at 32x32 and
224x224.  Both sides deliver the same thing: a float32 (B, 3, S, S) batch in [0, 1] on the
training device.  The reference gets its fairest setting: the faster of 0 workers and one
worker per core.  The reference loader is benchmark code only; it is never used for training.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Optional

import numpy as np

from .common import BenchContext, DetailRow, Section, cpu_count, median, number, rounded, sync

_CV2: Any = None


def _imresize(img: np.ndarray, size: int) -> np.ndarray:
    """The seed's cb.imresize: cv2.resize, bilinear (PIL bilinear when OpenCV is missing)."""
    global _CV2
    if _CV2 is None:
        try:
            import cv2

            _CV2 = cv2
        except ImportError:
            _CV2 = False
    if _CV2:
        return _CV2.resize(img, (size, size), interpolation=_CV2.INTER_LINEAR)
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


class SeedStyleDataset:
    """The seed's per-sample pipeline (CIFAR100DatasetSimple with return_tensor=True): the
    pickle's (N, 3072) uint8 rows -> per image: transpose (C,H,W)->(H,W,C) -> resize ->
    transpose back -> float32 / 255; labels as int64 arrays.  Benchmark reference only.

    ``length`` may exceed the number of images (indices wrap) so that a timing window
    never runs out of samples."""

    def __init__(self, data: np.ndarray, labels: list[int], image_size: int, length: Optional[int] = None):
        self.images = data.reshape(-1, 3, 32, 32)  # as the seed does after pickle.load
        self.labels = labels
        self.image_size = image_size
        self.length = length or len(labels)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        idx = idx % len(self.labels)
        img = self.images[idx]
        label = self.labels[idx]
        img = np.transpose(img, (1, 2, 0))  # (C, H, W) -> (H, W, C)
        img = _imresize(img, self.image_size)
        img = np.transpose(img, (2, 0, 1))  # (H, W, C) -> (C, H, W)
        img = img.astype(np.float32) / 255.
        label = np.array(label, dtype=np.int64)
        return img, label


def _rate(batches: Iterator[tuple[Any, Any]], min_s: float, device: Any, min_batches: int = 2) -> float:
    """Images/s over batches after the first (warm-up), for at least min_s seconds."""
    next(batches)
    sync(device)
    n = count = 0
    t0 = time.perf_counter()
    while True:
        x, _ = next(batches)
        n += x.shape[0]
        count += 1
        if count >= min_batches and time.perf_counter() - t0 >= min_s:
            break
    sync(device)
    return n / (time.perf_counter() - t0)


def _engine_batches(pipe: Any, batch: int) -> Iterator[tuple[Any, Any]]:
    epoch = 0
    while True:
        yield from pipe.train_batches(epoch, 0, batch)
        epoch += 1


def _reference_batches(data: np.ndarray, labels: list[int], size: int, batch: int, workers: int,
                       device: Any) -> Iterator[tuple[Any, Any]]:
    import torch

    ds = SeedStyleDataset(data, labels, size, length=10**7)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    non_blocking = device.type == "cuda"
    for x, y in loader:
        yield x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)


def _check_same_output(pipe: Any, data: np.ndarray, labels: list[int], size: int, device: Any) -> None:
    """Both sides deliver the same kind of batch (and the same pixels at 32x32)."""
    import torch

    x_e, _ = next(pipe.train_batches(0, 0, 4))
    x_r, _ = next(_reference_batches(data, labels, size, 4, 0, device))
    if x_e.dtype != x_r.dtype or tuple(x_e.shape) != tuple(x_r.shape) or x_e.device != x_r.device:
        raise RuntimeError(f"pipeline outputs differ: engine {x_e.dtype} {tuple(x_e.shape)} {x_e.device}, "
                           f"reference {x_r.dtype} {tuple(x_r.shape)} {x_r.device}")
    if size == 32 and not torch.equal(x_e.float(), x_r.float()):
        raise RuntimeError("pipeline outputs differ at 32x32 (engine vs seed-style reference)")


def bench_pipeline(ctx: BenchContext) -> None:
    from engine.config import DataConfig
    from engine.data import DevicePipeline, synthetic_dataset

    plan, device, out, prog = ctx.plan, ctx.device, ctx.out, ctx.prog
    try:
        import cv2

        cv2.setNumThreads(0)  # forked DataLoader workers must not inherit OpenCV's thread pool (deadlocks)
        out["reference_resize"] = f"cv2.resize INTER_LINEAR (opencv {cv2.__version__})"
    except ImportError:
        out["reference_resize"] = "PIL bilinear"
    ds = synthetic_dataset(0, plan.pipeline_images, 0)
    data = ds.train.images.reshape(len(ds.train), -1)  # the pickle's (N, 3072) rows
    labels = [int(v) for v in ds.train.labels]         # the pickle's list of ints
    workers_options = sorted({0, cpu_count()})
    batch = min(plan.pipeline_batch, plan.pipeline_images)
    out["pipeline_batch"] = batch
    out["reference_workers_tried"] = workers_options
    for size in plan.pipeline_sizes:
        with prog.step(f"data pipeline {size}x{size}: engine vs seed-style loader") as note:
            variants = {"none": DevicePipeline(ds, DataConfig(source="synthetic", image_size=size, augment="none",
                                                              normalize="none", shuffle=False), device)}
            if plan.pipeline_crop_flip and size == 32:
                variants["crop_flip"] = DevicePipeline(ds, DataConfig(source="synthetic", image_size=size,
                                                                      augment="crop_flip", normalize="none",
                                                                      shuffle=False), device)
            _check_same_output(variants["none"], data, labels, size, device)
            engine: dict[str, list[float]] = {k: [] for k in variants}
            ref: dict[int, list[float]] = {w: [] for w in workers_options}
            for _ in range(plan.repeats):
                for name, pipe in variants.items():
                    engine[name].append(_rate(_engine_batches(pipe, batch), plan.pipeline_min_s, device))
                for w in workers_options:
                    gen = _reference_batches(data, labels, size, batch, w, device)
                    try:
                        ref[w].append(_rate(gen, plan.pipeline_min_s, device))
                    finally:
                        gen.close()  # shuts the workers down
            ref_med = {w: median(v) for w, v in ref.items()}
            best_w = max(ref_med, key=lambda w: ref_med[w])
            e_med = median(engine["none"])
            ratio = e_med / ref_med[best_w]
            out[f"pipeline_ratio_{size}"] = rounded(ratio, 2)
            out[f"pipeline_engine_img_per_s_{size}"] = rounded(e_med, 0)
            out[f"pipeline_reference_img_per_s_{size}"] = rounded(ref_med[best_w], 0)
            out[f"pipeline_reference_workers_{size}"] = best_w
            for w in workers_options:
                out[f"pipeline_reference_img_per_s_{size}_w{w}"] = rounded(ref_med[w], 0)
            out["samples"][f"pipeline_engine_{size}"] = [round(v) for v in engine["none"]]
            for w in workers_options:
                out["samples"][f"pipeline_reference_{size}_w{w}"] = [round(v) for v in ref[w]]
            if "crop_flip" in engine:
                cf = median(engine["crop_flip"])
                out[f"pipeline_crop_flip_img_per_s_{size}"] = rounded(cf, 0)
                out[f"pipeline_crop_flip_ratio_{size}"] = rounded(cf / ref_med[best_w], 2)
                out["samples"][f"pipeline_crop_flip_{size}"] = [round(v) for v in engine["crop_flip"]]
            out["pipeline_uint8_resize"] = bool(variants["none"]._finish.uint8_resize)
            note(f"{ratio:.1f}x ({e_med:,.0f} vs {ref_med[best_w]:,.0f} img/s, reference with {best_w} workers)")
            del variants


def pipeline_details(results: dict) -> list[DetailRow]:
    rows = []
    for size in (32, 224):
        if results.get(f"pipeline_engine_img_per_s_{size}") is not None:
            rows.append((f"pipeline {size}x{size} img/s (reference: {results.get(f'pipeline_reference_workers_{size}')} workers)",
                         number(results, f"pipeline_engine_img_per_s_{size}"),
                         number(results, f"pipeline_reference_img_per_s_{size}")))
    if results.get("pipeline_crop_flip_img_per_s_32") is not None:
        rows.append(("pipeline 32x32 img/s with crop_flip", number(results, "pipeline_crop_flip_img_per_s_32"),
                     number(results, "pipeline_reference_img_per_s_32")))
    return rows


def run(ctx: BenchContext) -> None:
    with ctx.timed("pipeline"):
        bench_pipeline(ctx)


SECTION = Section("pipeline", run, pipeline_details)
