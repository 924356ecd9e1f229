"""Section 5: the batched augmentations of the recipes (issue 13) vs torchvision.transforms.v2 per sample.

``augment_ratio_32``
    The engine's DevicePipeline with the ViT recipe's augmentations (crop+flip, RandAugment(2, 9),
    normalisation, Random Erasing 0.25, MixUp 0.8 / CutMix 1.0 with per-image parameters and soft
    targets) vs the same recipe written the usual way: a v2.Compose of RandomCrop, RandomHorizontalFlip,
    RandAugment, ToDtype, Normalize and RandomErasing applied to each image in a Dataset, a torch
    DataLoader with the default collate (the faster of 0 workers and one per core), then v2's
    MixUp or CutMix (one of the two at random) on each batch.  Both deliver a normalised float32
    batch and (B, 100) soft targets on the training device.
``randaugment_ratio_32``
    RandAugment(2, 9) alone on a uint8 batch: engine.data.auto_augment (parameters drawn, then
    applied batched) vs v2.RandAugment called on each image of the same batch.
``train_augment_vs_plain_32``
    The engine's own Trainer on the seed's resnet18_baseline with RandAugment + MixUp/CutMix vs the
    same Trainer without them: one run whose epochs alternate (a TrainerHook switches the pipeline's
    batch augmentation off and on at each epoch's start, in the order A B B A ...), timed per epoch.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

from .common import BenchContext, DetailRow, Section, cpu_count, median, number, rounded, sync
from .training import bench_config, check_exit, make_trainer

RANDAUGMENT = {"policy": "randaugment", "num_ops": 2, "magnitude": 9}
MIXUP = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}
ERASING_P = 0.25


def _window_rate(step: Any, batch: int, min_s: float, device: Any, min_batches: int = 2) -> float:
    """Images/s of `step()` (one batch each) after a warm-up call, for at least min_s seconds."""
    step()
    sync(device)
    count = 0
    t0 = time.perf_counter()
    while True:
        step()
        count += 1
        if count >= min_batches and time.perf_counter() - t0 >= min_s:
            break
    sync(device)
    return count * batch / (time.perf_counter() - t0)


def _batches_rate(batches: Iterator[tuple[Any, Any]], batch: int, min_s: float, device: Any) -> float:
    return _window_rate(lambda: next(batches), batch, min_s, device)


class PerSampleRecipe:
    """The recipe's augmentations per image with torchvision.transforms.v2 (benchmark reference only)."""

    def __init__(self, images: Any, labels: Any, length: int):
        import torch
        from torchvision.transforms import v2

        from engine.data.formats import NORMALIZE_STATS

        mean, std = NORMALIZE_STATS["cifar100"]
        self.images, self.labels, self.length = images, labels, length
        self.transform = v2.Compose([
            v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
            v2.RandAugment(num_ops=RANDAUGMENT["num_ops"], magnitude=RANDAUGMENT["magnitude"]),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
            v2.RandomErasing(p=ERASING_P, value=0),
        ])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        idx = idx % len(self.labels)
        return self.transform(self.images[idx]), self.labels[idx]


def _reference_batches(images: Any, labels: Any, batch: int, workers: int, device: Any,
                       num_classes: int) -> Iterator[tuple[Any, Any]]:
    import torch
    from torchvision.transforms import v2

    mix = v2.RandomChoice([v2.MixUp(alpha=MIXUP["mixup_alpha"], num_classes=num_classes),
                           v2.CutMix(alpha=MIXUP["cutmix_alpha"], num_classes=num_classes)])
    loader = torch.utils.data.DataLoader(PerSampleRecipe(images, labels, 10**7), batch_size=batch, shuffle=False,
                                         num_workers=workers, pin_memory=device.type == "cuda")
    for x, y in loader:
        x, y = mix(x, y)
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _engine_batches(pipe: Any, batch: int) -> Iterator[tuple[Any, Any]]:
    epoch = 0
    while True:
        yield from pipe.train_batches(epoch, 0, batch)
        epoch += 1


