"""The disk rule (train.keep) on real ResNet-18 runs: what a completed and a stopped run dir keep
and weigh, extending a completed run with `cifar-tui resume --epochs`, and the clear refusal
when a run did not keep its resume state."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.checkpoint import load_checkpoint
from engine.events import read_events

from tests.conftest import CLI, cli, new_workspace, set_args, tiny_overrides

MB = 1_000_000
GOAL_COMPLETED_RESNET18 = 50 * MB


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def run_once(ws: dict, *overrides: str, epochs: int) -> Path:
    before = set(ws["home"].iterdir()) if ws["home"].exists() else set()
    res = cli(ws, "run", "resnet18_baseline", "--epochs", str(epochs), *set_args(tiny(*overrides)))
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = [d for d in set(ws["home"].iterdir()) - before if d.is_dir()]
    return run_dir


def tiny(*extra: str) -> list[str]:
    """The shared tiny run (TINY: synthetic, 256 images, CPU) of ResNet-18 (the sizes here are its
    checkpoints') plus key=value overrides."""
    return tiny_overrides(model__backbone="resnet18") + list(extra)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict:
    return new_workspace(tmp_path_factory.mktemp("disk"))


def test_a_completed_run_keeps_its_best_weights_only_and_cannot_be_extended(ws):
    run_dir = run_once(ws, epochs=2)
    end = read_events(run_dir / "events.jsonl")[-1]
    assert end["status"] == "completed" and end["checkpoints"] == ["best.pt"]
    assert checkpoint_names(run_dir) == ["best.pt"]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert set(best) >= {"model", "epoch", "best_acc"} and "optimizer" not in best and "rng" not in best
    size = dir_bytes(run_dir)
    assert size <= GOAL_COMPLETED_RESNET18, f"a completed ResNet-18 run dir is {size / MB:.1f} MB"
    print(f"completed ResNet-18 run dir: {size / MB:.1f} MB")

    events_before = (run_dir / "events.jsonl").read_bytes()
    extend = cli(ws, "resume", run_dir.name, "--epochs", "3")
    assert extend.returncode == 2, extend.stdout + extend.stderr
    line = extend.stderr.strip()
    assert "\n" not in line and "cannot be extended" in line and "train.keep=best+last" in line
    again = cli(ws, "resume", run_dir.name)
    assert again.returncode == 2 and "already completed" in again.stderr and "--epochs" in again.stderr
    # the engine refuses on its own too: a resume must never start the run over from scratch
    engine = subprocess.run([sys.executable, "-m", "engine.train", "--resume", run_dir.name, "--home", str(ws["home"])],
                            capture_output=True, text=True, timeout=120, env=ws["env"], cwd=ws["tmp"])
    assert engine.returncode == 2 and "cannot be resumed" in engine.stderr
    assert (run_dir / "events.jsonl").read_bytes() == events_before
    assert checkpoint_names(run_dir) == ["best.pt"]


def test_a_stopped_run_keeps_what_resume_needs_then_completes_small(ws):
    # 64 steps in the epoch: the stop lands inside epoch 1, before any best.pt
    proc = subprocess.Popen([*CLI, "run", "resnet18_baseline", "--epochs", "1",
                             *set_args(tiny("data.train_limit=1024", "train.batch_size=16"))],
                            env=ws["env"], cwd=ws["tmp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = wait_for_step(ws["home"], proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert read_events(run_dir / "events.jsonl")[-1]["status"] == "stopped"
    assert "last.pt" in checkpoint_names(run_dir)
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert {"optimizer", "scheduler", "rng", "partial"} <= set(last) and last["optimizer"]["state"]
    stopped_size = dir_bytes(run_dir)
    assert stopped_size > 100 * MB  # AdamW's two moments beside the weights: what resume needs
    print(f"stopped ResNet-18 run dir: {stopped_size / MB:.1f} MB")

    res = cli(ws, "resume", run_dir.name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert read_events(run_dir / "events.jsonl")[-1]["status"] == "completed"
    assert checkpoint_names(run_dir) == ["best.pt"] and dir_bytes(run_dir) <= GOAL_COMPLETED_RESNET18


def wait_for_step(home: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for events in home.glob("*/events.jsonl"):
            if any(e["type"] == "step" for e in read_events(events)) and events.parent.name.startswith("resnet18"):
                if read_events(events)[-1]["type"] != "end":
                    return events.parent
        time.sleep(0.05)
    raise AssertionError("no step event")


def test_resume_epochs_extends_a_completed_run_that_kept_its_resume_state(ws):
    run_dir = run_once(ws, "train.keep=best+last", epochs=1)
    assert checkpoint_names(run_dir) == ["best.pt", "last.pt"]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    too_few = cli(ws, "resume", run_dir.name, "--epochs", "1")
    assert too_few.returncode == 2 and "trained 1 epochs already" in too_few.stderr

    res = cli(ws, "resume", run_dir.name, "--epochs", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    events = read_events(run_dir / "events.jsonl")
    starts = [e for e in events if e["type"] == "start"]
    assert [s["resumed_from"] for s in starts] == [None, {"epoch": 1, "step": 0}]
    assert starts[1]["config"]["train"]["epochs"] == 2
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]
    assert [e["status"] for e in events if e["type"] == "end"] == ["completed", "completed"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 2
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2  # best+last keeps it again
    db = sqlite3.connect(ws["home"] / "cifar_tui.db")
    assert db.execute("SELECT status, epochs_done, epochs_total FROM runs WHERE run_id=?", (run_dir.name,)).fetchone() == (
        "completed", 2, 2)
    assert [int(line.split(",")[0]) for line in (run_dir / "summary.csv").read_text().splitlines()[1:]] == [1, 2]


def test_keep_all_keeps_every_epochs_weights_for_eval(ws):
    run_dir = run_once(ws, "train.keep=all", epochs=2)
    assert checkpoint_names(run_dir) == ["best.pt", "epoch_0001.pt", "epoch_0002.pt", "last.pt"]
    first = load_checkpoint(run_dir / "checkpoints" / "epoch_0001.pt")
    assert first["epoch"] == 1 and "optimizer" not in first
    epochs = {e["epoch"]: e for e in read_events(run_dir / "events.jsonl") if e["type"] == "epoch"}
    res = cli(ws, "eval", run_dir.name, "--ckpt", "1", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["top1"] == pytest.approx(epochs[1]["test_acc"], abs=1e-9)
