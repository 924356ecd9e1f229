"""GPU scheduling, tested on the CPU with a simulated device list (CIFAR_TUI_GPUS): the device list,
the side-by-side runner (cifar_tui.follow.follow_many over the supervisor) with stand-in runs, and the
real engine through the CLI, including two CLIs sharing one GPU through the store's leases.
The supervisor's slot rules themselves are unit-tested in tests/unit/test_supervisor.py."""
from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from cifar_tui.follow import follow_many
from cifar_tui.gpus import visible_gpus
from cifar_tui.launch import Launched
from cifar_tui.workspace import Workspace
from cifar_tui.supervisor import Supervisor
from engine.record.events import read_events
from engine.fault_hooks import OOM_AT_STEP

from tests.conftest import CLI, cli, set_args, tiny_overrides


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
def fake_spawn():
    """A spawner for the supervisor that starts FAKE_RUN processes instead of engines."""
    launched: list[Launched] = []
    settings = {"seconds": 2.0}

    def spawn(ws, item, *, run_id, cfg, nproc, torchrun_args, env):
        run_dir = ws.home / run_id
        run_dir.mkdir(parents=True)
        proc = subprocess.Popen([sys.executable, "-c", FAKE_RUN, str(run_dir / "events.jsonl"), run_id,
                                 str(settings["seconds"])], env={**os.environ, **(env or {})})
        launched.append(Launched(run_id, run_dir, proc))
        return launched[-1]

    yield spawn, launched, settings
    for item in launched:
        if item.process.poll() is None:
            item.process.kill()
            item.process.wait()


def _side_by_side(tmp_path: Path, spawn, n: int, gpus=("0", "1"), **kwargs) -> tuple[Supervisor, int]:
    sup = Supervisor(Workspace(home=tmp_path / "runs", data_root=tmp_path / "data"), gpus=list(gpus),
                     shared_queue=False, spawner=spawn)
    for _ in range(n):
        sup.enqueue("resnet18_baseline", ["data.source=synthetic"])
    said = io.StringIO()
    code = follow_many(sup, json_mode=False, console=Console(file=said), poll_s=0.05,
                       finish=kwargs.get("finish", lambda reaped, code, end: code))
    sup.said = said.getvalue()  # what follow_many printed: a failed assert shows it
    return sup, code


def _interval(run: Launched) -> tuple[float, float, str | None]:
    events = read_events(run.events_path)
    start = next(e for e in events if e["type"] == "start")
    end = next(e for e in events if e["type"] == "end")
    return start["t"], end["t"], start["visible_devices"]


def test_parallel_runs_one_per_gpu_and_the_next_waits_for_a_free_one(tmp_path, fake_spawn):
    spawn, launched, _ = fake_spawn
    finished = []
    sup, code = _side_by_side(tmp_path, spawn, 3, finish=lambda reaped, code, end: finished.append(
        (reaped.run_id, code, end["status"])) or code)
    assert code == 0, sup.said
    assert sorted(finished) == sorted((r.run_id, 0, "completed") for r in launched) and len(launched) == 3
    assert sup.leases.held() == [] and all(h["released_at"] for h in sup.leases.history())
    (a0, a1, a_gpu), (b0, b1, b_gpu), (c0, c1, c_gpu) = (_interval(r) for r in launched)
    assert {a_gpu, b_gpu} == {"0", "1"}
    assert c0 >= min(a1, b1)  # the third waited for a GPU to be released
    for start, end, gpu in ((a0, a1, a_gpu), (b0, b1, b_gpu)):
        if c0 < end:  # runs at the same time never share a GPU
            assert c_gpu != gpu


def test_ctrl_c_stops_every_running_run_and_starts_no_more(tmp_path, fake_spawn):
    spawn, launched, settings = fake_spawn
    settings["seconds"] = 60.0

    def interrupt_when_both_started():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(launched) == 2 and all(read_events(r.events_path) for r in launched):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    threading.Thread(target=interrupt_when_both_started, daemon=True).start()
    sup, code = _side_by_side(tmp_path, spawn, 3)
    assert code == 130 and len(launched) == 2
    assert [read_events(r.events_path)[-1]["status"] for r in launched] == ["stopped", "stopped"]
    assert sup.queued() == []  # the third was dropped, not left waiting


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


