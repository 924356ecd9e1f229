"""A stop that comes while the engine still starts (SLURM's time-limit warning passed on as SIGTERM
by the job's launcher, `cifar-tui stop` of a run just launched) is honoured once it can be: the run
writes its start, stops at its first step with a checkpoint, ends `stopped`, and resumes to the end.
Before, the signal ended the process in its imports and the run was lost (no events at all)."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cifar_tui.launch import LaunchRequest, launch, resume
from cifar_tui.workspace import Workspace
from engine.record.events import read_events

SMALL = ["model.backbone=test_resnet", "data.source=synthetic", "data.train_limit=128", "data.test_limit=64",
         "train.batch_size=32", "train.device=cpu", "train.epochs=2"]


def importing_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.cold_engine  # the signal must reach a process that is still importing (a warm one has imported)
def test_a_sigterm_while_the_engine_imports_torch_stops_it_gracefully_and_it_resumes(tmp_path):
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    run = launch(ws, LaunchRequest("resnet18_baseline", SMALL), env={"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not importing_torch(run.process.pid):
        assert run.process.poll() is None and time.monotonic() < deadline, "the engine never imported torch"
        time.sleep(0.005)
    assert not run.events_path.exists() or not read_events(run.events_path)  # still starting: nothing written
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(120) == 130, (run.run_dir / "stdout.log").read_text()
    events = read_events(run.events_path)
    types = [e["type"] for e in events]
    assert types[0] == "start" and "checkpoint" in types and events[-1]["type"] == "end"
    assert events[-1]["status"] == "stopped"

    again = resume(ws, run.run_id, env={"OMP_NUM_THREADS": "1"})
    assert again.process.wait(120) == 0, (run.run_dir / "stdout.log").read_text()
    ends = [e for e in read_events(run.events_path) if e["type"] == "end"]
    assert [e["status"] for e in ends] == ["stopped", "completed"] and ends[-1]["epochs_done"] == 2