def bench_recipe_pipeline(ctx: BenchContext) -> None:
    import torch

    from engine.config import DataConfig
    from engine.data import DevicePipeline, synthetic_dataset

    plan, device, out = ctx.plan, ctx.device, ctx.out
    ds = synthetic_dataset(0, plan.pipeline_images, 0)
    batch = min(plan.pipeline_batch, plan.pipeline_images)
    cfg = DataConfig(source="synthetic", augment="crop_flip", normalize="cifar100", shuffle=True,
                     auto_augment=RANDAUGMENT, erasing={"p": ERASING_P}, mixup=MIXUP)
    pipe = DevicePipeline(ds, cfg, device)
    images, labels = torch.from_numpy(ds.train.images), torch.from_numpy(ds.train.labels).long()
    x_e, y_e = next(pipe.train_batches(0, 0, 4))
    x_r, y_r = next(_reference_batches(images, labels, 4, 0, device, pipe.num_classes))
    if (x_e.dtype, tuple(x_e.shape), tuple(y_e.shape)) != (x_r.dtype, tuple(x_r.shape), tuple(y_r.shape)):
        raise RuntimeError(f"augmented batches differ: engine {x_e.dtype} {tuple(x_e.shape)} {tuple(y_e.shape)}, "
                           f"reference {x_r.dtype} {tuple(x_r.shape)} {tuple(y_r.shape)}")
    workers_options = sorted({0, cpu_count()})
    with ctx.prog.step("augmentation 32x32 (RandAugment, erasing, MixUp/CutMix): engine vs per-sample v2") as note:
        engine: list[float] = []
        ref: dict[int, list[float]] = {w: [] for w in workers_options}
        for _ in range(plan.repeats):
            engine.append(_batches_rate(_engine_batches(pipe, batch), batch, plan.pipeline_min_s, device))
            for w in workers_options:
                gen = _reference_batches(images, labels, batch, w, device, pipe.num_classes)
                try:
                    ref[w].append(_batches_rate(gen, batch, plan.pipeline_min_s, device))
                finally:
                    gen.close()  # shuts the workers down
        ref_med = {w: median(v) for w, v in ref.items()}
        best_w = max(ref_med, key=lambda w: ref_med[w])
        e_med = median(engine)
        out["augment_ratio_32"] = rounded(e_med / ref_med[best_w], 2)
        out["augment_engine_img_per_s_32"] = rounded(e_med, 0)
        out["augment_reference_img_per_s_32"] = rounded(ref_med[best_w], 0)
        out["augment_reference_workers_32"] = best_w
        out["samples"]["augment_engine_32"] = [round(v) for v in engine]
        for w in workers_options:
            out["samples"][f"augment_reference_32_w{w}"] = [round(v) for v in ref[w]]
        note(f"{e_med / ref_med[best_w]:.1f}x ({e_med:,.0f} vs {ref_med[best_w]:,.0f} img/s, reference with "
             f"{best_w} workers)")

    with ctx.prog.step("RandAugment(2, 9) alone 32x32: batched vs v2 per image") as note:
        from torchvision.transforms import v2

        from engine.data import auto_augment

        # uint8 crops as the pipeline hands them over: channels_last, on the device
        x = torch.from_numpy(ds.train.images[:batch]).to(device).contiguous(memory_format=torch.channels_last)
        generator = torch.Generator().manual_seed(0)
        reference = v2.RandAugment(num_ops=RANDAUGMENT["num_ops"], magnitude=RANDAUGMENT["magnitude"])

        def batched() -> None:
            auto_augment.apply(x, auto_augment.draw(generator, batch, "randaugment", num_ops=2, magnitude=9))

        def per_image() -> None:
            torch.stack([reference(image) for image in x])

        ours, theirs = [], []
        for _ in range(plan.repeats):
            ours.append(_window_rate(batched, batch, plan.pipeline_min_s, device))
            theirs.append(_window_rate(per_image, batch, plan.pipeline_min_s, device))
        out["randaugment_ratio_32"] = rounded(median(ours) / median(theirs), 2)
        out["randaugment_engine_img_per_s_32"] = rounded(median(ours), 0)
        out["randaugment_reference_img_per_s_32"] = rounded(median(theirs), 0)
        out["samples"]["randaugment_engine_32"] = [round(v) for v in ours]
        out["samples"]["randaugment_reference_32"] = [round(v) for v in theirs]
        note(f"{median(ours) / median(theirs):.1f}x ({median(ours):,.0f} vs {median(theirs):,.0f} img/s)")


