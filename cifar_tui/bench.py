"""`cifar-tui bench`: throughput figures, each a ratio against its reference measured in
the same process, several repeats, medians reported, the device named.

1. Data pipeline images/s: the engine's DevicePipeline (the seed's settings: augment none,
   normalize none; also crop_flip) vs a per-sample loader written like the seed's
   (:class:`SeedStyleDataset` behind a torch DataLoader with the default collate), at 32x32
   and 224x224.  Both sides deliver the same thing: a float32 (B, 3, S, S) batch in [0, 1]
   on the training device.  The reference gets its fairest setting: the faster of 0 workers
   and one worker per core.
2. Training images/s of resnet18 (the seed's resnet18_baseline settings) end to end through
   the engine's own Trainer (its real `_train_epoch`: pipeline, forward, loss, backward, clip,
   step, schedule, running sums, step events) vs the model-only ceiling: the same model,
   optimizer, batch, precision and memory format on a pre-staged batch (forward + loss +
   backward + clip + step, as the seed).  Engine and ceiling epochs alternate.
3. The same training with a live TUI attached (a real :class:`~cifar_tui.app.CifarTUI` in
   a separate process, headless through ``App.run_test()``, its run tab open and tailing the
   events) vs headless (events written, nothing reading them).  Phases alternate (ABBA).
4. Start-up wall time of ``cifar-tui --help``, ``cifar-tui list`` (fresh processes) and of the
   TUI's first screen: a fresh ``cifar-tui`` in tmux until the experiments table is on screen
   (headless ``run_test()`` in a fresh process when tmux is missing).

The reference loader is benchmark code only; it is never used for training.
Timing goals live here and in docs/BENCHMARKS.md, never in tests.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from engine.config import ConfigError

__all__ = ["BenchPlan", "GOALS_CPU", "GOALS_GPU", "REQUIRED_KEYS", "SeedStyleDataset", "goals_for",
           "render_bench", "run_bench"]

REQUIRED_KEYS = ("device", "pipeline_ratio_32", "pipeline_ratio_224", "train_vs_ceiling_32", "train_img_per_s_32",
                 "tui_vs_headless", "help_s", "list_s", "tui_first_screen_s")

# (key, label, comparison, goal); ">=" goals are ratios, "<=" goals are seconds.
GOALS_CPU: list[tuple[str, str, str, float]] = [
    ("pipeline_ratio_32", "data pipeline vs seed-style loader, 32x32", ">=", 5.0),
    ("pipeline_ratio_224", "data pipeline vs seed-style loader, 224x224", ">=", 2.0),
    ("train_vs_ceiling_32", "resnet18 training vs model-only ceiling, 32x32", ">=", 0.95),
    ("train_vs_ceiling_224", "resnet18 training vs model-only ceiling, 224x224", ">=", 0.95),
    ("tui_vs_headless", "training with the TUI attached vs headless", ">=", 0.98),
    ("help_s", "`cifar-tui --help` wall time (s)", "<=", 0.5),
    ("list_s", "`cifar-tui list` wall time (s)", "<=", 0.5),
    ("tui_first_screen_s", "TUI first screen (s)", "<=", 1.5),
]
GOALS_GPU: list[tuple[str, str, str, float]] = [
    (k, label, op, {"pipeline_ratio_32": 10.0, "pipeline_ratio_224": 10.0, "train_vs_ceiling_224": 0.9}.get(k, goal))
    for k, label, op, goal in GOALS_CPU
]


def goals_for(device_type: str) -> list[tuple[str, str, str, float]]:
    return GOALS_GPU if device_type == "cuda" else GOALS_CPU


@dataclass(frozen=True)
class BenchPlan:
    """Sizes, steps and repeats of one benchmark run (quick, full, or tiny for tests)."""

    repeats: int = 5                       # pipeline windows and engine/ceiling epoch pairs
    sections: tuple[str, ...] = ("startup", "pipeline", "train", "tui")
    # 1. pipeline
    pipeline_sizes: tuple[int, ...] = (32, 224)
    pipeline_batch: int = 250              # the seed's batch
    pipeline_images: int = 10000           # synthetic train images both sides read from
    pipeline_min_s: float = 1.0            # each timing window runs at least this long
    pipeline_crop_flip: bool = True        # also time the engine with crop_flip at 32
    # 2. training
    backbone: str = "resnet18"
    train_batch: int = 250                 # the seed's batch
    train_steps: int = 4                   # steps per timed epoch (engine and ceiling alike)
    train_224: Optional[bool] = True       # None: on a GPU only (quick mode)
    train_224_batch: int = 32              # CPU (about 1 s a step); a GPU uses train_batch
    train_224_steps: int = 2
    train_224_repeats: int = 3
    # 3. TUI attached vs headless: one epoch of tui_steps per phase, "H"/"T" alternating
    tui_steps: int = 8
    tui_phases: str = "HTTHHTTH"
    tui_settle_s: float = 1.0              # after the TUI has attached, before timing
    # 4. start-up
    startup_repeats: int = 7
    tui_screen_repeats: int = 5

    @classmethod
    def full(cls) -> "BenchPlan":
        return cls()

    @classmethod
    def quick(cls) -> "BenchPlan":
        return cls(repeats=3, pipeline_images=5000, pipeline_min_s=0.5, train_steps=3, tui_steps=3,
                   tui_phases="HTTHHT", startup_repeats=5, tui_screen_repeats=3, train_224=None)

    def for_device(self, device_type: str) -> "BenchPlan":
        """A GPU runs a step in milliseconds: more steps per timed epoch (same meaning)."""
        if device_type != "cuda":
            return self
        return replace(self, train_steps=max(self.train_steps, 40), train_224_steps=max(self.train_224_steps, 10),
                       tui_steps=max(self.tui_steps, 200))

    def wants_224_training(self, device_type: str) -> bool:
        return device_type == "cuda" if self.train_224 is None else self.train_224

    @classmethod
    def tiny(cls) -> "BenchPlan":
        """Seconds, for tests: every code path, meaningless numbers."""
        return cls(repeats=2, pipeline_sizes=(32, 48), pipeline_batch=32, pipeline_images=256, pipeline_min_s=0.05,
                   backbone="test_resnet", train_batch=8, train_steps=2, train_224=False, tui_steps=2, tui_phases="HT", tui_settle_s=0.2,
                   startup_repeats=1, tui_screen_repeats=1)


# ---------------------------------------------------------------------------------------
# The reference: a per-sample loader written like the seed's CIFAR100DatasetSimple


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


# ---------------------------------------------------------------------------------------
# Helpers


_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def _median(values: list[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> Optional[list[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resolve_device(device: str) -> Any:
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d{1,2}|mps", device or ""):
        raise ConfigError(f"--device: {device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    from engine.trainer import DistInfo, select_device

    try:
        return select_device(device, DistInfo())
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("train.device:", "--device:", 1)) from None


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({_cpu_count()} cores)"


def _cli_command() -> list[str]:
    exe = Path(sys.executable).parent / "cifar-tui"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cifar_tui"]


def _cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of a process (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class _Progress:
    """One Rich progress line per measurement (on stderr), or nothing."""

    def __init__(self, enabled: bool):
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                                     TimeElapsedColumn(), console=Console(stderr=True))

    def __enter__(self) -> "_Progress":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    @contextmanager
    def step(self, description: str) -> Iterator[Callable[[str], None]]:
        """Yields ``note(text)``: the line's text once the measurement is done."""
        result = {"text": ""}

        def note(text: str) -> None:
            result["text"] = text

        if self.progress is None:
            yield note
            return
        task = self.progress.add_task(description, total=1)
        try:
            yield note
        except BaseException:
            self.progress.update(task, description=f"{description}: [red]failed[/]")
            raise
        done = f"{description}: [bold]{result['text']}[/]" if result["text"] else description
        self.progress.update(task, completed=1, description=done)


