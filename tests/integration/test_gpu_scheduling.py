"""GPU scheduling for queues, tested on the CPU with a simulated device list (CIFAR_TUI_GPUS)."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cifar_tui.gpus import GpuScheduler, Slot, run_parallel, visible_gpus
from cifar_tui.launch import LaunchRequest, Launched, Workspace
from engine.config import ConfigError
from engine.events import read_events

from tests.conftest import cli, set_args, tiny_overrides


# ---------------------------------------------------------------- the device list


def _fake_nvidia_smi(tmp_path: Path, script: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return {"PATH": str(bin_dir)}


def test_visible_gpus_reads_the_simulation_then_cuda_visible_devices():
    assert visible_gpus({"CIFAR_TUI_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "3"}) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == ["0"]  # CUDA stops at an invalid entry
    assert visible_gpus({"CIFAR_TUI_GPUS": ""}) == []


def test_visible_gpus_asks_nvidia_smi(tmp_path):
    env = _fake_nvidia_smi(tmp_path, 'test "$1" = --query-gpu=index && test "$2" = --format=csv,noheader && printf "0\\n1\\n"\n')
    assert visible_gpus(env) == ["0", "1"]


def test_no_nvidia_smi_or_a_failing_one_means_cpu(tmp_path):
    assert visible_gpus({"PATH": str(tmp_path)}) == []
    assert visible_gpus(_fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")) == []


# ---------------------------------------------------------------- the scheduler


def test_one_run_per_gpu_then_wait():
    s = GpuScheduler(["0", "1"])
    a, b = s.allocate(), s.allocate()
    assert (a.gpus, b.gpus) == (("0",), ("1",)) and s.allocate() is None and s.running == 2
    s.release(a)
    c = s.allocate()
    assert c.gpus == ("0",) and c.env() == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert c.label == "GPU 0"


def test_a_ddp_run_takes_several_gpus():
    s = GpuScheduler(["0", "1", "2", "3"])
    a = s.allocate(2)
    b = s.allocate(2)
    assert a.gpus == ("0", "1") and b.gpus == ("2", "3") and s.allocate(2) is None
    assert a.env()["CUDA_VISIBLE_DEVICES"] == "0,1" and a.label == "GPUs 0,1"
    s.release(b)
    assert s.allocate(1).gpus == ("2",) and s.allocate(2) is None  # only GPU 3 is free
    with pytest.raises(ConfigError, match="needs 8 GPUs but 4"):
        s.allocate(8)


def test_max_parallel_caps_gpu_runs():
    s = GpuScheduler(["0", "1", "2"], max_parallel=2)
    assert s.allocate() and s.allocate() and s.allocate() is None


def test_without_gpus_runs_take_the_cpu_one_at_a_time_unless_told():
    s = GpuScheduler([])
    slot = s.allocate(2)  # a 2-process DDP run on the CPU
    assert slot == Slot(()) and slot.env() == {} and slot.label == "CPU"
    assert s.allocate() is None
    s.release(slot)
    assert s.allocate() is not None
    two = GpuScheduler([], max_parallel=2)
    assert two.allocate() and two.allocate() and two.allocate() is None
    with pytest.raises(ConfigError):
        GpuScheduler([], max_parallel=0)


# ---------------------------------------------------------------- the parallel runner, with stand-in runs

FAKE_RUN = r"""
import json, os, signal, sys, time
path, run_id, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
def emit(kind, **fields):
    with open(path, "a") as f:
        f.write(json.dumps({"v": 1, "t": time.time(), "type": kind, "run_id": run_id, **fields}) + "\n")
