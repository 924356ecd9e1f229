"""Recipes beyond the seed through the real CLI and engine processes, on tiny synthetic data: the
divergence guard, early stopping, exact resume with every new option on, and each recipe config
running one epoch."""
from __future__ import annotations

import math
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.ddp import weights_sha256
from engine.record.events import read_events
from engine.record.store import Store

from tests.conftest import CLI, cli, set_args

TINY = ["data.source=synthetic", "data.test_limit=32", "train.device=cpu"]


def only_run_dir(home: Path) -> Path:
    dirs = [d for d in home.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_events(run_dir / "events.jsonl") if e["type"] == kind]


def stored_status(home: Path, run_id: str) -> str:
    store = Store(home)
    try:
        return store.run(run_id)["status"]
    finally:
        store.close()


def test_divergence_guard_fails_the_run_within_a_few_steps(workspace):
    """The issue's command: SGD at lr 1e6 on the baseline used to train on and report `completed`."""
    res = cli(workspace, "run", "resnet18_baseline", "--data", "synthetic", "--set", "optim.name=sgd",
              "--set", "optim.lr=1e6", *set_args(TINY + ["data.train_limit=320", "train.batch_size=32"]),
              "--epochs", "3")
    assert res.returncode == 1, res.stdout + res.stderr
    run_dir = only_run_dir(workspace["home"])
    end = events(run_dir, "end")[-1]
    assert end["status"] == "failed" and stored_status(workspace["home"], run_dir.name) == "failed"
    match = re.search(r"training diverged: the loss (?:reached \S+|became NaN|became infinite) at step (\d+) ",
                      end["error"])
    assert match, end["error"]
    bad_step = int(match.group(1))
    assert "lower learning rate" in end["error"] and "--set optim.lr=100000" in end["error"]
    assert end["reason"] == end["error"]
    # within a few steps of the first bad loss, long before the first of 3 epochs (10 steps each) ends
    assert bad_step <= 3 and end["steps_done"] <= bad_step + 2 and end["epochs_done"] == 0
    assert not events(run_dir, "epoch")
    assert "training diverged" in res.stdout + res.stderr


def test_early_stop_ends_the_run_completed_with_its_reason(workspace):
    # min_delta 50 points: no epoch of a tiny run improves that much, so it stops after `patience` more
    overrides = TINY + ["data.train_limit=32", "data.test_limit=16", "train.batch_size=16", "train.epochs=10",
                        "train.early_stop.patience=2", "train.early_stop.min_delta=50", "train.keep=best+last"]
    res = cli(workspace, "run", "resnet18_baseline", *set_args(overrides))
    assert res.returncode == 0, res.stderr
    run_dir = only_run_dir(workspace["home"])
    end = events(run_dir, "end")[-1]
    assert end["status"] == "completed" and stored_status(workspace["home"], run_dir.name) == "completed"
    assert end["epochs_done"] == 3 and [e["epoch"] for e in events(run_dir, "epoch")] == [1, 2, 3]
    assert end["reason"].startswith("early stop: test accuracy has not improved by more than 50 points "
                                    "for 2 evaluations")
    assert "early stop" in res.stdout
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step_in_epoch"]) == (3, 0) and last["early_stop"]["stale"] == 2


# Every option of issue 13 at once (torch.compile aside: CPU Inductor builds take minutes).
EVERY_OPTION = TINY + [
    "data.train_limit=64", "train.batch_size=16", "train.epochs=2", "data.shuffle=true", "data.augment=crop_flip",
    "data.auto_augment.policy=randaugment", "data.erasing.p=0.5", "data.erasing.mode=pixel",
    "data.mixup.mixup_alpha=0.8", "data.mixup.cutmix_alpha=1.0", "loss.label_smoothing=0.1",
    "optim.name=sgd", "optim.lr=0.05", "optim.sam.rho=0.05", "train.ema.decay=0.9", "train.ema.warmup=false",
    "train.early_stop.patience=5", "schedule.name=cosine", "train.keep=best+last",
]


def _epochs(run_dir: Path) -> tuple[list[float], list[str]]:
    """Every epoch's figures in one flat list, and which model was the best one after each epoch."""
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "ema_test_loss", "ema_test_acc", "best_acc")
    rows = events(run_dir, "epoch")
    return [e[k] for e in rows for k in keys], [e["best_model"] for e in rows]