# ---------------------------------------------------------------------------------------
# 1. data pipeline


def _rate(batches: Iterator[tuple[Any, Any]], min_s: float, device: Any, min_batches: int = 2) -> float:
    """Images/s over batches after the first (warm-up), for at least min_s seconds."""
    next(batches)
    _sync(device)
    n = count = 0
    t0 = time.perf_counter()
    while True:
        x, _ = next(batches)
        n += x.shape[0]
        count += 1
        if count >= min_batches and time.perf_counter() - t0 >= min_s:
            break
    _sync(device)
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


def _bench_pipeline(plan: BenchPlan, device: Any, out: dict, prog: _Progress) -> None:
    from engine.config import DataConfig
    from engine.data import DevicePipeline, synthetic_dataset

    try:
        import cv2

        cv2.setNumThreads(0)  # forked DataLoader workers must not inherit OpenCV's thread pool (deadlocks)
        out["reference_resize"] = f"cv2.resize INTER_LINEAR (opencv {cv2.__version__})"
    except ImportError:
        out["reference_resize"] = "PIL bilinear"
    ds = synthetic_dataset(0, plan.pipeline_images, 0)
    data = ds.train.images.reshape(len(ds.train), -1)  # the pickle's (N, 3072) rows
    labels = [int(v) for v in ds.train.labels]         # the pickle's list of ints
    workers_options = sorted({0, _cpu_count()})
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
            ref_med = {w: _median(v) for w, v in ref.items()}
            best_w = max(ref_med, key=lambda w: ref_med[w])
            e_med = _median(engine["none"])
            ratio = e_med / ref_med[best_w]
            out[f"pipeline_ratio_{size}"] = _round(ratio, 2)
            out[f"pipeline_engine_img_per_s_{size}"] = _round(e_med, 0)
            out[f"pipeline_reference_img_per_s_{size}"] = _round(ref_med[best_w], 0)
            out[f"pipeline_reference_workers_{size}"] = best_w
            for w in workers_options:
                out[f"pipeline_reference_img_per_s_{size}_w{w}"] = _round(ref_med[w], 0)
            out["samples"][f"pipeline_engine_{size}"] = [round(v) for v in engine["none"]]
            for w in workers_options:
                out["samples"][f"pipeline_reference_{size}_w{w}"] = [round(v) for v in ref[w]]
            if "crop_flip" in engine:
                cf = _median(engine["crop_flip"])
                out[f"pipeline_crop_flip_img_per_s_{size}"] = _round(cf, 0)
                out[f"pipeline_crop_flip_ratio_{size}"] = _round(cf / ref_med[best_w], 2)
                out["samples"][f"pipeline_crop_flip_{size}"] = [round(v) for v in engine["crop_flip"]]
            out["pipeline_uint8_resize"] = bool(variants["none"]._finish.uint8_resize)
            note(f"{ratio:.1f}x ({e_med:,.0f} vs {ref_med[best_w]:,.0f} img/s, reference with {best_w} workers)")
            del variants


