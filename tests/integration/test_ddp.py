"""DDP through torchrun: two real gloo processes on the CPU, tiny synthetic data."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_tui.launch import (LaunchRequest, TorchrunProcess, Workspace, engine_command, launch, recorded_processes,
                              resume)
from engine.checkpoint import load_checkpoint
from engine.config import ConfigError
from engine.ddp import device_label, weights_sha256
from engine.events import read_events

from tests.conftest import CLI, cli, set_args
from tests.support.webhook import free_port

# SGD, not the configs' AdamW: Adam's first steps move every weight by about +-lr whatever the
# size of its gradient, so float rounding (1e-7) in a near-zero gradient becomes a 1e-3
# difference. With SGD the 2-process and 1-process weights agree to about 1e-6 here.
# A global batch of 33 splits 17 + 16: each rank's loss must be weighed by its share.
TINY_DDP = ["data.source=synthetic", "data.train_limit=66", "data.test_limit=64", "train.batch_size=33",
            "train.device=cpu", "train.epochs=2", "optim.name=sgd", "optim.lr=0.01"]


def _run_dirs(home: Path) -> list[Path]:
    return [d for d in home.iterdir() if d.is_dir()]


def _wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _logs(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in home.glob("*/stdout.log"))


def _events(home: Path) -> list[dict]:
    files = list(home.glob("*/events.jsonl"))
    return read_events(files[0]) if files else []


def _digests_of(run_dir: Path) -> list[str]:
    """Each rank's final weights digest, from the run's last `end` event (every run writes it)."""
    end = read_events(run_dir / "events.jsonl")[-1]
    assert end["type"] == "end", end
    return end["weights_sha256"]


def _assert_close_models(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=lambda m: f"{what}, {key}: {m}")


def _epoch_events(run_dir: Path) -> list[dict]:
    return [e for e in read_events(run_dir / "events.jsonl") if e["type"] == "epoch"]


def _assert_same_epochs(a: list[dict], b: list[dict]) -> None:
    assert [e["epoch"] for e in a] == [e["epoch"] for e in b] == [1, 2]  # never a zip over an empty list
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["test_acc"] == pytest.approx(y["test_acc"])


def _stop_right_after_start(launched, timeout: float = 240) -> None:
    """SIGINT the engine as soon as its `start` event is written: a single process checks for a stop
    after every step, so it stops after its first step (the signal handler is set before `start`)."""
    deadline = time.monotonic() + timeout
    while not any(e["type"] == "start" for e in read_events(launched.events_path)):
        assert launched.process.poll() is None and time.monotonic() < deadline, _logs(launched.run_dir.parent)
        time.sleep(0.01)
    launched.process.send_signal(signal.SIGINT)


@pytest.mark.parametrize("extra", [[], ["data.train_sizes=[32,48]"]], ids=["one-scale", "multi-scale"])
def test_two_gloo_ranks_match_one_process_with_sync_bn(workspace, extra):
    """Multi-scale: every rank runs one forward per size group (DDP and SyncBN communicate in
    each), and the groups of the two ranks together are the one process's. One-scale also: a run
    stopped after its first step in one process and resumed as two (DDP) ends where the
    uninterrupted two-process run ends: the batch is global, so any process count continues the
    same batches."""
    tmp = workspace["tmp"]
    overrides = [*TINY_DDP, "train.sync_bn=true", "train.keep=best+last", *extra]
    res = cli(workspace, "run", "resnet18_baseline", "--nproc", "2", *set_args(overrides))
    assert res.returncode == 0, res.stdout + res.stderr + _logs(workspace["home"])
    # the same global batches in one process (one thread, as torchrun gives each rank)
    one = {**workspace, "home": tmp / "one-process",
           "env": {**workspace["env"], "OMP_NUM_THREADS": "1", "CIFAR_TUI_HOME": str(tmp / "one-process")}}
    res_one = cli(one, "run", "resnet18_baseline", *set_args(overrides))
    assert res_one.returncode == 0, res_one.stdout + res_one.stderr

    home = workspace["home"]
    (run_dir,) = _run_dirs(home)
    (one_dir,) = _run_dirs(one["home"])
    ranks = _digests_of(run_dir)
    assert len(ranks) == 2 and ranks[0] == ranks[1], f"the ranks ended with different weights: {ranks}"
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert weights_sha256(checkpoint["model"]) == ranks[0]  # rank 0's checkpoint holds the final weights
    single = load_checkpoint(one_dir / "checkpoints" / "last.pt")
    assert weights_sha256(single["model"]) == _digests_of(one_dir)[0]
    _assert_close_models(checkpoint["model"], single["model"], "2 processes vs 1")

    # exactly one set of records, all from rank 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    events = read_events(run_dir / "events.jsonl")
    kinds = [e["type"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("end") == 1 and kinds[-1] == "end"
    start = events[0]
    assert start["device"] == "cpu x2" and start["world_size"] == 2 and start["local_world_size"] == 2
    assert start["num_train"] == 66 and events[-1]["status"] == "completed"
    db = sqlite3.connect(home / "cifar_tui.db")
    assert db.execute("SELECT run_id, status, device, world_size FROM runs").fetchall() == [
        (run_dir.name, "completed", "cpu x2", 2)]
    assert db.execute("SELECT COUNT(*) FROM epochs").fetchone() == (2,)
    # the 1-process run saw the same data and the same losses
    _assert_same_epochs(_epoch_events(run_dir), _epoch_events(one_dir))
    if extra:
        return

    # stopped in one process after its first step (of 2 an epoch), resumed as two processes
    ws = Workspace(home=tmp / "resumed-as-two", data_root=workspace["data"])
    first = launch(ws, LaunchRequest("resnet18_baseline", overrides), env={"OMP_NUM_THREADS": "1"})
    try:
        _stop_right_after_start(first)
        assert first.process.wait(timeout=240) == 130, _logs(ws.home)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    stopped = load_checkpoint(first.run_dir / "checkpoints" / "last.pt")
    steps_per_epoch = read_events(first.events_path)[0]["steps_per_epoch"]
    assert (stopped["epoch"], stopped["global_step"]) == (0, stopped["step_in_epoch"])
    assert 0 < stopped["step_in_epoch"] < steps_per_epoch, "not stopped mid-epoch"
    second = resume(ws, first.run_id, nproc=2)
    try:
        assert second.process.wait(timeout=300) == 0, _logs(ws.home)
    finally:
        if second.process.poll() is None:
            second.process.kill()
    starts = [e for e in read_events(first.events_path) if e["type"] == "start"]
    assert [s["world_size"] for s in starts] == [1, 2]
    assert starts[1]["resumed_from"] == {"epoch": 0, "step": stopped["step_in_epoch"]}
    resumed = _digests_of(first.run_dir)
    assert len(resumed) == 2 and resumed[0] == resumed[1]
    resumed_model = load_checkpoint(first.run_dir / "checkpoints" / "last.pt")["model"]
    assert weights_sha256(resumed_model) == resumed[0]
    _assert_close_models(resumed_model, checkpoint["model"], "1 process resumed as 2 vs 2 uninterrupted")
    _assert_same_epochs(_epoch_events(first.run_dir), _epoch_events(run_dir))


@pytest.mark.cold_engine  # one DDP run of true starts: the agent signals the ranks themselves
def test_ddp_run_stops_on_ctrl_c_and_on_stop_then_resumes_with_both_ranks(workspace):
    """Ctrl-C on `cifar-tui run` reaches every rank through torchrun; `cifar-tui stop` signals rank 0
    only, and its request reaches the other rank through the all-reduce. Without SyncBN the ranks
    still end with identical weights (BatchNorm statistics come from rank 0)."""
    home = workspace["home"]
    # 50 steps per epoch, stop checked every 10: both stops land part-way through epoch 1, where
    # (without SyncBN) each rank's last step left it its own BatchNorm statistics
    overrides = [*TINY_DDP, "data.train_limit=1650"]
    run = subprocess.Popen([*CLI, "run", "resnet18_baseline", "--nproc", "2", *set_args(overrides)], env=workspace["env"],
                           cwd=workspace["tmp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: any(e["type"] == "step" for e in _events(home)), what="the first step")
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, out + _logs(home)
    (run_dir,) = _run_dirs(home)
    run_id = run_dir.name
    end = read_events(run_dir / "events.jsonl")[-1]
    assert end["type"] == "end" and end["status"] == "stopped" and "stopped" in out
    assert "Traceback" not in (run_dir / "stdout.log").read_text()
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert stopped_at["global_step"] >= 10  # rank 1's partial sums were folded into rank 0's checkpoint

    # resume: both ranks again, from the checkpoint; then `cifar-tui stop` (SIGTERM to rank 0's pid)
    resumed = subprocess.Popen([*CLI, "resume", run_id], env=workspace["env"], cwd=workspace["tmp"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        n_before = len(read_events(run_dir / "events.jsonl"))
        _wait_for(lambda: any(e["type"] == "step" for e in read_events(run_dir / "events.jsonl")[n_before:]),
                  what="a step after resuming")
        stop = cli(workspace, "stop", run_id, "--wait", "180")
        assert stop.returncode == 0, stop.stdout + stop.stderr + _logs(home)
        out, _ = resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    # the engines exit 0 (torchrun would treat 130 as a failure); the following CLI says stopped with 130
    assert resumed.returncode == 130 and "stopped" in out, out + _logs(home)
    events = read_events(run_dir / "events.jsonl")
    starts = [e for e in events if e["type"] == "start"]
    assert len(starts) == 2 and starts[1]["world_size"] == 2 and starts[1]["device"] == "cpu x2"
    assert starts[1]["resumed_from"] == {"epoch": stopped_at["epoch"], "step": stopped_at["step_in_epoch"]}
    assert [e["status"] for e in events if e["type"] == "end"] == ["stopped", "stopped"]
    assert _run_dirs(home) == [run_dir]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["step_in_epoch"] > stopped_at["step_in_epoch"]
    ranks = _digests_of(run_dir)
    assert len(ranks) == 2 and ranks[0] == ranks[1], f"ranks hold different weights: {ranks}"
    assert weights_sha256(last["model"]) == ranks[0]  # and rank 0's checkpoint holds them
    db = sqlite3.connect(home / "cifar_tui.db")
    assert db.execute("SELECT status, world_size, device FROM runs").fetchall() == [("stopped", 2, "cpu x2")]


# ---------------------------------------------------------------- launcher pieces, no training


def test_engine_command_uses_torchrun_for_several_processes(tmp_path):
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    single = engine_command(ws, "--resume", "x")
    assert single[1:3] == ["-m", "engine.train"]
    ddp = engine_command(ws, "--resume", "x", nproc=2)
    assert ddp[1:5] == ["-m", "engine.torchrun", "--standalone", "--nproc-per-node=2"]
    assert ddp[ddp.index("-m", 2):ddp.index("-m", 2) + 2] == ["-m", "engine.train"]
    nodes = engine_command(ws, nproc=4, torchrun_args=["--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1"])
    assert "--standalone" not in nodes and "--nnodes=2" in nodes and "--master-addr=10.0.0.1" in nodes


def _write_start(run_dir: Path, world: int, local: int) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: x\n")
    (run_dir / "events.jsonl").write_text(json.dumps({"v": 1, "t": 1.0, "type": "start", "run_id": run_dir.name,
                                                      "world_size": world, "local_world_size": local}) + "\n")


def test_resume_relaunches_with_the_recorded_process_count(tmp_path, monkeypatch):
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    spawned = []
    monkeypatch.setattr("cifar_tui.launch._spawn", lambda cmd, run_dir, env=None, distributed=False: spawned.append(
        (cmd, distributed)))
    _write_start(ws.home / "a-1", world=2, local=2)
    resume(ws, "a-1")
    assert "--nproc-per-node=2" in spawned[-1][0] and spawned[-1][1] is True
    _write_start(ws.home / "b-1", world=1, local=1)
    resume(ws, "b-1")
    assert spawned[-1][0][1:3] == ["-m", "engine.train"] and spawned[-1][1] is False
    assert recorded_processes(ws.home / "never-started") == (1, 1)
    _write_start(ws.home / "c-1", world=8, local=4)
    with pytest.raises(ConfigError, match="2 nodes"):
        resume(ws, "c-1")


def test_device_label_names_processes_and_pinned_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device_label(torch.device("cpu")) == "cpu"
    assert device_label(torch.device("cpu"), 2, 2) == "cpu x2"
    assert device_label(torch.device("cuda", 1), 2, 2) == "cuda:0,cuda:1"
    assert device_label(torch.device("cuda", 0), 4, 2) == "cuda:0,cuda:1 on 2 nodes"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the scheduler pinned this run
    assert device_label(torch.device("cuda", 0)) == "cuda:2"
    assert device_label(torch.device("cuda", 0), 2, 2) == "cuda:2,cuda:3"


AGENT = r"""
import signal, subprocess, sys, time
out = sys.argv[1]
child = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: (open(sys.argv[1], 'a').write('worker '), sys.exit(0))); print('ready', flush=True); time.sleep(60)"
workers = [subprocess.Popen([sys.executable, "-c", child, out], stdout=subprocess.PIPE, text=True) for _ in range(2)]
for w in workers:
    w.stdout.readline()
