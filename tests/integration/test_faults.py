"""Fault injection, done for real: the engine is SIGKILLed mid-epoch, in the middle of writing a
checkpoint and between a checkpoint's fsync and its rename (each resumed run then ends bit for bit
as an uninterrupted one),
four writers share the store while a reader reads, the TUI process dies under live runs,
the disk fills up (RLIMIT_FSIZE) or the checkpoints folder turns read-only (chattr +i)
during a checkpoint, the data archive is truncated or altered, and a run hits a CUDA
out-of-memory error beside a healthy one.

Every engine here is a real `python -m engine.train` process on tiny synthetic data
(timm's 0.4M-parameter test_resnet). The promises are listed in docs/RELIABILITY.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cifar_tui.launch import LaunchRequest, Launched, Workspace, launch
from cifar_tui.launch import resume as launch_resume
from engine import data as D
from engine.checkpoint import TEST_PAUSE_IN_WRITE_ENV, TEST_SLOW_ENV, CheckpointError, load_checkpoint
from engine.config import DataConfig
from engine.events import EventTail, read_events
from engine.store import Store, pid_alive
from engine.fault_hooks import BEFORE_RENAME_MARKER, MID_WRITE_MARKER, OOM_AT_STEP
from engine.lifecycle import failure_message

from tests.conftest import CLI, cli, new_workspace, set_args
from tests.support.reliability import (drive, fast, one_error_line, procs, python_env, record,  # noqa: F401 - fixtures
                                       tally, wait_until)
from tests.support.unwritable import WHY_NOT, unwritable
from tests.support.warm_engine import COLD_START

CONFIG = "resnet18_baseline"
ENGINE_TIMEOUT = 300  # generous: the machine is shared and loaded; runs take seconds alone
# One intra-op thread per engine: several engines share two cores here, and torch's
# threads spinning against each other make a step ~8x slower.
ENGINE_ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread_engines(workspace):
    workspace["env"].update(ENGINE_ENV)  # engines started through the CLI


# ---------------------------------------------------------------------------
# helpers


def ws_of(workspace: dict) -> Workspace:
    return Workspace(home=workspace["home"], data_root=workspace["data"])


def start(workspace: dict, procs, overrides: list[str], env: dict[str, str] | None = None) -> Launched:
    launched = launch(ws_of(workspace), LaunchRequest(CONFIG, overrides), env={**ENGINE_ENV, **(env or {})})
    procs.add(launched.process)
    return launched


def events(run_dir: Path) -> list[dict]:
    return read_events(run_dir / "events.jsonl")


def has_event(run_dir: Path, **match) -> bool:
    return any(all(e.get(k) == v for k, v in match.items()) for e in events(run_dir))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob(".*.tmp-*"))


def runs_json(workspace: dict) -> dict[str, dict]:
    res = cli(workspace, "runs", "--json")
    assert res.returncode == 0, res.stderr
    return {r["run_id"]: r for r in map(json.loads, res.stdout.splitlines())}


def store_epochs(home: Path, run_id: str, tally=None) -> list[int]:
    store = Store(home)
    try:
        epochs = [e["epoch"] for e in store.epochs(run_id)]
    finally:
        store.close()
    if tally is not None:
        tally.rows(len(epochs))
    return epochs


def resume_to_the_end(workspace: dict, run_id: str, tally) -> None:
    res = cli(workspace, "resume", run_id)
    assert res.returncode == 0, res.stdout + res.stderr
    tally["runs_resumed"] += 1


def log_of(run_dir: Path) -> str:
    try:
        return (run_dir / "stdout.log").read_text(errors="replace")
    except OSError:
        return ""


def finished(launched: Launched, timeout: float = ENGINE_TIMEOUT) -> int:
    try:
        return launched.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{launched.run_id} still running after {timeout}s:\n{log_of(launched.run_dir)[-2000:]}")


# ---------------------------------------------------------------------------
# SIGKILL

# The run both SIGKILL tests kill and resume (64 steps an epoch: a kill lands well inside epoch 2),
# with shuffling and augmentation, so that an exact resume has RNG state and batch order to get right.
FAULT_RUN = fast(train__epochs=2, data__train_limit=1024, train__batch_size=16, data__shuffle="true",
                 data__augment="crop_flip")


def epoch_metrics(evs: list[dict]) -> dict[int, tuple]:
    """Each epoch's figures; an epoch done again after a kill counts with its last event."""
    return {e["epoch"]: (e["train_loss"], e["train_acc"], e["test_loss"], e["test_acc"])
            for e in evs if e["type"] == "epoch"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """FAULT_RUN without a fault: what every killed and resumed run must end with."""
    ws = new_workspace(tmp_path_factory.mktemp("uninterrupted"))
    ws["env"].update(ENGINE_ENV)
    res = cli(ws, "run", CONFIG, *set_args(FAULT_RUN))
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = [d for d in ws["home"].iterdir() if d.is_dir()]
    evs = events(run_dir)
    assert evs[-1]["status"] == "completed"
    return {"epochs": epoch_metrics(evs), "end": evs[-1]}


def assert_as_uninterrupted(run_dir: Path, uninterrupted: dict, tally) -> None:
    """Same epochs, same figures and bit-identical final weights (CPU, one thread: deterministic)."""
    evs = events(run_dir)
    got, want = epoch_metrics(evs), uninterrupted["epochs"]
    assert sorted(got) == sorted(want) == [1, 2]
    assert [x for e in sorted(got) for x in got[e]] == pytest.approx([x for e in sorted(want) for x in want[e]],
                                                                     rel=1e-6, abs=1e-9)
    assert evs[-1]["weights_sha256"] == uninterrupted["end"]["weights_sha256"], "the resumed run ended elsewhere"
    tally["resumes_equal_to_an_uninterrupted_run"] += 1


def test_sigkill_mid_epoch_keeps_the_last_checkpoint_and_resume_finishes(workspace, procs, request, tally, uninterrupted):
    launched = start(workspace, procs, FAULT_RUN, env=COLD_START)  # the process SIGKILLed: a true start
    run_dir, run_id = launched.run_dir, launched.run_id
    ckpt = run_dir / "checkpoints"
    wait_until(lambda: has_event(run_dir, type="checkpoint", is_best=True, epoch=1), ENGINE_TIMEOUT, "epoch 1's checkpoints")
    wait_until(lambda: has_event(run_dir, type="step", epoch=2), 120, "a step of epoch 2")
    tally.kill9(launched.process)

    before = events(run_dir)
    assert before[-1]["type"] != "end"
    # what the events say was last made durable (epoch 1's end, unless this machine stalled us for seconds)
    saved = [e for e in before if e["type"] == "checkpoint" and not e["is_best"]][-1]
    progress = [e for e in before if e["type"] != "heartbeat"]
    assert progress[-1]["type"] == "step" and progress[-1]["epoch"] > saved["epoch"], "not killed mid-epoch"
    last = load_checkpoint(ckpt / "last.pt")
    assert (last["epoch"], last["step_in_epoch"]) == (saved["epoch"], 0)
    assert load_checkpoint(ckpt / "best.pt")["epoch"] <= saved["epoch"]

    # a process killed inside a write leaves half a line: readers skip it
    events_file = run_dir / "events.jsonl"
    torn = '{"v": 1, "t": 1.0, "type": "step", "run_id": "%s", "epoch": %d, "lo' % (run_id, saved["epoch"] + 1)
    with open(events_file, "a", encoding="utf-8") as f:
        f.write(torn)
    tally.fault(torn_lines=1)
    assert read_events(events_file) == before
    tail = EventTail(events_file)
    assert tail.poll() == before  # the torn line waits as a partial line, it is not an event

    assert runs_json(workspace)[run_id]["status"] == "crashed"
    tally.rows(1)
    listing = cli(workspace, "runs")
    assert listing.returncode == 0 and "crashed" in listing.stdout

    resume_to_the_end(workspace, run_id, tally)
    after = events(run_dir)
    assert after[-1]["type"] == "end" and after[-1]["status"] == "completed"
    starts = [e for e in after if e["type"] == "start"]
    assert [s["resumed_from"] for s in starts] == [None, {"epoch": saved["epoch"], "step": 0}]
    assert [e["epoch"] for e in after if e["type"] == "epoch"] == [1, 2]
    assert torn + "\n" in events_file.read_text()  # kept, closed by the resumed writer, skipped by readers
    new = tail.poll()
    assert new[0]["type"] == "start" and new[-1]["type"] == "end" and all("type" in e for e in new)
    assert store_epochs(workspace["home"], run_id, tally) == [1, 2]
    row = runs_json(workspace)[run_id]
    assert row["status"] == "completed" and row["epochs_done"] == 2
    tally.rows(1)
    assert temp_files(run_dir) == []
    assert_as_uninterrupted(run_dir, uninterrupted, tally)
    tally.record(request)


def hook_pause(launched: Launched, marker: str, name: str) -> Path:
    """Wait until the engine says (test hook `marker`) that it paused writing checkpoint `name`; the
    file it is writing must be a temp file beside it, never `name` itself."""
    def paused_at() -> str | None:
        lines = [line for line in log_of(launched.run_dir).splitlines() if line.startswith(marker)]
        return lines[-1][len(marker):].split(" (")[0].strip() if lines else None

    written = Path(wait_until(paused_at, ENGINE_TIMEOUT, f"{name} being written"))
    assert written == launched.run_dir / "checkpoints" / f".{name}.tmp-{launched.process.pid}", written
    return written


def test_sigkill_inside_and_after_a_checkpoint_write_never_leaves_a_torn_checkpoint(workspace, procs, request, tally,
                                                                                  uninterrupted):
    """Killed twice in a checkpoint write: after best.pt's temp file is written and fsynced (before
    its rename), and in the middle of writing last.pt's temp file. Each time the previous checkpoint
    stays as it was, the torn temp file is never renamed into place or loaded, and the run, resumed,
    ends exactly as an uninterrupted one."""
    ws = ws_of(workspace)
    # 1. killed after best.pt of epoch 1 was written and fsynced, before its rename (last.pt of epoch 1 is done)
    first = start(workspace, procs, FAULT_RUN, env={TEST_SLOW_ENV: "best.pt:300", **COLD_START})  # SIGKILLed: true starts
    run_dir, run_id = first.run_dir, first.run_id
    ckpt = run_dir / "checkpoints"
    fsynced = hook_pause(first, BEFORE_RENAME_MARKER, "best.pt")
    assert load_checkpoint(fsynced)["epoch"] == 1  # complete: only the rename is missing
    tally.kill9(first.process)
    assert load_checkpoint(ckpt / "last.pt")["epoch"] == 1
    assert not (ckpt / "best.pt").exists()  # never renamed into place
    assert temp_files(run_dir) == [f".best.pt.tmp-{first.process.pid}"]
    assert runs_json(workspace)[run_id]["status"] == "crashed"
    tally.rows(1)
    digest, size = sha(ckpt / "last.pt"), (ckpt / "last.pt").stat().st_size

    # 2. resumed, then killed in the middle of writing last.pt of epoch 2
    second = launch_resume(ws, run_id, env={**ENGINE_ENV, TEST_PAUSE_IN_WRITE_ENV: "last.pt:300", **COLD_START})
    procs.add(second.process)
    tally["runs_resumed"] += 1
    torn = hook_pause(second, MID_WRITE_MARKER, "last.pt")
    assert 0 < torn.stat().st_size < size  # part of a checkpoint, on disk
    with pytest.raises(CheckpointError):  # and not one: it must never be loaded
        load_checkpoint(torn)
    tally.kill9(second.process)
    assert sha(ckpt / "last.pt") == digest  # the previous checkpoint, byte for byte
    assert load_checkpoint(ckpt / "last.pt")["epoch"] == 1
    # last.pt said epoch 1 was the best and holds its model: the resume wrote the missing best.pt
    best = load_checkpoint(ckpt / "best.pt")
    assert best["epoch"] == 1 and best["best_acc"] == load_checkpoint(ckpt / "last.pt")["best_acc"]
    assert temp_files(run_dir) == [torn.name]  # the dead writer's temp only
    assert runs_json(workspace)[run_id]["status"] == "crashed"
    tally.rows(1)

    # 3. resumed to the end, from the intact epoch-1 checkpoint both times
    resume_to_the_end(workspace, run_id, tally)
    evs = events(run_dir)
    end = evs[-1]
    assert end["type"] == "end" and end["status"] == "completed"
    assert [e["resumed_from"] for e in evs if e["type"] == "start"] == [None, {"epoch": 1, "step": 0}, {"epoch": 1, "step": 0}]
    assert not (ckpt / "last.pt").exists() and end["checkpoints"] == ["best.pt"]  # completed: train.keep: best
    best = load_checkpoint(ckpt / "best.pt")
    assert (best["epoch"], best["best_acc"]) == (end["best_epoch"], end["best_acc"])
    assert temp_files(run_dir) == []  # temp files of dead writers are cleaned up
    assert store_epochs(workspace["home"], run_id, tally) == [1, 2]
    assert runs_json(workspace)[run_id]["status"] == "completed"
    tally.rows(1)
    twice = [e for e in evs if e["type"] == "epoch" and e["epoch"] == 2]
    assert len(twice) == 2 and epoch_metrics(twice[:1]) == epoch_metrics(twice[1:])  # epoch 2, done again, alike
    assert_as_uninterrupted(run_dir, uninterrupted, tally)
    tally.record(request)


# ---------------------------------------------------------------------------
# Concurrency


def _read_everything(store: Store, stats: Counter, seen_done: dict[str, int]) -> None:
    """What the TUI does on a refresh, plus the invariants a reader must always see."""
    rows = store.runs()
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a run listed twice"
    store.leaderboard()
    stats["queries"] += 2
    for r in rows[:8]:
        epochs = [e["epoch"] for e in store.epochs(r["run_id"])]
        stats["queries"] += 1
        assert epochs == list(range(1, len(epochs) + 1)), f"{r['run_id']}: epochs {epochs}"
        done = r["epochs_done"] or 0
        assert done >= seen_done.get(r["run_id"], 0), "epochs_done went backwards"
        seen_done[r["run_id"]] = done


def test_four_engines_write_one_store_while_a_reader_reads_and_one_runs_out_of_memory(workspace, procs, request, tally):
    """Four engine processes share the store while a reader reads it as the TUI does; one of them
    hits a CUDA out-of-memory error in epoch 2 (test hook): it ends `failed` with advice, the
    other three go on and complete, and every row is there exactly once."""
    ws = ws_of(workspace)
    reader = Store(ws.home)  # the TUI has the store open before the runs start
    healthy = [start(workspace, procs, fast(train__seed=i)) for i in range(3)]
    doomed = start(workspace, procs, fast(train__seed=3), env={OOM_AT_STEP: "6"})  # 4 steps an epoch
    tally.fault(out_of_memory=1)
    launched = [*healthy, doomed]
    tally["concurrent_engines"] = len(launched)
    stats: Counter = Counter()
    seen_done: dict[str, int] = {}
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while any(l.process.poll() is None for l in launched):
        assert time.monotonic() < deadline, "engines still running"
        _read_everything(reader, stats, seen_done)  # sqlite3 errors ("database is locked") propagate
        time.sleep(0.02)
    _read_everything(reader, stats, seen_done)
    reader.close()
    for l in healthy:
        assert finished(l) == 0, log_of(l.run_dir)[-2000:]
    assert finished(doomed) == 1, log_of(doomed.run_dir)[-2000:]
    for l in launched:
        log = log_of(l.run_dir)
        assert "database is locked" not in log and "warning: store" not in log and "Traceback" not in log, log

    end = events(doomed.run_dir)[-1]
    assert end["type"] == "end" and end["status"] == "failed"
    assert "out of memory" in end["error"] and "smaller batch" in end["error"]
    assert "--set train.batch_size=32" in end["error"]  # half of the 64 it ran with
    assert "error: out of memory" in log_of(doomed.run_dir)
    for l in healthy:
        assert events(l.run_dir)[-1]["status"] == "completed"

    db = sqlite3.connect(ws.home / "cifar_tui.db")
    runs = db.execute("SELECT run_id, status, epochs_done FROM runs ORDER BY run_id").fetchall()
    assert runs == sorted([(l.run_id, "completed", 2) for l in healthy] + [(doomed.run_id, "failed", 1)])
    assert "smaller batch" in db.execute("SELECT error FROM runs WHERE run_id=?", (doomed.run_id,)).fetchone()[0]
    per_run = db.execute("SELECT run_id, COUNT(*), COUNT(DISTINCT epoch), MIN(epoch), MAX(epoch) FROM epochs GROUP BY run_id").fetchall()
    assert sorted(per_run) == sorted([(l.run_id, 2, 2, 1, 2) for l in healthy] + [(doomed.run_id, 1, 1, 1, 1)])
    tally.rows(len(runs))
    for l in launched:  # the rows say what the run's own event file says
        from_events = [(e["epoch"], e["test_acc"]) for e in events(l.run_dir) if e["type"] == "epoch"]
        from_db = db.execute("SELECT epoch, test_acc FROM epochs WHERE run_id=? ORDER BY epoch", (l.run_id,)).fetchall()
        assert from_db == pytest.approx(from_events)
        tally.rows(len(from_db))
    db.close()
    assert stats["queries"] > 10  # the reader really read while the engines wrote
    tally["reader_queries"] += stats["queries"]
    tally.record(request)


_WRITER = r"""
import json, os, sys, time
from pathlib import Path
from engine.store import Store

home, worker, n_runs, n_epochs, go = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
store = Store(home)
while not go.exists():
    time.sleep(0.002)
cfg = {"name": "hammer", "data": {"source": "synthetic"}, "reference": {}}
tx, claimed = 0, []
for i in range(n_runs):
    run_id = f"hammer-w{worker}-r{i:03d}"
    store.run_started(run_id, config=cfg, device="cpu", pid=os.getpid(), run_dir=str(home / run_id),
                      epochs_total=n_epochs, params=1, flops=1.0)
    tx += 1
    for e in range(1, n_epochs + 1):
        acc = float(worker * 1000 + i * 10 + e)
        store.heartbeat(run_id, float(e))
        store.epoch_done(run_id, {"epoch": e, "train_loss": 1.0 / e, "train_acc": acc, "test_loss": 1.0 / e,
                                  "test_acc": acc, "best_acc": acc, "best_epoch": e, "lr": 0.1, "epoch_s": 0.01}, float(e))
        tx += 2
    for item in store.queued():  # every worker races for every queued item
        if store.claim_queued(item["id"], run_id):
            claimed.append(item["id"])
        tx += 1
    store.run_ended(run_id, "completed", None, float(n_epochs))
    tx += 1
store.close()
print(json.dumps({"tx": tx, "claimed": claimed}))
"""


def test_four_processes_hammer_the_store_while_a_reader_reads(workspace, procs, request):
    n_workers, n_runs, n_epochs, n_items = 4, 30, 8, 60
    home = workspace["home"]
    reader = Store(home)
    item_ids = {reader.enqueue(f"cfg{i}", [f"train.seed={i}"]) for i in range(n_items)}
    go = workspace["tmp"] / "go"
    writers = [procs.add(subprocess.Popen([sys.executable, "-c", _WRITER, str(home), str(w), str(n_runs), str(n_epochs), str(go)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env()))
               for w in range(n_workers)]
    time.sleep(0.5)
    go.touch()  # all four start at once
    stats: Counter = Counter()
    seen_done: dict[str, int] = {}
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while any(w.poll() is None for w in writers):
        assert time.monotonic() < deadline, "writers still running"
        _read_everything(reader, stats, seen_done)
        reader.queued()
        stats["queries"] += 1
    reader.close()
    assert stats["queries"] > 10
    results = []
    for w in writers:
        out, err = w.communicate(timeout=60)
        assert w.returncode == 0 and not err.strip(), err  # no "database is locked", nothing at all on stderr
        results.append(json.loads(out))

    db = sqlite3.connect(home / "cifar_tui.db")
    runs = db.execute("SELECT run_id, status, epochs_done, best_acc, best_epoch FROM runs").fetchall()
    expected_runs = {(f"hammer-w{w}-r{i:03d}", "completed", n_epochs, float(w * 1000 + i * 10 + n_epochs), n_epochs)
                     for w in range(n_workers) for i in range(n_runs)}
    assert len(runs) == len(expected_runs) and set(runs) == expected_runs  # none lost, none twice
    epochs = db.execute("SELECT run_id, epoch, test_acc FROM epochs").fetchall()
    expected_epochs = {(f"hammer-w{w}-r{i:03d}", e, float(w * 1000 + i * 10 + e))
                       for w in range(n_workers) for i in range(n_runs) for e in range(1, n_epochs + 1)}
    assert len(epochs) == len(expected_epochs) and set(epochs) == expected_epochs
    claimed = [i for r in results for i in r["claimed"]]
    assert sorted(claimed) == sorted(item_ids)  # every queued item started exactly once
    queue = db.execute("SELECT COUNT(*) FROM queue WHERE state='started' AND run_id IS NOT NULL").fetchone()[0]
    assert queue == n_items
    db.close()
    record(request, store_writer_processes=n_workers, store_transactions=sum(r["tx"] for r in results),
           reader_queries=stats["queries"], rows_checked=len(runs) + len(epochs) + n_items)


# ---------------------------------------------------------------------------
# The TUI dies; the runs do not


_FAKE_TUI = r"""
import sys, time
from pathlib import Path
from cifar_tui.launch import LaunchRequest, Workspace, launch

ws = Workspace(home=Path(sys.argv[1]), data_root=Path(sys.argv[2]))
launched = launch(ws, LaunchRequest(sys.argv[3], sys.argv[4:]))
print(launched.run_id, launched.process.pid, flush=True)
time.sleep(3600)  # a TUI sitting on its screen
"""


def test_tui_killed_while_a_run_is_live_the_run_goes_on_and_a_new_reader_reattaches(workspace, procs, request, tally):
    overrides = fast(train__epochs=2, data__train_limit=768, train__batch_size=16)
    tui = procs.add(subprocess.Popen(
        [sys.executable, "-c", _FAKE_TUI, str(workspace["home"]), str(workspace["data"]), CONFIG, *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env(ENGINE_ENV), cwd=workspace["tmp"],
        start_new_session=True))
    run_id, pid = tui.stdout.readline().split()
    engine_pid = procs.add_pid(int(pid))
    run_dir = workspace["home"] / run_id
    wait_until(lambda: has_event(run_dir, type="step"), ENGINE_TIMEOUT, "the run's first step")

    os.killpg(tui.pid, signal.SIGHUP)  # the terminal closes...
    tally.fault(tui_kills=1)
    try:
        os.killpg(tui.pid, signal.SIGKILL)  # ...and whatever is left of the TUI is killed
    except ProcessLookupError:
        pass
    tui.wait(timeout=60)
    assert tui.returncode in (-signal.SIGHUP, -signal.SIGKILL)
    time.sleep(0.5)
    assert pid_alive(engine_pid), "the engine died with the TUI:\n" + log_of(run_dir)[-2000:]

    # a new TUI re-attaches: the store says running, the event file replays from the start and goes on live
    store = Store(workspace["home"])
    assert store.run(run_id)["status"] == "running"
    tally.rows(1)
    tail = EventTail(run_dir / "events.jsonl")
    seen: list[dict] = []
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while not (seen and seen[-1]["type"] == "end"):
        assert time.monotonic() < deadline, "no end event"
        seen += tail.poll()
        time.sleep(0.1)
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "start" and kinds.count("epoch") == 2 and "step" in kinds
    assert seen[-1]["status"] == "completed"
    wait_until(lambda: not pid_alive(engine_pid), 60, "the engine to exit")
    assert store.run(run_id)["status"] == "completed"
    store.close()
    assert runs_json(workspace)[run_id]["status"] == "completed"
    tally.rows(2)
    assert "Traceback" not in log_of(run_dir) and "Broken pipe" not in log_of(run_dir)
    tally.record(request)


# ---------------------------------------------------------------------------
# Disk full, run dir not writable


def _paused_after_first_checkpoint(*launched: Launched) -> list[dict[str, str]]:
    """SIGSTOP each engine as soon as it has written epoch 1's checkpoints (watching all of them at
    once: one left running while another is handled could finish epoch 2); the digests on disk."""
    waiting = list(launched)

    def pause_the_ready() -> bool:
        for one in list(waiting):
            if has_event(one.run_dir, type="checkpoint", is_best=True, epoch=1):
                os.kill(one.process.pid, signal.SIGSTOP)
                waiting.remove(one)
        return not waiting

    wait_until(pause_the_ready, ENGINE_TIMEOUT, "epoch 1's checkpoints", interval=0.02)
    kept = []
    for one in launched:
        assert not has_event(one.run_dir, type="epoch", epoch=2), "paused too late: epoch 2 is already done"
        ckpt = one.run_dir / "checkpoints"
        assert (ckpt / "last.pt").stat().st_size > 1_000_000 and (ckpt / "best.pt").stat().st_size > 1_000_000
        kept.append({name: sha(ckpt / name) for name in ("last.pt", "best.pt")})
    return kept


@pytest.mark.cold_engine  # prlimit and SIGSTOP/SIGCONT act on the spawned process itself
def test_disk_full_or_read_only_during_a_checkpoint_fails_cleanly_and_keeps_earlier_checkpoints(workspace, procs, request,
                                                                                               tally):
    full = start(workspace, procs, fast(train__epochs=2, data__train_limit=512, train__batch_size=16))
    readonly = start(workspace, procs, fast(train__epochs=2, data__train_limit=512, train__batch_size=16, train__seed=1))

    kept_full, kept_ro = _paused_after_first_checkpoint(full, readonly)
    # The disk fills up: from now on no file of the engine may grow past 1 MB. The kernel answers
    # the checkpoint write with EFBIG (Python ignores SIGXFSZ); the events file stays far below it.
    resource.prlimit(full.process.pid, resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
    os.kill(full.process.pid, signal.SIGCONT)
    tally.fault(disk_full=1)

    # The checkpoints folder stops taking files (chmod; as root, which chmod does not stop, the
    # immutable flag of `chattr +i`, where the file system has it).
    ro_ckpt = readonly.run_dir / "checkpoints"
    with unwritable(ro_ckpt) as read_only:
        if read_only:
            tally.fault(read_only_dirs=1)
        os.kill(readonly.process.pid, signal.SIGCONT)
        code_ro = finished(readonly)

    assert finished(full) == 1, log_of(full.run_dir)[-2000:]
    ckpt = full.run_dir / "checkpoints"
    end = events(full.run_dir)[-1]
    assert end["type"] == "end" and end["status"] == "failed"
    assert end["error"].startswith(f"disk full while writing {ckpt / 'last.pt'}") and "cifar-tui resume" in end["error"]
    assert "error: disk full" in log_of(full.run_dir) and "Traceback" not in log_of(full.run_dir)
    assert {name: sha(ckpt / name) for name in kept_full} == kept_full
    assert load_checkpoint(ckpt / "last.pt")["epoch"] == 1 and load_checkpoint(ckpt / "best.pt")["epoch"] == 1
    assert temp_files(full.run_dir) == []
    rows = runs_json(workspace)
    assert rows[full.run_id]["status"] == "failed" and rows[full.run_id]["error"] == end["error"]
    tally.rows(1)

    if read_only:
        assert code_ro == 1, log_of(readonly.run_dir)[-2000:]
        end = events(readonly.run_dir)[-1]
        assert end["type"] == "end" and end["status"] == "failed"
        assert end["error"].startswith(f"cannot write {ro_ckpt / 'last.pt'}") and "permissions" in end["error"]
        assert {name: sha(ro_ckpt / name) for name in kept_ro} == kept_ro
        assert temp_files(readonly.run_dir) == []
        assert rows[readonly.run_id]["status"] == "failed"
        tally.rows(1)

    # space is back: the advice in the message works
    resume_to_the_end(workspace, full.run_id, tally)
    end = events(full.run_dir)[-1]
    assert end["status"] == "completed" and end["epochs_done"] == 2 and load_checkpoint(ckpt / "best.pt")
    assert store_epochs(workspace["home"], full.run_id, tally) == [1, 2]
    tally.record(request)
    if not read_only:  # said in the summary (pytest -rs), not passed over in silence
        pytest.skip(f"the disk-full part passed; the read-only part could not run: {WHY_NOT}")


@pytest.mark.parametrize("err, expected", [
    (OSError(28, "No space left on device", "/r/checkpoints/last.pt"), "disk full while writing /r/checkpoints/last.pt"),
    (OSError(27, "File too large", "/r/checkpoints/last.pt"), "disk full while writing /r/checkpoints/last.pt"),
    (PermissionError(13, "Permission denied", "/r/checkpoints/last.pt"), "cannot write /r/checkpoints/last.pt (Permission denied)"),
    (OSError(30, "Read-only file system", "/r/checkpoints/last.pt"), "cannot write /r/checkpoints/last.pt (Read-only file system)"),
])
def test_failure_messages_name_the_file_and_the_way_out(err, expected):
    from engine.config import ExperimentConfig

    message = failure_message(err, ExperimentConfig(name="x"))
    assert message.startswith(expected) and "cifar-tui resume" in message and "\n" not in message


# ---------------------------------------------------------------------------
# Damaged data


def _tiny_archive(base: Path) -> tuple[Path, dict[str, str]]:
    """A tiny archive in the exact CIFAR-100 pickle format (see tests/unit/test_data.py)."""
    from tests.unit.test_data import CLASS_NAMES, _split_obj, md5_of, py2_pickle

    rng = np.random.default_rng(5)
    folder = base / "src" / D.CIFAR100_FOLDER
    folder.mkdir(parents=True)
    for name, n in (("train", 40), ("test", 20)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 100, n)]
        (folder / name).write_bytes(py2_pickle(_split_obj(data, labels, name)))
    (folder / "meta").write_bytes(py2_pickle({b"fine_label_names": CLASS_NAMES,
                                              b"coarse_label_names": [f"c{i}" for i in range(20)]}))
    tgz = base / D.CIFAR100_TGZ
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname=D.CIFAR100_FOLDER)
    return tgz, {name: md5_of(folder / name) for name in ("train", "test", "meta")}


def _flip_byte(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_damaged_data_is_refused_naming_the_file_and_nothing_is_trained(workspace, request, tally):
    tgz, md5 = _tiny_archive(workspace["tmp"] / "archive")
    cfg = DataConfig(source="cifar100")

    # API: an intact copy loads; an altered or truncated file is named, with the way to fetch it again
    root = workspace["tmp"] / "api"
    root.mkdir()
    shutil.copy(tgz, root / D.CIFAR100_TGZ)
    assert len(D.load_dataset(cfg, root, expected_md5=md5).train) == 40
    folder = root / D.CIFAR100_FOLDER
    _flip_byte(folder / "test")
    tally.fault(damaged_files=1)
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(cfg, root, expected_md5=md5)
    assert str(folder / "test") in str(exc.value) and "checksum mismatch" in str(exc.value)
    assert "cifar-tui data download" in str(exc.value)
    tally["data_refusals"] += 1
    _flip_byte(folder / "test")  # back to intact
    meta = folder / "meta"
    meta.write_bytes(meta.read_bytes()[:-50])
    tally.fault(damaged_files=1)
    with pytest.raises(D.DataError, match="checksum mismatch") as exc:
        D.load_dataset(cfg, root, expected_md5=md5)
    assert str(meta) in str(exc.value) and "cifar-tui data download" in str(exc.value)
    tally["data_refusals"] += 1
    # an edit that keeps size and mtime slips past the fast stamp check of a run; `verify` re-hashes everything
    shutil.rmtree(folder)
    D.load_dataset(cfg, root, expected_md5=md5)
    _flip_byte(folder / "train", keep_mtime=True)
    tally.fault(damaged_files=1)
    with pytest.raises(D.DataError, match="checksum mismatch") as exc:
        D.verify_cifar100(root, expected_md5=md5)
    assert str(folder / "train") in str(exc.value)
    tally["data_refusals"] += 1

    # CLI: a truncated archive, and an extracted folder with an altered file (`data verify` in
    # forked CLI processes: the command imports torchvision, seconds on this machine)
    truncated = workspace["tmp"] / "truncated"
    truncated.mkdir()
    (truncated / D.CIFAR100_TGZ).write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    altered = workspace["tmp"] / "altered"
    shutil.copytree(tgz.parent / "src", altered)
    _flip_byte(altered / D.CIFAR100_FOLDER / "train")
    tally.fault(damaged_files=2)  # and the truncated archive
    verify = drive([(workspace["tmp"] / "cli1", ["data", "verify", "--root", str(truncated)]),
                    (workspace["tmp"] / "cli2", ["data", "verify", "--root", str(altered)])],
                   preload=("engine.data", "torchvision.datasets"))
    assert verify[0]["code"] == 2
    line = one_error_line(verify[0]["stderr"])
    assert str(truncated / D.CIFAR100_TGZ) in line and "checksum mismatch" in line and "cifar-tui data download" in line
    assert not (truncated / D.CIFAR100_FOLDER).exists()  # nothing extracted from it
    assert verify[1]["code"] == 2
    line = one_error_line(verify[1]["stderr"])
    assert str(altered / D.CIFAR100_FOLDER / "train") in line and "checksum mismatch" in line
    assert "cifar-tui data download" in line
    tally["data_refusals"] += 2
    # and nothing is trained on it: the run is refused before a run dir or a store row exists
    runs = [subprocess.Popen([*CLI, "run", CONFIG, "--data", "cifar100", "--device", "cpu", "--set", "model.backbone=test_resnet",
                              "--set", f"data.root={root}"], env=workspace["env"], cwd=workspace["tmp"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for root in (truncated,)]
    outputs = [r.communicate(timeout=ENGINE_TIMEOUT) for r in runs]
    for r, (out, err), named in zip(runs, outputs, (truncated / D.CIFAR100_TGZ,)):
        assert r.returncode == 2, out + err
        line = one_error_line(err)
        assert str(named) in line and "cifar-tui data download" in line
        assert "epoch" not in out
        tally["data_refusals"] += 1
    home = workspace["home"]
    assert not home.exists() or not [d for d in home.iterdir() if d.is_dir()], "a refused run left a run dir"
    if (home / "cifar_tui.db").exists():
        assert sqlite3.connect(home / "cifar_tui.db").execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    tally.record(request)