# ---------------------------------------------------------------------------------------
# 2./3. training through the engine's Trainer


def _bench_config(plan: BenchPlan, device: Any, image_size: int, batch: int, steps: int, epochs: int,
                  precision: Optional[str] = None) -> Any:
    """The seed's resnet18_baseline (from configs/ when present), on synthetic data."""
    from engine.config import config_from_dict, load_config

    overrides = {
        "data.source": "synthetic", "data.root": None, "data.image_size": image_size,
        "data.train_limit": batch * steps, "data.test_limit": batch, "model.backbone": plan.backbone,
        "model.pretrained": False, "model.weights": None, "train.batch_size": batch, "train.epochs": epochs,
        "train.device": str(device), "train.compile": False, "train.checkpoint_every": 1000,
    }
    if precision:
        overrides["train.precision"] = precision
    try:
        cfg = load_config("resnet18_baseline")
        raw = cfg.to_dict()
    except ConfigError:
        raw = {"name": "resnet18_baseline", "data": {"augment": "none", "normalize": "none", "shuffle": False},
               "optim": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 1e-3},
               "schedule": {"name": "multistep", "interval": "step", "milestones": [100000, 200000], "gamma": 0.316},
               "train": {"precision": "fp32", "grad_clip": 5.0, "seed": 0}}
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_from_dict(raw, "bench config")


