"""The suite's warm engine (tests/support/warm_engine.py) is the real engine: a run started warm
ends exactly as the same run started cold (events, metrics, weights, exit codes), a stop, a
failure, bad input and a SIGKILL of the spawned process do what they do cold, and a start whose
environment could make it differ goes cold."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cifar_tui.launch import LaunchRequest, launch
from cifar_tui.workspace import Workspace
from engine.record.events import read_events
from engine.fault_hooks import OOM_AT_STEP
from engine.record.status import pid_alive

from tests.support.checkpoints import epoch_metrics
from tests.support.warm_engine import PROJECT_ROOT, SOCKET_ENV

SMALL = ["model.backbone=test_resnet", "data.source=synthetic", "data.train_limit=128", "data.test_limit=64",
         "train.batch_size=32", "train.device=cpu", "train.epochs=2", "data.augment=crop_flip", "data.shuffle=true"]

pytestmark = pytest.mark.skipif(not os.environ.get(SOCKET_ENV), reason="the session runs without the warm engine "
                                "(--cold-engines)")


def start(tmp_path: Path, name: str, *overrides: str, env: dict | None = None):
    ws = Workspace(home=tmp_path / name, data_root=tmp_path / "data")
    return launch(ws, LaunchRequest("resnet18_baseline", [*SMALL, *overrides]), env={"OMP_NUM_THREADS": "1", **(env or {})})


def wait_start(run, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        starts = [e for e in read_events(run.events_path) if e["type"] == "start"]
        if starts:
            return starts[0]
        assert run.process.poll() is None, (run.run_dir / "stdout.log").read_text()
        time.sleep(0.02)
    raise AssertionError("no start event")


def shape(run) -> list[str]:
    """The run's events but those that come by the clock (steps: at most 5 a second; heartbeats)."""
    return [e["type"] for e in read_events(run.events_path) if e["type"] not in ("step", "heartbeat")]


def test_a_warm_start_is_the_engine_itself_and_ends_exactly_as_a_cold_one(tmp_path, monkeypatch):
    warm = start(tmp_path, "warm")
    assert warm.process.wait(120) == 0, (warm.run_dir / "stdout.log").read_text()
    monkeypatch.delenv(SOCKET_ENV)
    cold = start(tmp_path, "cold")
    assert cold.process.wait(120) == 0, (cold.run_dir / "stdout.log").read_text()

    warm_start, cold_start = (read_events(r.events_path)[0] for r in (warm, cold))
    assert cold_start["pid"] == cold.process.pid  # cold: the spawned process is the engine
    assert warm_start["pid"] != warm.process.pid  # warm: a fork of the server, the spawned one its stand-in
    assert shape(warm) == shape(cold) and shape(warm).count("epoch") == 2
    assert epoch_metrics(warm.run_dir) == epoch_metrics(cold.run_dir)  # one thread each: the same sums
    assert read_events(warm.events_path)[-1]["weights_sha256"] == read_events(cold.events_path)[-1]["weights_sha256"]
    for key in ("config", "data_source", "device", "params", "flops", "steps_per_epoch", "visible_devices"):
        assert warm_start[key] == cold_start[key], key
    logs = [(r.run_dir / "stdout.log").read_text().splitlines() for r in (warm, cold)]
    assert [line.split(":")[0] for line in logs[0]] == [line.split(":")[0].replace(cold.run_id, warm.run_id)
                                                        for line in logs[1]]
    command = warm_start["provenance"]["command"]
    assert "-m engine.train" in command and warm.run_id in command


