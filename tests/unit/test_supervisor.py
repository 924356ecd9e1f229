"""The run supervisor without Textual and without engine processes: queue order, GPU slots
(leases in the store), caps, reaping, stop / resume / delete, status, run id prefixes.

Processes are in-process stand-ins (tests/support/supervision.py); leases across real
processes are in tests/integration/test_leases.py."""
from __future__ import annotations

import os
import signal
import time

import pytest

from cifar_tui.supervisor import NotLive, Refused, RunIsLive, Started, Supervisor
from engine.record.paths import AmbiguousRun, UnknownRun
from engine.config import ConfigError
from engine.record.status import COMPLETED, CRASHED, QUEUED, RUNNING, STARTING, STOPPED, STOPPING

from tests.support.supervision import make_supervisor
from tests.support.tui import DEAD_PID

SYN = ["data.source=synthetic"]
CONFIG = {"name": "resnet18_baseline", "data": {"source": "synthetic"}}


def started(outcomes) -> list[Started]:
    assert all(isinstance(o, Started) for o in outcomes), outcomes
    return list(outcomes)


def engine_started(sup: Supervisor, run_id: str) -> None:
    """What the engine writes to the store once it runs (Trainer.run -> Store.run_started)."""
    sup.store.run_started(run_id, config=CONFIG, device="cpu", pid=sup.children[run_id].launched.process.pid,
                          run_dir=str(sup.ws.home / run_id), epochs_total=2, params=1, flops=None)


def engine_ended(sup: Supervisor, run_id: str, status: str, code: int = 0) -> None:
    sup.store.run_ended(run_id, status, None, 1.0)
    sup.children[run_id].launched.process.finish(code)


# ---------------------------------------------------------------- slots


def test_one_run_per_gpu_then_the_queue_waits_in_its_order(tmp_path):
    sup, spawner = make_supervisor(tmp_path, gpus=("0", "1"))
    ids = [sup.enqueue("resnet18_baseline", SYN) for _ in range(3)]
    first = started(sup.pump())
    assert [s.item_id for s in first] == ids[:2] and [s.gpus for s in first] == [("0",), ("1",)]
    assert spawner.started[0]["env"] == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert first[0].label == "GPU 0"
    assert sup.pump() == [] and sup.blocked.startswith("needs 1 GPU, 0 free: GPU 0 held by " + first[0].run_id)
    assert [q["id"] for q in sup.queued()] == ids[2:]
    spawner.proc(first[0].run_id).finish(0)
    assert [(r.run_id, r.code, r.refusal) for r in sup.reap()] == [(first[0].run_id, 0, None)]
    third = started(sup.pump())
    assert [(s.item_id, s.gpus) for s in third] == [(ids[2], ("0",))] and sup.blocked is None
    log = [(h["slot"], h["run_id"], h["reason"]) for h in sup.leases.history()]
    assert log == [("gpu:0", first[0].run_id, "exit 0"), ("gpu:1", first[1].run_id, None),
                   ("gpu:0", third[0].run_id, None)]


def test_a_ctrl_c_that_comes_while_a_run_starts_stops_it_too_and_starts_no_more(tmp_path):
    """Ctrl-C is handled between any two lines, also inside pump(): the run being started then is
    signalled as the others were, and no later item starts (it took the lease of a run the
    interrupt had just stopped, once, in CI)."""
    sup, spawner = make_supervisor(tmp_path, gpus=("0", "1", "2"))
    for _ in range(3):
        sup.enqueue("resnet18_baseline", SYN)
    spawn = spawner.__call__

    def interrupted_while_spawning(*args, **kwargs):
        launched = spawn(*args, **kwargs)
        sup.interrupt(signal.SIGINT)  # the handler runs here: after the spawn, before pump() returns
        return launched

    sup.spawner = interrupted_while_spawning
    first = started(sup.pump())
    assert len(first) == 1 and first[0].launched.process.signals == [signal.SIGINT]
    assert sup.children[first[0].run_id].stop_requested
    assert sup.pump() == [] and len(sup.children) == 1  # nothing more after the interrupt