def _make_trainer(cfg: Any, home: Path, hook: Callable[[Any, float, float], None]) -> Any:
    """A Trainer whose epochs are timed (device-synchronised) and do not evaluate or checkpoint:
    everything inside an epoch is the engine's own `_train_epoch`."""
    from engine.paths import new_run_id
    from engine.trainer import Trainer

    class BenchTrainer(Trainer):
        def _train_epoch(self) -> bool:
            _sync(self.device)
            self._bench_t0 = time.perf_counter()
            return super()._train_epoch()

        def _finish_epoch(self, train_s: float) -> bool:
            _sync(self.device)
            elapsed = time.perf_counter() - self._bench_t0
            loss_sum, correct, seen = self.partial.tolist()
            self.epoch += 1
            self.step_in_epoch = 0
            self.partial.zero_()
            if self.info.is_main:
                record = {"epoch": self.epoch, "train_loss": loss_sum / max(seen, 1),
                          "train_acc": 100.0 * correct / max(seen, 1), "test_loss": None, "test_acc": None,
                          "best_acc": None, "best_epoch": None, "lr": self.optimizer.param_groups[0]["lr"],
                          "epoch_s": round(elapsed, 3), "epochs": self.cfg.train.epochs}
                self.emit("epoch", **record)
                self.store.epoch_done(self.run_id, record, self.wall_clock())
            hook(self, elapsed, seen)
            return True  # nothing to checkpoint when stopped

    trainer = BenchTrainer(cfg, run_id=new_run_id(cfg.name), home=home / "runs", data_root=home / "data")
    trainer.prepare()
    return trainer


def _check_exit(code: int) -> None:
    from engine.trainer import EXIT_OK, EXIT_STOPPED

    if code == EXIT_STOPPED:  # Ctrl-C: the Trainer stopped gracefully; stop the benchmark too
        raise KeyboardInterrupt
    if code != EXIT_OK:
        raise RuntimeError(f"the bench training run ended with exit code {code}")


def _ceiling_epoch(trainer: Any, x: Any, y: Any, steps: int) -> float:
    """The model-only ceiling: the trainer's model and optimizer on a pre-staged batch; returns img/s."""
    import torch
    import torch.nn.functional as F
    from contextlib import nullcontext

    model, opt, clip = trainer.model, trainer.optimizer, trainer.cfg.train.grad_clip
    amp = torch.autocast(trainer.device.type, dtype=trainer.amp_dtype) if trainer.amp_dtype else nullcontext()
    model.train()
    _sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        with amp:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    _sync(trainer.device)
    return steps * x.shape[0] / (time.perf_counter() - t0)


def _bench_train(plan: BenchPlan, device: Any, size: int, batch: int, steps: int, out: dict, prog: _Progress,
                 workdir: Path, precision: Optional[str] = None) -> None:
    """Alternating epochs: engine (warm-up), ceiling (warm-up), then `repeats` engine/ceiling pairs.
    With `precision` (e.g. "auto": bf16/fp16 autocast on a GPU) the keys end in `_amp`."""
    suffix = f"{size}_amp" if precision else f"{size}"
    label = f"training {plan.backbone} {size}x{size}, batch {batch}{', ' + precision + ' precision' if precision else ''}"
    with prog.step(f"{label}: engine vs model-only ceiling") as note:
        cfg = _bench_config(plan, device, size, batch, steps, epochs=plan.repeats + 1, precision=precision)
        engine: list[float] = []
        ceiling: list[float] = []
        staged: dict[str, Any] = {}

        def hook(trainer: Any, elapsed: float, seen: float) -> None:
            if trainer.epoch == 1:  # the engine's warm-up epoch: stage the ceiling's batch, warm it up
                x, y = next(trainer.pipeline.train_batches(0, trainer.cfg.train.seed, batch))
                staged["x"], staged["y"] = x.clone(memory_format=torch_channels_last(trainer)), y.clone()
                _ceiling_epoch(trainer, staged["x"], staged["y"], 1)
                return
            engine.append(seen / elapsed)
            ceiling.append(_ceiling_epoch(trainer, staged["x"], staged["y"], steps))

        trainer = _make_trainer(cfg, workdir / f"train{suffix}", hook)
        code = trainer.run()
        _check_exit(code)
        pairs = [e / c for e, c in zip(engine, ceiling)]
        ratio = _median(pairs)
        out[f"train_vs_ceiling_{suffix}"] = _round(ratio, 3)
        out[f"train_img_per_s_{suffix}"] = _round(_median(engine), 1)
        out[f"train_ceiling_img_per_s_{suffix}"] = _round(_median(ceiling), 1)
        out[f"train_batch_{suffix}"] = batch
        out[f"train_steps_{suffix}"] = steps
        out["samples"][f"train_engine_{suffix}"] = [round(v, 1) for v in engine]
        out["samples"][f"train_ceiling_{suffix}"] = [round(v, 1) for v in ceiling]
        if precision:
            out["amp_dtype"] = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else None
        else:
            out["channels_last"] = bool(trainer.cfg.train.channels_last)
            out["precision"] = trainer.cfg.train.precision
        note(f"{ratio:.3f} ({_median(engine):,.1f} vs {_median(ceiling):,.1f} img/s)")


