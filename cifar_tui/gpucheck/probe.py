"""The torch side of `scripts/gpu-check.sh` (see cifar_tui/gpucheck/check.py): one config's steps through
the engine's own Trainer, the NCCL probe, and the compile-cache warmer.  Imported only by the check.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.record.events import latest_event

STEPS_PER_EPOCH = 20  # a measured "epoch" of the check: short, so that a time window can end it
NEVER = 1_000_000     # eval.every / train.checkpoint_every: the check neither evaluates nor checkpoints per epoch


@dataclass
class Measurement:
    """One config with compile on or off."""

    config: str
    compiled: bool
    batch: int = 0
    image_size: int = 0
    precision: str = ""
    compile_mode: Optional[str] = None
    steps: int = 0                     # measured steps (after the warm-up epoch)
    img_per_s: Optional[float] = None
    warmup_s: Optional[float] = None   # the first epoch: compile, cuDNN autotuning, CUDA graph capture
    peak_mem_mb: Optional[float] = None
    error: Optional[str] = None
    epoch_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _epoch_timer(on_epoch: Any) -> Any:
    """A TrainerHook timing each epoch's steps (device-synchronised) for `on_epoch(trainer, seconds)`."""
    from engine.hooks import TrainerHook

    class EpochTimer(TrainerHook):
        def epoch_start(self, trainer: Any) -> None:
            _sync(trainer.device)
            self.t0 = time.perf_counter()

        def epoch_trained(self, trainer: Any, totals: Any) -> None:
            _sync(trainer.device)
            on_epoch(trainer, time.perf_counter() - self.t0)

    return EpochTimer()


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, overrides: list[str], *, compiled: bool, steps: int, window_s: float, home: Path,
            device: str) -> Measurement:
    """Run `name` (with the check's overrides) through the engine's own Trainer until `steps` steps or
    `window_s` seconds have been measured after one warm-up epoch; a TrainerHook times the epochs
    and asks for a stop. Never raises: a failure is recorded in the result."""
    import torch

    from engine.config import load_config
    from engine.record.paths import new_run_id
    from engine.trainer import Trainer

    result = Measurement(config=name, compiled=compiled)
    trainer = None
    try:
        base = load_config(name, overrides)
        cfg = load_config(name, overrides + sized_overrides(base.train.batch_size, steps) +
                          [f"train.compile={str(compiled).lower()}", f"train.device={device}",
                           f"eval.every={NEVER}", f"train.checkpoint_every={NEVER}"])
        result.batch, result.image_size, result.precision = cfg.train.batch_size, cfg.data.image_size, cfg.train.precision
        seen = {"steps": 0, "s": 0.0}

        def on_epoch(trainer: Any, elapsed: float) -> None:
            if trainer.epoch == 1:
                result.warmup_s = round(elapsed, 2)
                if trainer.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(trainer.device)
                return
            result.epoch_s.append(round(elapsed, 4))
            seen["steps"] += trainer.steps_per_epoch
            seen["s"] += elapsed
            if seen["steps"] >= steps or seen["s"] >= window_s:
                trainer.stop.flag = True  # the loop ends after this epoch (one checkpoint), as on Ctrl-C

        trainer = Trainer(cfg, run_id=new_run_id(cfg.name), home=home, data_root=home / "data",
                          hooks=[_epoch_timer(on_epoch)])
        trainer.prepare()
        result.compile_mode = trainer.compile_mode
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        code = trainer.run()
        result.steps = seen["steps"]
        if code not in (0, 130):  # 130: stopped by the hook, as asked
            result.error = _end_error(trainer.run_dir) or f"the run ended with exit code {code}"
        if seen["s"] > 0:
            result.img_per_s = round(seen["steps"] * cfg.train.batch_size / seen["s"], 1)
        if trainer.device.type == "cuda":
            result.peak_mem_mb = round(torch.cuda.max_memory_allocated(trainer.device) / 2**20, 1)
        if not result.steps and not result.error:
            result.error = "no step was measured (the run ended in its warm-up epoch)"
    except Exception as exc:  # noqa: BLE001 - one config's failure is a row of the table, not the end
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result.error = f"{type(exc).__name__}: {text}"[:300]
    finally:
        del trainer
        release(device)
    return result


