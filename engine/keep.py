"""The disk rule: what a run directory keeps in checkpoints/ (`train.keep`).

While a run trains it writes ``last.pt`` (model, optimizer, scheduler, scaler, RNG: what
resume needs; with AdamW about three times the weights) and ``best.pt`` (the best epoch's
weights, no optimizer state). When the run *completes*, :func:`finalize` drops what the
policy does not keep:

``best`` (default)
    ``best.pt`` only: what eval, predict and export need. A ResNet-18 run dir is ~45 MB
    instead of ~180 MB.
``best+last``
    ``best.pt`` and ``last.pt``: ``cifar-tui resume RUN --epochs N`` can extend the run.
``all``
    as ``best+last``, plus the weights of every checkpointed epoch (``epoch_0001.pt``, ...).

A stopped, failed or crashed run keeps ``last.pt`` whatever the policy: it is how it resumes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

# engine.checkpoint (torch) is imported inside the functions that write or read checkpoints:
# `python -m engine.train` checks its input with this module before it imports torch.

KEEP_POLICIES = ("best", "best+last", "all")
from .record.paths import BEST, LAST, checkpoints_dir  # noqa: F401 - the layout lives in paths (no torch)

if TYPE_CHECKING:
    from .config import ExperimentConfig


def epoch_weights_path(run_dir: Path, epoch: int) -> Path:
    return checkpoints_dir(run_dir) / f"epoch_{int(epoch):04d}.pt"


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """checkpoints/best.pt, last.pt or epoch_NNNN.pt; a ConfigError that says why one is missing."""
    run_dir = Path(run_dir)
    if which == "best":
        path = checkpoints_dir(run_dir) / BEST
    elif which == "last":
        path = checkpoints_dir(run_dir) / LAST
    elif which.isdigit():
        path = epoch_weights_path(run_dir, int(which))
    else:
        raise ConfigError(f"--ckpt {which!r}: expected best, last or an epoch number")
    if path.is_file():
        return path
    if which == "last":
        raise ConfigError(f"run {run_dir.name}: no last.pt (a completed run keeps only best.pt unless "
                          f"train.keep is best+last or all); use --ckpt best")
    if which.isdigit():
        raise ConfigError(f"run {run_dir.name}: no weights of epoch {int(which)} ({path.name}; they are kept with train.keep: all)")
    raise ConfigError(f"run {run_dir.name}: no best.pt yet (the run has not finished an evaluated epoch)")


def save_epoch_weights(run_dir: Path, keep: str, state: dict[str, Any]) -> Path | None:
    """With ``keep: all``, the weights of an epoch that just ended (not of a mid-epoch stop)."""
    if keep != "all" or state.get("step_in_epoch", 0) != 0:
        return None
    from .checkpoint import save_checkpoint

    path = epoch_weights_path(run_dir, state["epoch"])
    save_checkpoint({"run_id": state.get("run_id"), "config": state.get("config"), "model": state["model"],
                     "epoch": state["epoch"], "best_acc": state.get("best_acc")}, path)
    return path


def finalize(run_dir: Path, keep: str, status: str) -> list[str]:
    """Apply the policy once a run has ended with `status`; returns the checkpoint files left.

    Only a completed run gives anything up, and never its resume state unless ``best.pt``
    is there and readable (the weights everything after training needs). Never raises: the
    run's end must still be recorded."""
    ckpt = checkpoints_dir(run_dir)
    try:
        if status == "completed" and keep == "best" and (ckpt / LAST).exists():
            _drop_resume_state(ckpt)
        return sorted(p.name for p in ckpt.iterdir() if p.suffix == ".pt" and not p.name.startswith("."))
    except Exception as exc:  # noqa: BLE001 - keeping files is never worth a lost end event
        print(f"warning: train.keep not applied to {ckpt}: {exc}", file=sys.stderr)
        return []


def _drop_resume_state(ckpt: Path) -> None:
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        load_checkpoint(ckpt / BEST)
    except CheckpointError as exc:
        print(f"warning: keeping {ckpt / LAST}: {exc}", file=sys.stderr)
        return
    (ckpt / LAST).unlink()
    _fsync_dir(ckpt)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_extendable(run_id: str, run_dir: Path, cfg: ExperimentConfig, epochs_done: int, epochs: int) -> None:
    """Why `cifar-tui resume RUN --epochs N` cannot extend this completed run (ConfigError), if it cannot."""
    if epochs <= epochs_done:
        raise ConfigError(f"--epochs {epochs}: run {run_id} has trained {epochs_done} epochs already; "
                          f"give a larger total, e.g. --epochs {epochs_done + max(1, epochs_done // 2)}")
    if not (checkpoints_dir(run_dir) / LAST).is_file():
        raise ConfigError(f"run {run_id} completed and kept only its best weights (train.keep: {cfg.train.keep}), "
                          f"not the resume state; it cannot be extended: start a new run with "
                          f"--set train.keep=best+last to keep what `resume --epochs` needs")


def check_resumable(run_id: str, run_dir: Path) -> None:
    """A run that kept only best.pt has nothing to resume from: resuming must not start it over."""
    ckpt = checkpoints_dir(run_dir)
    if (ckpt / BEST).is_file() and not (ckpt / LAST).is_file():
        raise ConfigError(f"run {run_id} kept only its best weights ({ckpt / BEST}), not the resume state "
                          f"(last.pt); it cannot be resumed or extended (train.keep: best+last keeps it)")