def test_resume_mid_epoch_with_every_new_option_matches_an_uninterrupted_run(workspace, tmp_path):
    proc = subprocess.Popen([*CLI, "run", "resnet18_baseline", *set_args(EVERY_OPTION)], env=workspace["env"],
                            cwd=workspace["tmp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(workspace["home"].glob("*/events.jsonl")):
        time.sleep(0.05)
    run_dir = next(workspace["home"].glob("*/events.jsonl")).parent
    while time.monotonic() < deadline and not events(run_dir, "step"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert stopped["step_in_epoch"] > 0, "the stop was meant to land mid-epoch"
    assert {"ema", "early_stop"} <= set(stopped)

    assert cli(workspace, "resume", run_dir.name).returncode == 0

    reference = dict(workspace, home=tmp_path / "reference")
    reference["env"] = dict(workspace["env"], CIFAR_TUI_HOME=str(reference["home"]))
    assert cli(reference, "run", "resnet18_baseline", *set_args(EVERY_OPTION)).returncode == 0
    ref_dir = only_run_dir(reference["home"])

    (figures, best_models), (ref_figures, ref_best_models) = _epochs(run_dir), _epochs(ref_dir)
    assert len(ref_figures) == 2 * 8 and None not in ref_figures  # two epochs, the EMA evaluated in each
    assert figures == pytest.approx(ref_figures, rel=1e-5, abs=1e-6) and best_models == ref_best_models
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, ref_dir))
    for name in ("model", "ema"):
        x, y = (a[name], b[name]) if name == "model" else (a[name]["module"], b[name]["module"])
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 8  # 4 steps x 2 epochs
    assert a["early_stop"] == b["early_stop"]
    best_a, best_b = (load_checkpoint(d / "checkpoints" / "best.pt") for d in (run_dir, ref_dir))
    assert best_a["best_model"] == best_b["best_model"]
    for key in best_b["model"]:
        torch.testing.assert_close(best_a["model"][key], best_b["model"][key], rtol=1e-5, atol=1e-6)


# Each recipe config as shipped, one tiny epoch, compile off (a CPU Inductor build takes minutes).
# The WRN-28-10 recipes run with WRN-16-4 (the same code at a smaller depth and width): WRN-28-10 at
# 32x32 takes 20-40 s per tiny epoch on this machine's two shared cores; its shape is unit-tested.
SMALLER = {"wrn28_10_cutout": ["model.backbone=wrn16_4"], "wrn28_10_trivialaugment": ["model.backbone=wrn16_4"],
           "wrn28_10_sam": ["model.backbone=wrn16_4"]}
RECIPES = ["resnet18_fast", "resnet18_cutmix", "wrn28_10_cutout", "wrn28_10_trivialaugment", "wrn28_10_sam",
           "vit_small_cifar", "convnext_tiny_cifar"]


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_config_runs_one_tiny_epoch(workspace, name):
    overrides = TINY + ["data.train_limit=16", "data.test_limit=16", "train.batch_size=16", "train.epochs=1",
                        "train.compile=false", *SMALLER.get(name, [])]
    res = cli(workspace, "run", name, *set_args(overrides))
    assert res.returncode == 0, res.stdout[-1000:] + res.stderr[-2000:]
    run_dir = only_run_dir(workspace["home"])
    (epoch,) = events(run_dir, "epoch")
    assert epoch["test_acc"] is not None and math.isfinite(epoch["train_loss"])
    start = events(run_dir, "start")[0]
    shipped = start["config"]
    assert ("ema_test_acc" in epoch) == (shipped["train"]["ema"] is not None)
    assert events(run_dir, "end")[-1]["status"] == "completed"


def test_two_gloo_ranks_with_sam_ema_and_mixing_end_with_the_same_weights(workspace):
    """Under DDP: SAM's first pass skips the all-reduce (each rank perturbs with its own batch), the
    EMA is updated on every rank and evaluated with rank 0's buffers; the ranks must still end
    with identical weights, and rank 0's checkpoint holds them."""
    overrides = ["data.source=synthetic", "data.train_limit=64", "data.test_limit=32", "train.batch_size=32",
                 "train.device=cpu", "train.epochs=1", "optim.name=sgd", "optim.lr=0.01", "optim.sam.rho=0.05",
                 "train.ema.decay=0.9", "data.auto_augment.policy=trivialaugment", "data.mixup.mixup_alpha=0.8",
                 "data.mixup.cutmix_alpha=1.0", "train.keep=best+last"]
    res = cli(workspace, "run", "resnet18_baseline", "--nproc", "2", *set_args(overrides))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    run_dir = only_run_dir(workspace["home"])
    end = events(run_dir, "end")[-1]
    rank0, rank1 = end["weights_sha256"]  # each rank's final weights, as the engine reports them
    assert rank0 == rank1, "the ranks end with different weights"
    (epoch,) = events(run_dir, "epoch")
    assert epoch["ema_test_acc"] is not None and events(run_dir, "start")[0]["world_size"] == 2
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert weights_sha256(last["model"]) == rank0 and last["ema"]["updates"] == 2


def test_divergence_under_ddp_fails_every_rank_at_the_same_step(workspace):
    res = cli(workspace, "run", "resnet18_baseline", "--nproc", "2", "--data", "synthetic",
              *set_args(["optim.name=sgd", "optim.lr=1e6", "data.train_limit=64", "data.test_limit=32",
                         "train.batch_size=16", "train.device=cpu", "train.epochs=2"]))
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    run_dir = only_run_dir(workspace["home"])
    end = events(run_dir, "end")[-1]
    assert end["status"] == "failed" and end["error"].startswith("training diverged: the loss")
    assert end["epochs_done"] == 0 and not events(run_dir, "epoch")