def test_a_ddp_run_takes_several_gpus_and_one_larger_than_the_gpus_is_refused(tmp_path):
    sup, spawner = make_supervisor(tmp_path, gpus=("0", "1", "2", "3"))
    a, b, c = (sup.enqueue("resnet18_baseline", SYN, nproc=2) for _ in range(3))
    got = started(sup.pump())
    assert [s.gpus for s in got] == [("0", "1"), ("2", "3")] and got[0].label == "GPUs 0,1"
    assert spawner.started[0]["env"]["CUDA_VISIBLE_DEVICES"] == "0,1" and spawner.started[0]["nproc"] == 2
    assert sup.blocked.startswith("needs 2 GPUs, 0 free")
    with pytest.raises(ConfigError, match="needs 8 GPUs but 4 are visible"):
        sup.enqueue("resnet18_baseline", SYN, nproc=8)
    spawner.proc(got[1].run_id).finish(0)
    sup.reap()
    assert [(s.item_id, s.gpus) for s in started(sup.pump())] == [(c, ("2", "3"))]


def test_max_parallel_caps_gpu_runs(tmp_path):
    sup, _ = make_supervisor(tmp_path, gpus=("0", "1", "2"), max_parallel=2)
    for _ in range(3):
        sup.enqueue("resnet18_baseline", SYN)
    assert len(started(sup.pump())) == 2
    assert sup.blocked == "2 runs alive on this host, 2 at a time"


def test_without_gpus_runs_take_the_cpu_one_at_a_time_unless_told(tmp_path):
    sup, spawner = make_supervisor(tmp_path / "one", gpus=())
    sup.enqueue("resnet18_baseline", SYN, nproc=2)  # a 2-process DDP run on the CPU
    sup.enqueue("resnet18_baseline", SYN)
    (only,) = started(sup.pump())
    assert only.gpus == () and only.label == "CPU" and spawner.started[0]["env"] == {}
    assert sup.blocked == "1 run alive on this host, 1 at a time"
    spawner.proc(only.run_id).finish(0)
    sup.reap()
    assert len(started(sup.pump())) == 1
    two, _ = make_supervisor(tmp_path / "two", gpus=(), max_parallel=2)
    for _ in range(3):
        two.enqueue("resnet18_baseline", SYN)
    assert len(started(two.pump())) == 2
    with pytest.raises(ConfigError, match="at least 1"):
        make_supervisor(tmp_path / "zero", gpus=(), max_parallel=0)


def test_two_launchers_on_one_workspace_see_the_same_free_gpu(tmp_path):
    tui, spawner = make_supervisor(tmp_path, gpus=("0",))
    cli, cli_spawner = make_supervisor(tmp_path, gpus=("0",), shared_queue=False)
    mine = cli.enqueue("resnet18_baseline", SYN)
    shared = tui.enqueue("resnet18_baseline", SYN)
    (first,) = started(tui.pump())
    assert first.item_id == shared  # the CLI's own item is not the TUI's to start...
    assert [q["id"] for q in tui.queued()] == [mine]  # ...but the TUI lists it
    assert cli.pump() == [] and f"GPU 0 held by {first.run_id}" in cli.blocked
    spawner.proc(first.run_id).finish(0)
    tui.reap()
    (second,) = started(cli.pump())
    assert second.item_id == mine and second.gpus == ("0",) and cli_spawner.started[0]["run_id"] == second.run_id


def test_a_cpu_cap_counts_runs_the_store_says_are_alive(tmp_path):
    sup, _ = make_supervisor(tmp_path, gpus=())
    sup.store.run_started("bare-run", config=CONFIG, device="cpu", pid=os.getpid(), run_dir=str(tmp_path),
                          epochs_total=1, params=1, flops=None)  # an engine started bare (python -m engine.train)
    sup.enqueue("resnet18_baseline", SYN)
    assert sup.pump() == [] and sup.blocked == "1 run alive on this host, 1 at a time"


