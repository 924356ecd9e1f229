"""What "a resumed run ends as an uninterrupted one" means, for the tests that check it (the CLI's
Ctrl-C test, the GPU suite): the same epoch metrics, exactly, and the same training state in
last.pt: weights, optimizer (every moment and step count), scheduler, GradScaler, EMA, RNGs
(torch, CUDA, numpy, python), the loop position and the epoch's running sums. Only the wall
time and the run's own id may differ."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.events import read_events

MAY_DIFFER = ("wall_s", "run_id")
MUST_HOLD = ("model", "optimizer", "scheduler", "scaler", "rng", "partial", "epoch", "step_in_epoch", "global_step")


def epoch_metrics(run_dir: Path) -> list[tuple]:
    """(epoch, train_loss, train_acc, test_loss, test_acc) of each `epoch` event, in order."""
    return [(e["epoch"], e["train_loss"], e["train_acc"], e["test_loss"], e["test_acc"])
            for e in read_events(Path(run_dir) / "events.jsonl") if e["type"] == "epoch"]


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two checkpoint values differ (tensors: dtype, shape, every element, bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{where}: {type(a).__name__} vs {type(b).__name__}"]
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"]
        return [] if torch.equal(a.cpu(), b.cpu()) else [f"{where}: tensors differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(map(str, set(a) ^ set(b)))} in one only"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}" if where else str(k))]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b and type(a) is type(b) else [f"{where}: {a!r} vs {b!r}"]


def assert_same_training_state(a: dict, b: dict) -> None:
    """Two last.pt checkpoints hold the same training state (all but MAY_DIFFER), bit for bit."""
    missing = [k for k in MUST_HOLD if k not in a]
    assert not missing, f"the checkpoint holds no {missing}"
    found = differences({k: v for k, v in a.items() if k not in MAY_DIFFER},
                        {k: v for k, v in b.items() if k not in MAY_DIFFER})
    assert not found, "the training states differ: " + "; ".join(found[:20])