def torch_channels_last(trainer: Any) -> Any:
    import torch

    return torch.channels_last if trainer.cfg.train.channels_last else torch.contiguous_format


_TUI_ATTACH = r"""
import asyncio, sys
from pathlib import Path
from cifar_tui.app import CifarTUI
from cifar_tui.launch import Workspace
from cifar_tui.tui.support import pane_id_for

home, data, rid = sys.argv[1:4]

async def main():
    app = CifarTUI(Workspace(home=Path(home), data_root=Path(data)))
    async with app.run_test(size=(160, 48)) as pilot:
        while not (rid in app.views and app.views[rid].loaded):
            await pilot.pause(0.1)
        app.query_one("#tabs").active = pane_id_for(rid)  # the run's live view in front
        await pilot.pause(0.3)
        print("ATTACHED", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin

asyncio.run(main())
"""


class _AttachedTUI:
    """A real CifarTUI in its own process (headless run_test), tailing one run."""

    def __init__(self, home: Path, data_root: Path, run_id: str, timeout: float = 90.0):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _TUI_ATTACH, str(home), str(data_root), run_id],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        line: dict[str, str] = {}

        def read() -> None:
            line["text"] = self.proc.stdout.readline() if self.proc.stdout else ""

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if "ATTACHED" not in line.get("text", ""):
            self.close()
            err = self.proc.stderr.read()[-400:] if self.proc.stderr else ""
            raise RuntimeError(f"the TUI did not attach to {run_id} within {timeout:.0f}s: {err.strip()}")

    def cpu_seconds(self) -> Optional[float]:
        return _cpu_seconds(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=10)


def _bench_tui(plan: BenchPlan, device: Any, out: dict, prog: _Progress, workdir: Path) -> None:
    """Phases of tui_steps steps each, headless (H) or with a live TUI attached (T)."""
    with prog.step(f"training with a live TUI attached vs headless ({plan.tui_phases})") as note:
        batch = plan.train_batch
        phases = plan.tui_phases
        cfg = _bench_config(plan, device, 32, batch, plan.tui_steps, epochs=len(phases) + 1)
        home = workdir / "tui"
        rates: dict[str, list[float]] = {"H": [], "T": []}
        sequence: list[tuple[str, float]] = []
        tui_cpu: list[float] = []
        state: dict[str, Any] = {"tui": None, "cpu0": None}

        def set_phase(trainer: Any, phase: str) -> None:
            tui = state["tui"]
            if phase == "T" and tui is None:
                state["tui"] = _AttachedTUI(home / "runs", home / "data", trainer.run_id)
                time.sleep(plan.tui_settle_s)  # past the TUI's start-up burst
            elif phase == "H" and tui is not None:
                tui.close()
                state["tui"] = None
            state["cpu0"] = state["tui"].cpu_seconds() if state["tui"] else None

        def hook(trainer: Any, elapsed: float, seen: float) -> None:
            done = trainer.epoch - 1  # epoch 1 is the warm-up
            if done >= 1:
                phase = phases[done - 1]
                rates[phase].append(seen / elapsed)
                sequence.append((phase, seen / elapsed))
                if phase == "T" and state["cpu0"] is not None:
                    cpu1 = state["tui"].cpu_seconds()
                    if cpu1 is not None:
                        tui_cpu.append((cpu1 - state["cpu0"]) / elapsed)
            if done < len(phases):
                set_phase(trainer, phases[done])

        trainer = _make_trainer(cfg, home, hook)
        try:
            code = trainer.run()
        finally:
            if state["tui"] is not None:
                state["tui"].close()
        _check_exit(code)
        h, t = _median(rates["H"]), _median(rates["T"])
        # neighbouring phases form (H, T) pairs: a slow drift of the machine's load cancels in each
        pairs = [dict(sequence[i:i + 2]) for i in range(0, len(sequence) - 1, 2)]
        pair_ratios = [p["T"] / p["H"] for p in pairs if set(p) == {"H", "T"}]
        ratio = _median(pair_ratios) if pair_ratios else t / h
        out["tui_vs_headless"] = _round(ratio, 3)
        out["tui_img_per_s"] = _round(t, 1)
        out["headless_img_per_s"] = _round(h, 1)
        out["tui_cpu_cores"] = _round(_median(tui_cpu), 3)  # CPU the TUI process used while attached
        out["tui_phase_steps"] = plan.tui_steps
        out["tui_batch"] = batch
        out["samples"]["tui_attached"] = [round(v, 1) for v in rates["T"]]
        out["samples"]["tui_cpu_cores"] = [round(v, 3) for v in tui_cpu]
        out["samples"]["tui_pair_ratios"] = [round(v, 3) for v in pair_ratios]
        out["samples"]["tui_headless"] = [round(v, 1) for v in rates["H"]]
        note(f"{ratio:.3f} ({t:,.1f} vs {h:,.1f} img/s; the TUI used {out['tui_cpu_cores'] or 0:.2f} cores)")