def test_a_warm_engine_stops_fails_refuses_and_dies_as_a_cold_one(tmp_path):
    stopping = start(tmp_path, "stop", "train.epochs=1000")
    engine_pid = wait_start(stopping)["pid"]
    stopping.process.send_signal(signal.SIGINT)  # Ctrl-C to the spawned process: the stand-in passes it on
    assert stopping.process.wait(120) == 130
    end = read_events(stopping.events_path)[-1]
    assert end["type"] == "end" and end["status"] == "stopped"
    assert not pid_alive(engine_pid)

    failing = start(tmp_path, "fail", env={OOM_AT_STEP: "2"})
    assert failing.process.wait(120) == 1
    assert read_events(failing.events_path)[-1]["status"] == "failed"
    assert "error: " in (failing.run_dir / "stdout.log").read_text()

    refused = start(tmp_path, "refused", "model.backbone=resnet19")
    assert refused.process.wait(120) == 2
    log = (refused.run_dir / "stdout.log").read_text().strip().splitlines()
    assert len(log) == 1 and "model.backbone" in log[0] and "Traceback" not in log[0]

    killed = start(tmp_path, "killed", "train.epochs=1000")
    engine = psutil.Process(wait_start(killed)["pid"])
    keeper = engine.parent()
    killed.process.kill()  # the stand-in cannot pass SIGKILL on: its keeper kills the engine, then goes
    assert killed.process.wait(30) == -signal.SIGKILL
    psutil.wait_procs([engine, keeper], timeout=30)
    assert not pid_alive(engine.pid) and not pid_alive(keeper.pid)


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "2"},  # read as glibc starts
                                 {"SLURM_JOB_ID": "7"}],     # a SLURM job's engine stays in its job
                         ids=["import-time", "slurm-job"])
def test_a_start_whose_environment_could_differ_is_a_cold_one(tmp_path, env):
    cold = start(tmp_path, "cold", "train.epochs=1", env=env)
    assert wait_start(cold)["pid"] == cold.process.pid
    assert cold.process.wait(120) == 0


def test_what_imports_in_the_launcher_do_to_its_environment_does_not_make_starts_cold(tmp_path):
    """OpenCV's import (albumentations, in many tests) adds a missing folder to LD_LIBRARY_PATH
    of this process: what counts is the folders that exist, so engines still start warm; so do
    variables read when CUDA starts (the server never starts it)."""
    import cv2  # noqa: F401

    assert "LD_LIBRARY_PATH" in os.environ
    # cuBLAS reads its workspace setting when CUDA starts, in the engine (the GPU suite sets it)
    warm = start(tmp_path, "warm", "train.epochs=1", env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    assert wait_start(warm)["pid"] != warm.process.pid
    assert warm.process.wait(120) == 0


def test_the_warm_engine_ends_when_its_test_session_is_killed(tmp_path):
    """A test session killed outright (SIGKILL: a CI timeout) leaves no warm engine behind: the
    server sees that the session is no longer its parent and ends."""
    session = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from tests.support.warm_engine import WarmEngine; "
         f"engine = WarmEngine(Path({str(tmp_path)!r})); print(engine.process.pid, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd=str(PROJECT_ROOT), start_new_session=True)
    server = psutil.Process(int(session.stdout.readline()))
    assert server.is_running() and (tmp_path / "engine.sock").exists()
    session.kill()
    session.wait(30)
    gone, alive = psutil.wait_procs([server], timeout=120)  # a bound for a stuck server: it imports torch first
    assert not alive, f"the warm engine outlived its session: {alive}"


def test_a_module_an_editable_install_finds_is_found_off_sys_path():
    """CI installs the checkout editable (make install) and sets no PYTHONPATH: an engine spawned in a
    run folder has no checkout on sys.path and still imports it through the install's finder. Such a
    start is as warm as any (it started cold in CI: 192 of 304 starts)."""
    import importlib.util
    import sys

    from tests.support.warm_engine import PRELOAD, find_spec_on

    editable = [f for f in sys.meta_path if getattr(f, "__name__", type(f).__name__) == "_EditableFinder"]
    if not editable:
        pytest.skip("no editable install of the project in this interpreter")
    expected = editable[0].find_spec("engine", None)
    # an engine's sys.path in a run folder: the interpreter's own, no checkout, no PYTHONPATH
    off_checkout = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != PROJECT_ROOT
                    and p not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    spec = find_spec_on("engine", off_checkout)
    assert spec is not None and spec.origin == expected.origin
    assert find_spec_on("engine", [str(PROJECT_ROOT)]).origin == importlib.util.find_spec("engine").origin
    # what the warm engine preloads is found off the checkout where this process found it: such a start is warm
    for name in sorted({module.split(".")[0] for module in PRELOAD}):
        assert find_spec_on(name, off_checkout).origin == importlib.util.find_spec(name).origin, name