signal.signal(signal.SIGINT, lambda *a: open(out, "a").write("agent "))
print("ready", flush=True)
for w in workers:
    w.wait()
"""


def test_stop_request_goes_to_torchruns_workers_not_to_the_agent(tmp_path):
    record = tmp_path / "signals.txt"
    agent = TorchrunProcess([sys.executable, "-c", AGENT, str(record)], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout.readline().strip() == "ready"
        agent.send_signal(signal.SIGINT)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    assert sorted(record.read_text().split()) == ["worker", "worker"]


TEACHER_RANK = r"""
import os, sys, torch
import torch.distributed as dist
from pathlib import Path
from engine.teacher import Teacher
run_dir, batch_file, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
x, y = torch.load(batch_file, weights_only=True)
teacher = Teacher(run_dir, torch.device("cpu"), channels_last=False, mode="train", sync_bn=True)
torch.save(teacher.logits(x[rank::world], y[rank::world]), f"{out}.rank{rank}")
dist.destroy_process_group()
"""


def test_a_train_mode_teacher_with_sync_bn_normalises_over_the_global_batch(tmp_path):
    """KD under DDP with train.sync_bn: the teacher's batch statistics are the global batch's, so
    the ranks' teacher logits are those of one process fed the whole batch."""
    from engine.checkpoint import save_checkpoint
    from engine.config import load_config
    from engine.models import build_model
    from engine.teacher import Teacher

    cfg = load_config("resnet50_pretrained_arcface_224x224", ["model.backbone=test_resnet", "model.pretrained=false",
                                                              "data.image_size=32"])
    torch.manual_seed(0)
    run_dir = tmp_path / "teacher"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    save_checkpoint({"model": build_model(cfg.model).state_dict(), "epoch": 1}, run_dir / "checkpoints" / "best.pt")
    x, y = torch.rand(10, 3, 32, 32), torch.randint(0, 100, (10,))
    torch.save((x, y), tmp_path / "batch.pt")
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "-c", TEACHER_RANK, str(run_dir), str(tmp_path / "batch.pt"),
                               str(tmp_path / "out")], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    for proc in ranks:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    shards = [torch.load(tmp_path / f"out.rank{r}", weights_only=True) for r in (0, 1)]
    together = torch.empty(10, 100)
    together[0::2], together[1::2] = shards
    whole = Teacher(run_dir, torch.device("cpu"), channels_last=False, mode="train").logits(x, y)
    torch.testing.assert_close(together, whole, rtol=1e-4, atol=1e-5)
    alone = Teacher(run_dir, torch.device("cpu"), channels_last=False, mode="train").logits(x[0::2], y[0::2])
    assert not torch.allclose(shards[0], alone, atol=1e-3)  # a rank's share alone normalises differently