# ---------------------------------------------------------------- two launchers, one GPU (issue 10)


def _lease_intervals(home: Path) -> list[tuple[float, float, str]]:
    conn = sqlite3.connect(home / "cifar_tui.db")
    rows = conn.execute("SELECT acquired_at, released_at, run_id FROM lease_log WHERE slot='gpu:0' ORDER BY acquired_at")
    out = [(a, r, rid) for a, r, rid in rows]
    conn.close()
    return out


def test_two_parallel_clis_started_together_never_share_the_one_gpu(workspace):
    """Two `cifar-tui run A B --parallel` started at the same moment in two shells, one simulated GPU:
    never two engines on it at once (by the runs' own start/end events and by the lease history)."""
    env = {**workspace["env"], "CIFAR_TUI_GPUS": "0", "OMP_NUM_THREADS": "1"}
    overrides = tiny_overrides(data__train_limit=64, data__test_limit=64, train__batch_size=32, train__epochs=1)
    args = [*CLI, "run", "resnet18_baseline", "resnet18_baseline", "--parallel", *set_args(overrides)]
    shells = [subprocess.Popen(args, env=env, cwd=workspace["tmp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in shells]
    assert [p.returncode for p in shells] == [0, 0], outputs
    assert any("waiting for a slot: needs 1 GPU, 0 free: GPU 0 held by" in out for out, _ in outputs), outputs
    spans = []
    for events_file in workspace["home"].glob("*/events.jsonl"):
        events = read_events(events_file)
        start = next(e for e in events if e["type"] == "start")
        end = next(e for e in events if e["type"] == "end")
        assert (start["visible_devices"], end["status"]) == ("0", "completed")
        spans.append((start["t"], end["t"]))
    spans.sort()
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans  # the next engine started after the previous one ended
    leases = _lease_intervals(workspace["home"])
    assert len(leases) == 4 and all(released for _, released, _ in leases), leases
    for (_, released, _), (acquired, _, _) in zip(leases, leases[1:]):
        assert acquired >= released, leases  # one holder of GPU 0 at a time, across both processes


# ---------------------------------------------------------------- exit codes and the --max-parallel cap


def _spans(home: Path) -> list[tuple[float, float]]:
    spans = []
    for events_file in home.glob("*/events.jsonl"):
        events = read_events(events_file)
        spans.append((next(e for e in events if e["type"] == "start")["t"], events[-1]["t"]))
    return spans


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    marks = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])  # an end before a start at the same t
    alive = most = 0
    for _, step in marks:
        alive += step
        most = max(most, alive)
    return most


def test_run_exits_1_when_the_run_fails(workspace):
    env = {**workspace["env"], OOM_AT_STEP: "2", "OMP_NUM_THREADS": "1"}  # a CUDA out-of-memory error at step 2
    res = cli({**workspace, "env": env}, "run", "resnet18_baseline",
              *set_args(tiny_overrides(model__backbone="test_resnet", train__epochs=1)))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "failed" in res.stdout + res.stderr and "out of memory" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    (row,) = [json.loads(line) for line in cli(workspace, "runs", "--json").stdout.splitlines()]
    assert row["status"] == "failed"


def test_max_parallel_caps_the_runs_alive_at_once_on_the_cpu(workspace):
    """Without GPUs, runs take the CPU one at a time unless --max-parallel says otherwise: with 2,
    three names run two at a time (never three, and not one after another)."""
    env = {**workspace["env"], "CIFAR_TUI_GPUS": "", "OMP_NUM_THREADS": "1"}
    # long enough (seconds) that two engines started together are alive together
    overrides = tiny_overrides(model__backbone="test_resnet", data__train_limit=1024, train__batch_size=16,
                               train__epochs=2)
    res = cli({**workspace, "env": env}, "run", "resnet18_baseline", "resnet18_baseline", "resnet18_baseline",
              "--parallel", "--max-parallel", "2", *set_args(overrides))
    assert res.returncode == 0, res.stdout + res.stderr
    spans = _spans(workspace["home"])
    assert len(spans) == 3
    assert _most_at_once(spans) == 2, spans
    rows = [json.loads(line) for line in cli(workspace, "runs", "--json").stdout.splitlines()]
    assert [r["status"] for r in rows] == ["completed"] * 3