def _end_error(run_dir: Path) -> Optional[str]:
    """The error of the run's `end` event (the trainer's one-line reason), if any."""
    return (latest_event(run_dir, "end") or {}).get("error")


def sized_overrides(batch: int, steps: int) -> list[str]:
    """Synthetic data for STEPS_PER_EPOCH full batches, and epochs enough for a warm-up epoch and
    `steps` measured steps (the time window usually ends the run before)."""
    epochs = 2 + -(-steps // STEPS_PER_EPOCH)
    return [f"data.train_limit={batch * STEPS_PER_EPOCH}", f"data.test_limit={min(batch, 1000)}",
            f"train.epochs={epochs}"]


def release(device: str) -> None:
    """Give back what one config held: compiled graphs (and their CUDA graph pools), cached blocks."""
    import torch

    gc.collect()
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_teacher(home: Path, teacher_config: str, overrides: list[str]) -> str:
    """A finished-looking run of the KD teacher's config with random weights (the check measures
    speed, not accuracy): its run id, for loss.kd.teacher."""
    import torch

    from engine.checkpoint import save_checkpoint
    from engine.config import load_config
    from engine.models import build_model
    from engine.record.paths import new_run_id

    cfg = load_config(teacher_config, overrides)
    run_id = new_run_id(cfg.name)
    run_dir = home / run_id
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    torch.manual_seed(0)
    save_checkpoint({"run_id": run_id, "config": cfg.to_dict(), "model": build_model(cfg.model).state_dict(),
                     "epoch": 1, "best_acc": 0.0}, run_dir / "checkpoints" / "best.pt")
    return run_id


def nccl_probe(steps: int = 30) -> dict[str, Any]:
    """Under torchrun: an NCCL process group, an all_reduce checked against the world size, and a
    DDP-wrapped CIFAR-stem ResNet-18 stepping on random batches."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from engine.config import ModelConfig
    from engine.models import build_model

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    t0 = time.perf_counter()
    dist.init_process_group(backend="nccl")
    init_s = time.perf_counter() - t0
    try:
        ones = torch.ones(4, device="cuda")
        dist.all_reduce(ones)
        world = dist.get_world_size()
        ok = bool(torch.all(ones == world))
        model = DDP(build_model(ModelConfig(backbone="resnet18", stem="cifar")).cuda().to(memory_format=torch.channels_last),
                    device_ids=[local_rank])
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(256, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 100, (256,), device="cuda")
        for i in range(steps + 5):
            if i == 5:
                torch.cuda.synchronize()
                t1 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        return {"backend": dist.get_backend(), "world_size": world, "all_reduce_ok": ok, "init_s": round(init_s, 2),
                "ddp_img_per_s": round(steps * 256 / (time.perf_counter() - t1), 1),
                "nccl_version": ".".join(map(str, torch.cuda.nccl.version())), "loss_finite": bool(torch.isfinite(loss))}
    finally:
        dist.destroy_process_group()


def warm(names: list[str], overrides: list[str], home: Path, device: str) -> None:
    """Compile each config once (one short epoch) so that the measured runs find Inductor's caches warm."""
    for name in names:
        m = measure(name, overrides, compiled=True, steps=1, window_s=0.0, home=home, device=device)
        print(json.dumps({"warmed": name, "warmup_s": m.warmup_s, "error": m.error}), flush=True)


if __name__ == "__main__":  # python -m cifar_tui.gpucheck.probe nccl | warm HOME DEVICE NAME... -- OVERRIDE...
    if sys.argv[1] == "nccl":
        print("NCCL " + json.dumps(nccl_probe()), flush=True)
    elif sys.argv[1] == "warm":
        rest = sys.argv[4:]
        cut = rest.index("--") if "--" in rest else len(rest)
        warm(rest[:cut], rest[cut + 1:], Path(sys.argv[2]), sys.argv[3])