# ---------------------------------------------------------------- leases that free themselves


def test_a_lease_whose_holder_is_gone_frees_itself(tmp_path):
    sup, _ = make_supervisor(tmp_path, gpus=("0",))
    assert sup.leases.acquire("ghost", gpus=["0"], n=1, max_parallel=None, pid=DEAD_PID).gpus == ("0",)
    sup.enqueue("resnet18_baseline", SYN)
    (run,) = started(sup.pump())
    assert run.gpus == ("0",)
    assert [(h["run_id"], h["reason"]) for h in sup.leases.history()][0] == ("ghost", "holder gone")


@pytest.mark.parametrize("damage", ["stale heartbeat", "reused pid", "other host, stale heartbeat"])
def test_a_live_pid_does_not_keep_a_stale_or_reused_lease(tmp_path, damage):
    sup, _ = make_supervisor(tmp_path, gpus=("0",))
    sup.leases.acquire("old", gpus=["0"], n=1, max_parallel=None)  # held by this (live) process
    sup.enqueue("resnet18_baseline", SYN)
    assert sup.pump() == []  # live holder: the GPU is taken
    if damage == "stale heartbeat":
        sup.store.conn.execute("UPDATE leases SET heartbeat_at=?", (time.time() - sup.leases.stale_s - 1,))
    elif damage == "reused pid":
        sup.store.conn.execute("UPDATE leases SET pid_started=pid_started-1000")
    else:
        sup.store.conn.execute("UPDATE leases SET host='elsewhere'")
        assert sup.pump() == []  # another host's holder with a fresh heartbeat still holds it
        sup.store.conn.execute("UPDATE leases SET heartbeat_at=?", (time.time() - sup.leases.stale_s - 1,))
    assert len(started(sup.pump())) == 1


# ---------------------------------------------------------------- refusals


def test_a_queued_item_whose_config_no_longer_validates_is_refused_once(tmp_path):
    sup, _ = make_supervisor(tmp_path, gpus=())
    bad = sup.enqueue("no_such_config", SYN)
    good = sup.enqueue("resnet18_baseline", SYN)
    outcomes = sup.pump()
    assert isinstance(outcomes[0], Refused) and outcomes[0].item_id == bad and "no_such_config" in outcomes[0].reason
    assert [o.item_id for o in outcomes[1:]] == [good]
    row = sup.store.conn.execute("SELECT state, error FROM queue WHERE id=?", (bad,)).fetchone()
    assert row["state"] == "refused" and "no_such_config" in row["error"]


def test_a_refused_item_stored_before_the_rename_is_still_listed_and_dismissed(tmp_path):
    """Queue items were refused as state 'failed' (a run status's word) before they became
    'refused': a store holding one lists it and puts it away as before."""
    sup, _ = make_supervisor(tmp_path, gpus=())
    item = sup.store.enqueue("resnet18_baseline", SYN)
    sup.store.conn.execute("UPDATE queue SET state='failed', error='old refusal' WHERE id=?", (item,))  # autocommit
    assert [(r["id"], r["error"]) for r in sup.store.refused()] == [(item, "old refusal")]
    assert sup.store.dismiss_refused(item) and sup.store.refused() == []


def test_an_engine_that_refuses_its_input_is_reaped_with_its_reason_and_its_dir_removed(tmp_path):
    sup, spawner = make_supervisor(tmp_path, gpus=("0",))
    sup.enqueue("resnet18_baseline", SYN)
    (run,) = started(sup.pump())
    for name in ("events.jsonl", "config.yaml"):  # it refused before writing them
        (run.launched.run_dir / name).unlink()
    (run.launched.run_dir / "stdout.log").write_text("error: data.root: no CIFAR-100 here\n")
    spawner.proc(run.run_id).finish(2)
    (reaped,) = sup.reap()
    assert (reaped.code, reaped.refusal) == (2, "data.root: no CIFAR-100 here")
    assert not run.launched.run_dir.exists() and sup.leases.held() == []