stopped = []
signal.signal(signal.SIGINT, lambda *a: stopped.append(1))
emit("start", config_name="fake", device="cpu", visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
deadline = time.time() + seconds
while time.time() < deadline and not stopped:
    time.sleep(0.02)
emit("end", status="stopped" if stopped else "completed")
"""


@pytest.fixture
def fake_launch(monkeypatch):
    counter = itertools.count(1)
    launched: list[Launched] = []
    settings = {"seconds": 2.0}

    def launch(ws, request, *, cfg=None, nproc=1, torchrun_args=None, env=None):
        run_id = f"{request.config_ref}-{next(counter)}"
        run_dir = ws.home / run_id
        run_dir.mkdir(parents=True)
        proc = subprocess.Popen([sys.executable, "-c", FAKE_RUN, str(run_dir / "events.jsonl"), run_id,
                                 str(settings["seconds"])], env={**os.environ, **(env or {})})
        launched.append(Launched(run_id, run_dir, proc))
        return launched[-1]

    monkeypatch.setattr("cifar_tui.launch.launch", launch)
    yield launched, settings
    for item in launched:
        if item.process.poll() is None:
            item.process.kill()
            item.process.wait()


def _jobs(n: int) -> list:
    return [(LaunchRequest(f"job{i}"), None) for i in range(n)]


def _interval(run: Launched) -> tuple[float, float, str | None]:
    events = read_events(run.events_path)
    start = next(e for e in events if e["type"] == "start")
    end = next(e for e in events if e["type"] == "end")
    return start["t"], end["t"], start["visible_devices"]


def test_parallel_runs_one_per_gpu_and_the_next_waits_for_a_free_one(tmp_path, fake_launch):
    launched, _ = fake_launch
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    finished = []
    code = run_parallel(ws, _jobs(3), scheduler=GpuScheduler(["0", "1"]), poll_s=0.05,
                        finish=lambda run, code, end: finished.append((run.run_id, code, end["status"])) or code)
    assert code == 0
    assert sorted(finished) == [("job0-1", 0, "completed"), ("job1-2", 0, "completed"), ("job2-3", 0, "completed")]
    (a0, a1, a_gpu), (b0, b1, b_gpu), (c0, c1, c_gpu) = (_interval(r) for r in launched)
    assert {a_gpu, b_gpu} == {"0", "1"}
    assert c0 >= min(a1, b1)  # the third waited for a GPU to be released
    for start, end, gpu in ((a0, a1, a_gpu), (b0, b1, b_gpu)):
        if c0 < end:  # runs at the same time never share a GPU
            assert c_gpu != gpu


def test_ctrl_c_stops_every_running_run_and_starts_no_more(tmp_path, fake_launch):
    launched, settings = fake_launch
    settings["seconds"] = 60.0
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")

    def interrupt_when_both_started():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(launched) == 2 and all(read_events(r.events_path) for r in launched):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    threading.Thread(target=interrupt_when_both_started, daemon=True).start()
    code = run_parallel(ws, _jobs(3), scheduler=GpuScheduler(["0", "1"]), poll_s=0.05)
    assert code == 130 and len(launched) == 2
    assert [read_events(r.events_path)[-1]["status"] for r in launched] == ["stopped", "stopped"]


# ---------------------------------------------------------------- the real engine through the CLI


def test_cli_parallel_runs_two_engines_side_by_side_on_simulated_gpus(workspace):
    env = {**workspace["env"], "CIFAR_TUI_GPUS": "0,1"}
    overrides = tiny_overrides(data__train_limit=64, data__test_limit=64, train__batch_size=32, train__epochs=1)
    res = cli({**workspace, "env": env}, "run", "resnet18_baseline", "resnet18_baseline", "--parallel",
              *set_args(overrides))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    placed = [i for i, line in enumerate(lines) if " on GPU " in line and line.startswith("run ")]
    completed = [i for i, line in enumerate(lines) if line.startswith("completed ")]
    assert len(placed) == 2 and len(completed) == 2
    assert max(placed) < min(completed), res.stdout  # the second started before the first ended
    starts = [read_events(p)[0] for p in workspace["home"].glob("*/events.jsonl")]
    assert sorted(s["visible_devices"] for s in starts) == ["0", "1"]
    rows = [json.loads(line) for line in cli(workspace, "runs", "--json").stdout.splitlines()]
    assert sorted((r["status"], r["device"]) for r in rows) == [("completed", "cpu"), ("completed", "cpu")]


def test_cli_parallel_refuses_a_ddp_run_larger_than_the_gpus(workspace):
    env = {**workspace["env"], "CIFAR_TUI_GPUS": "0,1"}
    res = cli({**workspace, "env": env}, "run", "resnet18_baseline", "--parallel", "--nproc", "3",
              *set_args(tiny_overrides()))
    assert res.returncode == 2
    assert "needs 3 GPUs but 2" in res.stderr and "Traceback" not in res.stderr
    assert not workspace["home"].exists() or not any(p.is_dir() for p in workspace["home"].iterdir())
