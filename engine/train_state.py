"""What a checkpoint holds so that a run resumes exactly: the model, optimizer, scheduler and
scaler states, where the loop was (epoch, step, best so far, the epoch's running sums), the
wall time, and the global RNG states.  The data pipelines keep no RNG state (their randomness
is a function of (seed, epoch, step)), so these are the only ones."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .checkpoint import CheckpointError
from .config import ExperimentConfig
from .optim import load_optimizer_state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))


@dataclass
class LoopPosition:
    """Where the loop is: restored on resume, saved with every checkpoint."""

    epoch: int = 0           # finished epochs
    step_in_epoch: int = 0   # finished steps of the current epoch
    global_step: int = 0
    best_acc: Optional[float] = None
    best_epoch: Optional[int] = None
    wall_s: float = 0.0
    best_model: str = "model"  # which weights gave best_acc: "model", or "ema" (train.ema)

    FIELDS = ("epoch", "step_in_epoch", "global_step", "best_acc", "best_epoch", "wall_s")


def training_state(*, run_id: str, cfg: ExperimentConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: Any, scaler: Any, position: LoopPosition, partial: torch.Tensor,
                   extras: Optional[dict] = None) -> dict:
    """`extras`: the states of the run's options, by name (``ema``: the averaged weights,
    ``early_stop``: its counters); restored by the trainer (Trainer._restore)."""
    return {
        "run_id": run_id, "config": cfg.to_dict(),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
        **{k: getattr(position, k) for k in LoopPosition.FIELDS}, "best_model": position.best_model,
        "partial": partial.cpu(), "rng": rng_state(), **(extras or {}),
    }


def restore_training_state(state: dict, path: Path, *, cfg: ExperimentConfig, model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> LoopPosition:
    """Load `state` (read from `path`) into the given objects and set the global RNGs; returns
    where the loop was.  A checkpoint that does not fit is a CheckpointError naming `path`."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the model in the checkpoint does not fit {cfg.model.backbone} "
                              f"({str(exc).splitlines()[0][:160]})") from None
    load_optimizer_state(optimizer, state["optimizer"], cfg.optim, path)
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return LoopPosition(**{k: state[k] for k in LoopPosition.FIELDS if k != "wall_s"}, wall_s=float(state["wall_s"]),
                        best_model=state.get("best_model", "model"))  # checkpoints from before train.ema: "model"


def restore_option(state: dict, key: str, path: Path, target: Any) -> None:
    """Load the state of a run option (``ema``, ``early_stop``) saved by :func:`training_state`."""
    if key not in state:
        raise CheckpointError(f"{path}: the checkpoint has no {key} state, but the run's config turns "
                              f"train.{key} on; start a new run")
    try:
        target.load_state_dict(state[key])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the {key} state does not fit ({str(exc).splitlines()[0][:160]})") from None