# ---------------------------------------------------------------------------------------
# 4. start-up


def _time_command(cmd: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
    return elapsed


_TUI_FIRST_SCREEN = r"""
import asyncio, sys
from pathlib import Path
from cifar_tui.app import CifarTUI
from cifar_tui.launch import Workspace

async def main():
    app = CifarTUI(Workspace(home=Path(sys.argv[1]), data_root=Path(sys.argv[2])))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one("#exp-table")
        while table.row_count == 0:
            await pilot.pause(0.01)
        await pilot.pause()
        print("READY", flush=True)

asyncio.run(main())
"""


def _tui_first_screen_headless(env: dict, home: Path, data_root: Path, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _TUI_FIRST_SCREEN, str(home), str(data_root)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        elapsed = time.perf_counter() - t0
        if "READY" not in line:
            raise RuntimeError(f"the TUI did not start: {(proc.stderr.read() if proc.stderr else '')[-300:]}")
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return elapsed


class _Tmux:
    def __init__(self, tmux: str):
        self.base = [tmux, "-L", f"cifar-tui-bench-{os.getpid()}"]
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True, text=True, timeout=30,
                              env=self.env).stdout


def _tui_first_screens_tmux(tmux_bin: str, repeats: int, env: dict, home: Path, data_root: Path, cwd: Path,
                            marker: str) -> list[float]:
    """A fresh `cifar-tui` in a new tmux window per repeat: process start until `marker`
    (a row of the experiments table) is on the screen (capture-pane every 10 ms)."""
    import shlex

    tmux = _Tmux(tmux_bin)
    q = shlex.quote
    envs = " ".join(f"{k}={q(env[k])}" for k in ("CIFAR_TUI_HOME", "CIFAR_TUI_DATA", "PATH") if k in env)
    cmd = f"cd {q(str(cwd))} && env {envs} {' '.join(q(c) for c in _cli_command())}; sleep 60"
    times = []
    tmux("new-session", "-d", "-s", "bench", "-x", "160", "-y", "48", "sleep 600")
    try:
        for i in range(repeats):
            t0 = time.perf_counter()
            tmux("new-window", "-t", "bench", "-n", f"w{i}", cmd)
            deadline = t0 + 60
            while True:
                screen = tmux("capture-pane", "-p", "-t", f"bench:w{i}")
                if marker in screen:
                    times.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the TUI's first screen did not show {marker!r} within 60 s:\n{screen[-500:]}")
                time.sleep(0.01)
            tmux("kill-window", "-t", f"bench:w{i}")
            time.sleep(0.3)  # let the killed app exit before the next start
    finally:
        try:
            tmux("kill-server")
        except (subprocess.SubprocessError, OSError):
            pass
    return times


def _bench_startup(plan: BenchPlan, out: dict, prog: _Progress, workdir: Path) -> None:
    home, data_root = workdir / "startup" / "runs", workdir / "startup" / "data"
    env = {**os.environ, "CIFAR_TUI_HOME": str(home), "CIFAR_TUI_DATA": str(data_root)}
    for k in ("COLUMNS", "LINES"):
        env.pop(k, None)
    cwd = workdir
    cli = _cli_command()
    out["cli_command"] = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cli))
    for key, args in (("help_s", ["--help"]), ("list_s", ["list"])):
        with prog.step(f"start-up: cifar-tui {' '.join(args)}") as note:
            _time_command(cli + args, env, cwd)  # warm the file cache
            times = [_time_command(cli + args, env, cwd) for _ in range(plan.startup_repeats)]
            out[key] = _round(_median(times), 3)
            out["samples"][key] = [round(v, 3) for v in times]
            note(f"{out[key]:.3f} s")
    with prog.step("start-up: TUI first screen") as note:
        from engine.config import list_config_paths

        paths = list_config_paths()
        marker = paths[0].stem if paths else "experiments"
        tmux_bin = shutil.which("tmux")
        if tmux_bin:
            times = _tui_first_screens_tmux(tmux_bin, plan.tui_screen_repeats + 1, env, home, data_root, cwd, marker)[1:]
            out["tui_first_screen_method"] = "tmux: fresh `cifar-tui` process until the experiments table is on screen"
        else:
            _tui_first_screen_headless(env, home, data_root, cwd)
            times = [_tui_first_screen_headless(env, home, data_root, cwd) for _ in range(plan.tui_screen_repeats)]
            out["tui_first_screen_method"] = "headless run_test in a fresh process until the experiments table has rows"
        out["tui_first_screen_s"] = _round(_median(times), 3)
        out["samples"]["tui_first_screen_s"] = [round(v, 3) for v in times]
        note(f"{out['tui_first_screen_s']:.3f} s")


