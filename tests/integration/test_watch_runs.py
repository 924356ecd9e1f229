"""Watching real runs from the command line: a stalled run (a hung DataLoader worker) shows as
`stalled` in `cifar-tui runs`, is notified once, reported by `cifar-tui wait`, and `cifar-tui stop`
ends it; a dead DataLoader worker fails the run saying so; the heartbeat carries telemetry;
`cifar-tui wait` exit codes.

How a run is made to stall: the seed's albumentations pipeline runs in a DataLoader worker, and
the test SIGSTOPs that worker. It is the real failure (a worker that stops answering: a deadlock,
a blocked read), in the real pipeline, with nothing in the engine that knows it is a test: the
training loop blocks in the DataLoader while the heartbeat thread beats on."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from cifar_tui.launch import LaunchRequest, Launched, launch
from cifar_tui.workspace import Workspace
from engine.record.events import read_events
from engine.record.store import Store

from tests.conftest import CLI, cli, set_args
from tests.support.reliability import drive, fast, procs, wait_until  # noqa: F401 - procs is a fixture
from tests.support.tui import fake_run
from tests.support.webhook import Hook

ENGINE_TIMEOUT = 300
# the seed's augmentation in one DataLoader worker; a first epoch of 2048 ResNet-18 steps (minutes here):
# the run is still in it when the test has seen it healthy and then stalled
ALBU = fast(model__backbone="resnet18", data__augment="albumentations", data__num_workers=1, data__train_limit=16384,
            train__batch_size=8, train__epochs=3)
STALL_S = "2"


def _start(workspace: dict, procs, env: dict[str, str]) -> Launched:
    launched = launch(Workspace(home=workspace["home"], data_root=workspace["data"]),
                      LaunchRequest("resnet18_baseline", ALBU), env={"OMP_NUM_THREADS": "1", **env})
    procs.add(launched.process)
    return launched


def _worker(events: Path, procs) -> psutil.Process:
    """The run's DataLoader worker (the engine's child), once the run is training."""
    wait_until(lambda: any(e["type"] == "step" for e in read_events(events)), ENGINE_TIMEOUT, "the first step")
    engine_pid = next(e["pid"] for e in read_events(events) if e["type"] == "start")
    (worker,) = psutil.Process(engine_pid).children(recursive=True)
    procs.add_pid(worker.pid)
    return worker


def _status(workspace: dict, run_id: str) -> dict:
    res = cli(workspace, "runs", "--json")
    assert res.returncode == 0, res.stderr
    return next(r for r in map(json.loads, res.stdout.splitlines()) if r.get("run_id") == run_id)


@pytest.mark.timeout(400)
def test_a_hung_dataloader_worker_is_stalled_notified_once_and_stopped(workspace, procs):
    hook = Hook()
    env = {"CIFAR_TUI_STALL_AFTER_S": STALL_S, "CIFAR_TUI_NOTIFY_URL": hook.url("/ok")}
    workspace["env"].update(env)
    workspace["env"]["OMP_NUM_THREADS"] = "1"
    try:
        # a foreground `cifar-tui run`: it follows its run and looks for stalled runs too
        log = workspace["tmp"] / "run.log"
        with open(log, "w") as out:
            foreground = procs.add(subprocess.Popen([*CLI, "run", "resnet18_baseline", *set_args(ALBU)],
                                                    env=workspace["env"], cwd=workspace["tmp"], stdout=out,
                                                    stderr=subprocess.STDOUT))
        run_dir = wait_until(lambda: next((d for d in workspace["home"].glob("resnet18_baseline-*")
                                           if (d / "events.jsonl").exists()), None), ENGINE_TIMEOUT, "the run")
        run = SimpleNamespace(run_id=run_dir.name, events_path=run_dir / "events.jsonl")
        worker = _worker(run.events_path, procs)
        # training and beating: each beat reports the last step, so the run is not stalled between
        # epochs (the first epoch lasts long enough that no epoch-end write could stand in for that)
        first_step = next(e["t"] for e in read_events(run.events_path) if e["type"] == "step")
        wait_until(lambda: any(e["type"] == "heartbeat" and e["t"] > first_step for e in read_events(run.events_path)),
                   60, "a heartbeat while training")
        healthy = _status(workspace, run.run_id)
        assert healthy["epochs_done"] == 0, "the first epoch ended too soon for this test: give it more steps"
        assert healthy["status"] == "running" and healthy["progress_at"] >= first_step
        waiter = procs.add(subprocess.Popen([*CLI, "wait", run.run_id[:-3]], env=workspace["env"], cwd=workspace["tmp"],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        worker.send_signal(signal.SIGSTOP)
        stalled_at = time.monotonic()
        row = wait_until(lambda: (r := _status(workspace, run.run_id))["status"] == "stalled" and r, 60, "stalled")
        took = time.monotonic() - stalled_at
        assert row["heartbeat_at"] - row["progress_at"] > float(STALL_S)
        assert _status(workspace, run.run_id)["status"] == "stalled"  # a second observer: no second notice
        hook.wait_for("/ok")
        stalls = [p["body"] for p in hook.received("/ok") if p["body"]["status"] == "stalled"]
        assert len(stalls) == 1  # three observers saw it: `runs` twice and the foreground `run` and stalls[0]["run_id"] == run.run_id and stalls[0]["event"] == "run_alert"
        assert stalls[0]["detail"].startswith("alive but no step for")

        # the heartbeat beat on with telemetry (a CPU run: no GPU fields) and the same last step
        beats = [e for e in read_events(run.events_path) if e["type"] == "heartbeat"]
        assert beats and all(set(b["telemetry"]) == {"cpu_percent", "rss_mb", "gpus"} for b in beats)
        assert all(b["telemetry"]["gpus"] is None and b["telemetry"]["rss_mb"] > 50 for b in beats)
        assert isinstance(beats[-1]["telemetry"]["cpu_percent"], float)

        # the foreground `run` says it too, on its own look (it looks every few seconds): before the stop
        wait_until(lambda: f"stalled {run.run_id}" in log.read_text(), 60, "the foreground run to say it is stalled")
        stop = procs.add(subprocess.Popen([*CLI, "stop", run.run_id, "--wait", "60"], env=workspace["env"],
                                          cwd=workspace["tmp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        end = wait_until(lambda: [e for e in read_events(run.events_path) if e["type"] == "end"], 60, "the end event")
        assert end[-1]["status"] == "stopped"
        # A SIGSTOPped process does not act on the SIGTERM that the DataLoader's shutdown sends it (a
        # deadlocked worker would die of it), and the engine's exit waits for it: the test ends it.
        worker.kill()
        out, _ = stop.communicate(timeout=60)
        assert stop.returncode == 0, out
        assert "is stalled: asking again" in out and f"{run.run_id}: stopped" in out
        assert foreground.wait(60) == 130  # the engine's code: stopped
        said = log.read_text()
        assert said.count(f"stalled {run.run_id}") == 1
        assert f"stopped {run.run_id} at step " in said and " of epoch 1 (0 epochs done)" in said  # where it stopped
        waited_out, waited_err = waiter.communicate(timeout=60)
        assert waiter.returncode == 3, waited_out + waited_err  # stopped: not finished, resumable
        assert waited_err.count("stalled") == 1 and f"stopped {run.run_id}" in waited_out
        assert [p["body"]["status"] for p in hook.received("/ok")] == ["stalled", "stopped"]  # the engine's end
        print(f"stalled shown {took:.1f}s after the worker hung (threshold {STALL_S}s, heartbeat 5s)")
    finally:
        hook.close()


@pytest.mark.timeout(300)
def test_a_dead_dataloader_worker_fails_the_run_saying_so(workspace, procs):
    run = _start(workspace, procs, {})
    _worker(run.events_path, procs).kill()
    assert run.process.wait(ENGINE_TIMEOUT) == 1
    end = [e for e in read_events(run.events_path) if e["type"] == "end"][-1]
    assert end["status"] == "failed"
    # torch says "DataLoader worker (pid N) is killed by signal", or the batch hand-over breaks first
    assert end["error"].startswith("a DataLoader worker of the augmentation pipeline died ("), end["error"]
    assert "data.num_workers" in end["error"] and "cifar-tui resume" in end["error"]
    assert _status(workspace, run.run_id)["error"] == end["error"]
    res = cli(workspace, "wait", run.run_id)
    assert res.returncode == 1 and f"failed {run.run_id}: a DataLoader worker" in res.stdout


def test_wait_exit_codes(workspace, procs):
    home = workspace["home"]
    home.mkdir(parents=True)
    done = fake_run(home, "resnet18_baseline", "00a1", epochs=2)
    stopped = fake_run(home, "resnet18_baseline", "00b2", epochs=4, done=1, status="stopped", t0=1767225600.0 + 60)
    failed = fake_run(home, "resnet18_pretrained", "00c3", epochs=2, done=1, status="failed", t0=1767225600.0 + 120)
    crashed = fake_run(home, "resnet18_cifar_sgd", "00d4", epochs=2, done=1, status=None, t0=1767225600.0 + 180)
    base = workspace["tmp"]
    cases = [["wait", done[:-2]], ["wait", done, stopped], ["wait", done, failed], ["wait", crashed],
             ["wait", "nosuchrun"], ["wait", "--json", done]]
    results = drive([(base, c) for c in cases])
    assert [r["code"] for r in results] == [0, 3, 1, 1, 2, 0], results
    assert f"completed {done}: best test acc" in results[0]["stdout"]
    assert "run 'nosuchrun': not found" in results[4]["stderr"] and len(results[4]["stderr"].splitlines()) == 1
    assert json.loads(results[5]["stdout"])["status"] == "completed"

    # a live run: wait blocks until it ends, and Ctrl-C leaves it with 130. Its last step was two
    # minutes ago, so each wait reports it stalled (once) when it first looks: then it still waits.
    sleeper = procs.add(subprocess.Popen(["sleep", "300"]))
    live = "resnet18_baseline-20260101T100000Z-00e5"
    store = Store(home)
    for rid in (live, live + "x"):
        store.run_started(rid, config={"name": "resnet18_baseline", "data": {"source": "synthetic"}}, device="cpu",
                          pid=sleeper.pid, run_dir=str(home / rid), epochs_total=5, params=1, flops=None)
        store.heartbeat(rid, 1.0, progress_at=time.time() - 120)
    errs = [base / f"wait-{i}.err" for i in range(2)]
    waiting = []
    for rid, err in zip((live, live + "x"), errs):
        with open(err, "w") as stderr:
            waiting.append(procs.add(subprocess.Popen([*CLI, "wait", rid, "--poll", "0.2", "--stall-after", "60s"],
                                                      env=workspace["env"], cwd=base, stdout=subprocess.PIPE,
                                                      stderr=stderr, text=True)))
    deadline = time.monotonic() + 120
    while not all("stalled" in err.read_text() for err in errs) and time.monotonic() < deadline:
        assert [w.poll() for w in waiting] == [None, None], [err.read_text() for err in errs]
        time.sleep(0.05)
    assert all("stalled" in err.read_text() for err in errs), [err.read_text() for err in errs]
    assert [w.poll() for w in waiting] == [None, None]  # it looked, and waits on
    store.run_ended(live, "completed", None, 10.0)
    assert waiting[0].wait(30) == 0
    waiting[1].send_signal(signal.SIGINT)
    assert waiting[1].wait(30) == 130
    store.close()