# epochs after the warm-up: A (augmented) and P (plain) in ABBA order, so that a drift in the
# machine's speed weighs on both alike
def _phases(repeats: int) -> str:
    return "".join("AP" if i % 2 == 0 else "PA" for i in range(repeats))


def bench_recipe_training(ctx: BenchContext) -> None:
    from engine.config import config_from_dict
    from engine.hooks import TrainerHook

    plan = ctx.plan
    base = bench_config(plan, ctx.device, 32, plan.train_batch, plan.train_steps, epochs=1 + 2 * plan.repeats)
    raw = base.to_dict()
    raw["data"].update(auto_augment=RANDAUGMENT, mixup=MIXUP, shuffle=True)
    cfg = config_from_dict(raw, "bench config")
    phases = "A" + _phases(plan.repeats)  # the first epoch warms up (augmented)
    rates: dict[str, list[float]] = {"A": [], "P": []}

    class Alternate(TrainerHook):
        def epoch_start(self, trainer: Any) -> None:
            if not hasattr(self, "augment"):
                self.augment = trainer.pipeline.batch_augment
            on = phases[trainer.epoch] == "A"
            trainer.pipeline.batch_augment = self.augment if on else None

    def on_epoch(trainer: Any, elapsed: float, seen: float) -> None:
        if trainer.epoch > 1:
            rates[phases[trainer.epoch - 1]].append(seen / elapsed)

    with ctx.prog.step(f"training {plan.backbone} 32x32 with RandAugment + MixUp/CutMix vs without") as note:
        trainer = make_trainer(cfg, ctx.workdir / "train_augment", on_epoch)
        trainer.hooks.insert(0, Alternate())
        check_exit(trainer.run())
        pairs = [a / p for a, p in zip(rates["A"], rates["P"])]
        ratio = median(pairs)
        ctx.out["train_augment_vs_plain_32"] = rounded(ratio, 3)
        ctx.out["train_augment_img_per_s_32"] = rounded(median(rates["A"]), 1)
        ctx.out["train_plain_img_per_s_32"] = rounded(median(rates["P"]), 1)
        ctx.out["samples"]["train_augment_32"] = [round(v, 1) for v in rates["A"]]
        ctx.out["samples"]["train_plain_32"] = [round(v, 1) for v in rates["P"]]
        note(f"{ratio:.3f} ({median(rates['A']):,.1f} vs {median(rates['P']):,.1f} img/s)")


def run(ctx: BenchContext) -> None:
    with ctx.timed("augment"):
        bench_recipe_pipeline(ctx)
    with ctx.timed("train_augment"):
        bench_recipe_training(ctx)


def augment_details(results: dict) -> list[DetailRow]:
    rows = []
    if results.get("augment_engine_img_per_s_32") is not None:
        rows.append((f"augmentation 32x32 img/s: crop/flip, RandAugment(2, 9), erasing, MixUp/CutMix (reference: "
                     f"v2 per sample, {results.get('augment_reference_workers_32')} workers)",
                     number(results, "augment_engine_img_per_s_32"), number(results, "augment_reference_img_per_s_32")))
    if results.get("randaugment_engine_img_per_s_32") is not None:
        rows.append(("RandAugment(2, 9) alone, 32x32 img/s (reference: v2.RandAugment per image)",
                     number(results, "randaugment_engine_img_per_s_32"),
                     number(results, "randaugment_reference_img_per_s_32")))
    if results.get("train_augment_img_per_s_32") is not None:
        rows.append(("training 32x32 img/s with RandAugment + MixUp/CutMix (reference: without)",
                     number(results, "train_augment_img_per_s_32", ",.1f"),
                     number(results, "train_plain_img_per_s_32", ",.1f")))
    return rows


SECTION = Section("augment", run, augment_details)