# ---------------------------------------------------------------------------------------


def run_bench(device: str = "auto", quick: bool = False, progress: bool = True, *,
              plan: Optional[BenchPlan] = None) -> dict:
    """Every figure as a dict (JSON-ready); keys in REQUIRED_KEYS are always present
    (None where not measured).  Raises ConfigError for an unavailable device."""
    plan = plan or (BenchPlan.quick() if quick else BenchPlan.full())
    dev = _resolve_device(device)
    plan = plan.for_device(dev.type)
    import torch

    t_start = time.perf_counter()
    out: dict[str, Any] = {k: None for k in REQUIRED_KEYS}
    out.update({
        "device": str(dev), "device_name": _device_name(dev), "device_type": dev.type,
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "cpu_count": _cpu_count(), "cpu_model": _cpu_model(), "torch_threads": torch.get_num_threads(),
        "quick": bool(quick), "repeats": plan.repeats, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": _loadavg(), "train_vs_ceiling_224": None, "train_img_per_s_224": None,
        "env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
        "samples": {},
    })
    train_224 = plan.wants_224_training(dev.type)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    workdir = Path(tempfile.mkdtemp(prefix="cifar-tui-bench-"))
    try:
        if dev.type == "cpu":  # as the Trainer runs on the CPU
            torch.use_deterministic_algorithms(True, warn_only=True)
        section_s: dict[str, float] = {}

        @contextmanager
        def section(name: str) -> Iterator[None]:
            t0 = time.perf_counter()
            yield
            section_s[name] = round(time.perf_counter() - t0, 1)

        with _Progress(progress) as prog:
            if "startup" in plan.sections:
                with section("startup"):
                    _bench_startup(plan, out, prog, workdir)
            if "pipeline" in plan.sections:
                with section("pipeline"):
                    _bench_pipeline(plan, dev, out, prog)
            if "train" in plan.sections:
                with section("train_32"):
                    _bench_train(plan, dev, 32, plan.train_batch, plan.train_steps, out, prog, workdir)
                if train_224:
                    batch = plan.train_batch if dev.type == "cuda" else plan.train_224_batch
                    with section("train_224"):
                        _bench_train(replace(plan, repeats=plan.train_224_repeats), dev, 224, batch,
                                     plan.train_224_steps, out, prog, workdir)
                if dev.type == "cuda":  # the seed trains in fp32; mixed precision is the engine's GPU option
                    with section("train_32_amp"):
                        _bench_train(plan, dev, 32, plan.train_batch, plan.train_steps, out, prog, workdir,
                                     precision="auto")
            if "tui" in plan.sections:
                with section("tui"):
                    _bench_tui(plan, dev, out, prog, workdir)
        out["section_s"] = section_s
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        shutil.rmtree(workdir, ignore_errors=True)
    out["loadavg_end"] = _loadavg()
    out["bench_s"] = round(time.perf_counter() - t_start, 1)
    return out