def test_items_of_a_launcher_that_died_are_dropped(tmp_path):
    sup, _ = make_supervisor(tmp_path, gpus=())
    orphan = sup.store.enqueue("resnet18_baseline", SYN, owner_pid=DEAD_PID)
    assert sup.queued() == []
    sup.pump()
    assert sup.store.conn.execute("SELECT state FROM queue WHERE id=?", (orphan,)).fetchone()[0] == "cancelled"


# ---------------------------------------------------------------- status, stop, resume, delete


def test_status_through_a_runs_life_and_stop_resume_delete(tmp_path):
    sup, spawner = make_supervisor(tmp_path, gpus=("0",))
    sup.enqueue("resnet18_baseline", SYN)
    (run,) = started(sup.pump())
    rid = run.run_id
    assert sup.status(rid) == STARTING and sup.runs()[0]["status"] == STARTING
    engine_started(sup, rid)
    assert sup.status(rid) == RUNNING
    with pytest.raises(RunIsLive, match="still running"):
        sup.resume(rid)
    with pytest.raises(RunIsLive, match="stop it first"):
        sup.delete(rid)
    assert sup.stop(rid) == run.launched.process.pid and spawner.proc(rid).signals == [signal.SIGTERM]
    assert sup.status(rid) == STOPPING
    engine_ended(sup, rid, STOPPED, 130)
    sup.reap()
    assert sup.status(rid) == STOPPED
    with pytest.raises(NotLive, match="not running"):
        sup.stop(rid)
    item = sup.resume(rid)
    assert sup.status(rid) == QUEUED
    with pytest.raises(RunIsLive, match="already queued"):
        sup.resume(rid)
    (again,) = started(sup.pump())
    assert (again.item_id, again.run_id, again.resumed) == (item, rid, True) and spawner.started[-1]["resume"]
    assert sup.status(rid) == STARTING  # its row says stopped until the engine runs again
    engine_started(sup, rid)
    assert sup.status(rid) == RUNNING
    engine_ended(sup, rid, COMPLETED)
    sup.reap()
    with pytest.raises(ConfigError, match="already completed"):
        sup.resume(rid)
    sup.delete(rid)
    assert not (sup.ws.home / rid).exists() and sup.store.run(rid) is None


def test_a_run_whose_process_vanished_is_crashed_and_cannot_be_stopped(tmp_path):
    sup, _ = make_supervisor(tmp_path, gpus=())
    sup.store.run_started("gone-run", config=CONFIG, device="cpu", pid=DEAD_PID, run_dir=str(tmp_path),
                          epochs_total=2, params=1, flops=None)
    (sup.ws.home / "gone-run").mkdir(parents=True)
    (sup.ws.home / "gone-run" / "config.yaml").write_text("name: resnet18_baseline\n")
    assert sup.status("gone-run") == CRASHED
    with pytest.raises(NotLive, match="status crashed"):
        sup.stop("gone-run")
    with pytest.raises(UnknownRun):
        sup.stop("never-was")
    assert isinstance(sup.resume("gone-run"), int)


def test_run_ids_by_unique_prefix(tmp_path):
    sup, _ = make_supervisor(tmp_path, gpus=())
    for rid in ("resnet18_baseline-20260101T000000Z-aaaa", "resnet18_baseline-20260102T000000Z-bbbb", "other-1"):
        (sup.ws.home / rid).mkdir(parents=True)
    assert sup.resolve("other") == "other-1"
    assert sup.resolve("resnet18_baseline-20260102") == "resnet18_baseline-20260102T000000Z-bbbb"
    with pytest.raises(AmbiguousRun, match="2 runs match: resnet18_baseline-20260101T000000Z-aaaa, "
                                           "resnet18_baseline-20260102T000000Z-bbbb"):
        sup.resolve("resnet18")
    with pytest.raises(UnknownRun, match="not found"):
        sup.resolve("zzz")
    with pytest.raises(ConfigError, match="run id '../x'"):
        sup.resolve("../x")