def render_bench(results: dict, console: Any) -> None:
    """A table of each figure, its goal and pass/miss; then the absolute figures."""
    from rich.table import Table

    dtype = results.get("device_type") or ("cuda" if str(results.get("device", "")).startswith("cuda") else "cpu")
    table = Table(title=f"cifar-tui bench on {results.get('device_name') or results.get('device')}"
                        f"{' (quick)' if results.get('quick') else ''}", title_justify="left")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("result", justify="center")
    for key, label, op, goal in goals_for(dtype):
        value = results.get(key)
        if value is None:
            table.add_row(label, "[dim]not measured[/]", f"{op} {goal:g}", "[dim]-[/]")
            continue
        ok = value >= goal if op == ">=" else value <= goal
        shown = f"{value:.3f} s" if op == "<=" else f"{value:.3g}x" if key.startswith("pipeline") else f"{value:.3f}"
        table.add_row(label, shown, f"{op} {goal:g}", "[green]pass[/]" if ok else "[red]miss[/]")
    console.print(table)

    def num(key: str, fmt: str = ",.0f") -> str:
        v = results.get(key)
        return "-" if v is None else format(v, fmt)

    details = Table(title="absolute figures", title_justify="left", show_header=True)
    details.add_column("what")
    details.add_column("engine", justify="right")
    details.add_column("reference", justify="right")
    for size in (32, 224):
        if results.get(f"pipeline_engine_img_per_s_{size}") is not None:
            details.add_row(f"pipeline {size}x{size} img/s (reference: {results.get(f'pipeline_reference_workers_{size}')} workers)",
                            num(f"pipeline_engine_img_per_s_{size}"), num(f"pipeline_reference_img_per_s_{size}"))
    if results.get("pipeline_crop_flip_img_per_s_32") is not None:
        details.add_row("pipeline 32x32 img/s with crop_flip", num("pipeline_crop_flip_img_per_s_32"),
                        num("pipeline_reference_img_per_s_32"))
    for size in (32, 224):
        if results.get(f"train_img_per_s_{size}") is not None:
            details.add_row(f"training {size}x{size} img/s (batch {results.get(f'train_batch_{size}')}; reference: ceiling)",
                            num(f"train_img_per_s_{size}", ",.1f"), num(f"train_ceiling_img_per_s_{size}", ",.1f"))
    if results.get("train_img_per_s_32_amp") is not None:
        details.add_row(f"training 32x32 img/s, {results.get('amp_dtype')} autocast (reference: ceiling, "
                        f"ratio {num('train_vs_ceiling_32_amp', '.3f')})",
                        num("train_img_per_s_32_amp", ",.1f"), num("train_ceiling_img_per_s_32_amp", ",.1f"))
    if results.get("tui_img_per_s") is not None:
        details.add_row(f"training img/s, TUI attached (reference: headless); TUI used {num('tui_cpu_cores', '.2f')} cores",
                        num("tui_img_per_s", ",.1f"), num("headless_img_per_s", ",.1f"))
    if details.row_count:
        console.print(details)
    load, cores = results.get("loadavg_start"), results.get("cpu_count") or 1
    if load and load[0] > 0.5 * cores:
        console.print(f"[yellow]The machine was busy before the benchmark started (load average {load[0]:g} on "
                      f"{cores} cores): other processes share the CPU, and the figures are noisy.[/]")
    console.print(f"[dim]torch {results.get('torch_version')} · {results.get('cpu_count')} CPU cores · "
                  f"repeats {results.get('repeats')} (medians) · load average {results.get('loadavg_start')} -> "
                  f"{results.get('loadavg_end')} · {results.get('bench_s')} s · {results.get('date')}[/]")
