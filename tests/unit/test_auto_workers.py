"""`--seeds auto` across SLURM workers (cifar_tui/auto_workers.py, study_workers.py), the taking of
work without a cluster or an engine: each worker a real supervisor on one workspace's store, its
next run decided by auto_seeds.decide under the study's lock. What another worker has queued, has
started (a lease, no row yet) or trains counts as in flight; a run whose worker died before it
started is taken again, a crashed one resumed once; racing workers never take the same (group,
seed); a worker waits while others' runs may ask for more and ends when the study is done. The
real thing, workers in SLURM array tasks training real runs, is tests/integration/test_slurm.py."""
from __future__ import annotations

import os
import threading
import time

import pytest

import cifar_tui.auto_workers as auto_workers
from cifar_tui.auto_seeds import AutoSpec, decide, planned_run, study_state
from cifar_tui.auto_workers import AutoWorker
from cifar_tui.study_workers import LOCK_GRACE_S, StudyLock, worker_supervisor
from cifar_tui.sweep import make_plan
from cifar_tui.workspace import Workspace

DEAD_PID = 999_999_999


def setup(tmp_path, max_seeds: int = 3):
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    plan = make_plan(["resnet18_baseline"], ["optim.lr=1e-3,2e-3", "data.source=synthetic"], 1, study="au")
    return ws, plan, AutoSpec(max_seeds=max_seeds, target_ci=0.5)


def worker(ws, plan, spec, said: list | None = None) -> AutoWorker:
    return AutoWorker(worker_supervisor(ws), plan, spec, StudyLock(ws, plan.study),
                      (said if said is not None else []).append)


def taken(w: AutoWorker) -> tuple[str, int] | str:
    """What the worker queued for itself: (group, seed) of a new run, or the run id it resumes."""
    [item] = w.sup.own_queued()
    if item["resume_of"]:
        return item["resume_of"]
    return item["group_key"], int(next(o for o in item["overrides"] if o.startswith("train.seed=")).split("=")[1])


def start_without_row(w: AutoWorker, run_id: str) -> None:
    """What Supervisor.pump does before the engine writes its row: the item claimed with a lease."""
    [item] = w.sup.own_queued()
    assert w.sup.leases.acquire(run_id, gpus=[], n=0, max_parallel=None, claim=item["id"]) is not None


def test_what_other_workers_queued_started_or_train_is_in_flight_and_a_crashed_run_is_resumed_once(tmp_path):
    ws, plan, spec = setup(tmp_path)
    g1, g2 = plan.groups()
    a, b, c, d, e, f = (worker(ws, plan, spec) for _ in range(6))
    assert a.refill() and taken(a) == (g1, 0)
    assert b.refill() and taken(b) == (g2, 0)            # a's queued run counts
    assert a.refill() and len(a.sup.own_queued()) == 1   # one run at a time
    start_without_row(a, "r-a")                           # started, its engine not yet in the store
    assert c.refill() and taken(c) == (g1, 1)            # a's run counts by its lease
    a.sup.leases.release("r-a")                           # a died before its engine wrote anything
    assert d.refill() and taken(d) == (g1, 0)            # that seed is free again: taken anew
    start_without_row(b, "r-b")
    overrides, cfg = planned_run(plan, g2, 0)
    b.sup.store.run_started("r-b", config=cfg.model_dump(mode="json"), device="cpu", pid=DEAD_PID,
                            run_dir=str(ws.home / "r-b"), epochs_total=1, params=1, flops=None, study=plan.study,
                            group=g2)
    (ws.home / "r-b").mkdir(parents=True)
    (ws.home / "r-b" / "config.yaml").write_text(cfg.to_yaml())
    assert e.refill() and taken(e) == (g2, 1)            # r-b trains (its lease): not resumed, not re-run
    b.sup.leases.release("r-b")                           # b's task SIGKILLed: its engine too
    assert b.sup.status("r-b") == "crashed"
    assert f.refill() and taken(f) == "r-b"              # resumed by the next free worker
    g = worker(ws, plan, spec)
    assert g.refill() and taken(g) == (g1, 2)            # not resumed twice
    for w in (a, b, c, d, e, f, g):
        w.sup.close()


def test_racing_workers_never_take_the_same_group_and_seed(tmp_path, monkeypatch):
    """Six workers at once, each reading the study's state slowly (as over NFS): under the lock each
    decision sees the others' queued runs. Without the lock they would all take (g1, 0)."""
    ws, plan, spec = setup(tmp_path)
    read = auto_workers.study_state

    def slow_state(*args, **kw):
        state = read(*args, **kw)
        time.sleep(0.1)
        return state

    monkeypatch.setattr(auto_workers, "study_state", slow_state)
    go, took, errors = threading.Barrier(6), [], []

    def one() -> None:
        try:
            w = worker(ws, plan, spec)
            go.wait(timeout=30)
            w.refill()
            took.append(taken(w))
            w.sup.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    g1, g2 = plan.groups()
    assert sorted(took) == sorted((g, s) for g in (g1, g2) for s in range(3))  # every run once


def test_a_worker_waits_while_others_runs_may_ask_for_more_and_ends_when_the_study_is_done(tmp_path):
    ws, plan, spec = setup(tmp_path, max_seeds=2)
    g1, g2 = plan.groups()
    others = [worker(ws, plan, spec) for _ in range(4)]
    for w in others:
        assert w.refill()
    idle = worker(ws, plan, spec)
    assert idle.refill() and not idle.sup.own_queued() and not idle.finished  # nothing to take: waits
    store = idle.sup.store
    for w in others:  # the other workers' runs complete
        (group, seed) = taken(w)
        rid = f"r-{group[-4:]}-{seed}"
        [item] = w.sup.own_queued()
        w.sup.leases.acquire(rid, gpus=[], n=0, max_parallel=None, claim=item["id"])
        overrides, cfg = planned_run(plan, group, seed)
        store.run_started(rid, config=cfg.model_dump(mode="json"), device="cpu", pid=os.getpid(),
                          run_dir=str(ws.home / rid), epochs_total=1, params=1, flops=None, study=plan.study,
                          group=group)
        store.epoch_done(rid, {"epoch": 1, "test_acc": 40.0 + seed, "best_acc": 40.0 + seed, "best_epoch": 1}, 1.0)
        store.run_ended(rid, "completed", None, 1.0)
        w.sup.leases.release(rid)
    assert not idle.refill() and idle.finished and not idle.sup.own_queued()  # capped at 2: done
    for w in [*others, idle]:
        w.sup.close()


def test_a_group_that_would_need_more_seeds_than_the_cap_is_capped_not_resolved(tmp_path):
    """±3 points where ±0.01 was asked: more seeds than any estimate; at the cap it is capped (it
    read `resolved: interval ±3.07 > ±0.01` before)."""
    ws, plan, _ = setup(tmp_path)
    g1, g2 = plan.groups()
    spec = AutoSpec(max_seeds=2, target_ci=0.01)
    w = worker(ws, plan, spec)
    for group, accs in ((g1, (1.0, 4.0)), (g2, (2.0, 2.0))):
        for seed, acc in enumerate(accs):
            rid = f"r-{group[-4:]}-{seed}"
            overrides, cfg = planned_run(plan, group, seed)
            w.sup.store.run_started(rid, config=cfg.model_dump(mode="json"), device="cpu", pid=os.getpid(),
                                    run_dir=str(ws.home / rid), epochs_total=1, params=1, flops=None,
                                    study=plan.study, group=group)
            w.sup.store.epoch_done(rid, {"epoch": 1, "test_acc": acc, "best_acc": acc, "best_epoch": 1}, 1.0)
            w.sup.store.run_ended(rid, "completed", None, 1.0)
    d = decide(spec, study_state(w.sup.store, plan), 1)
    assert d.groups[g1].state == "capped" and "> ±0.01" in d.groups[g1].why
    assert d.groups[g2].state == "resolved" and d.finished  # no spread: ±0 is within ±0.01
    w.sup.close()


def test_the_study_lock_waits_for_its_holder_a_ui_never_waits_and_a_dead_holders_lock_is_broken(tmp_path):
    ws, plan, _ = setup(tmp_path)
    lock, other = StudyLock(ws, plan.study), StudyLock(ws, plan.study)
    assert lock.try_acquire() and not other.try_acquire()
    order: list[str] = []
    waiting = threading.Thread(target=lambda: (other.__enter__(), order.append("other took it"), other.release()))
    waiting.start()
    time.sleep(0.05)  # let it find the lock held (it polls)
    order.append("holder releases")
    lock.release()
    waiting.join(timeout=30)
    assert order == ["holder releases", "other took it"]
    assert lock.try_acquire()
    old = time.time() - LOCK_GRACE_S - 1
    os.utime(lock.file, (old, old))  # its holder died holding it
    assert not other.try_acquire() and other.try_acquire()  # broken, then taken
    other.release()
    assert not lock.file.exists()


@pytest.mark.parametrize("args, flag", [
    (["--workers", "2"], "--workers 2"),
    (["--seeds", "auto", "--max-seeds", "3", "--target-ci", "1", "--workers", "2"], "--workers 2"),
    (["--seeds", "2", "--launcher", "slurm", "--workers", "2"], "--workers 2"),
    (["--seeds", "auto", "--max-seeds", "3", "--target-ci", "1", "--launcher", "slurm", "--nnodes", "2"],
     "--nnodes 2"),
])
def test_workers_only_with_seeds_auto_on_slurm(tmp_path, args, flag):
    from typer.testing import CliRunner

    from cifar_tui.cli import app

    home = tmp_path / "runs"
    res = CliRunner().invoke(app, ["--home", str(home), "run", "resnet18_baseline", "--set", "optim.lr=1e-3,2e-3",
                                   "--study", "au", *args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: "), res.output
    store = Workspace(home=home, data_root=tmp_path / "data").store()
    assert store.study("au") is None and not store.queued(True)  # nothing recorded, nothing queued
    store.close()


def test_the_study_tab_of_a_study_run_by_slurm_workers_follows_it_and_names_them(tmp_path):
    """The tab of an auto study this TUI does not drive (SLURM workers elsewhere): its workers named, each
    group's seeds-auto state as the workers decide it from the store, a run arriving from elsewhere
    filling its cell and moving its group's state, without reopening the tab."""
    import asyncio

    from textual.widgets import DataTable, Static

    from cifar_tui.tui.app import CifarTUI
    from cifar_tui.tui.screens import StudiesScreen
    from tests.support.tui import until_loaded

    ws, plan, _ = setup(tmp_path)
    g1, g2 = plan.groups()
    spec = AutoSpec(max_seeds=2, target_ci=0.5)
    store = ws.store()
    store.save_study(plan.study, "sweep", "resnet18_baseline",
                     {"names": ["resnet18_baseline"], "sets": ["optim.lr=1e-3,2e-3", "data.source=synthetic"],
                      "extra": [], **spec.to_dict(), "launcher": "slurm", "workers": ["12_0", "12_1"]})

    def run(group: str, seed: int, acc: float | None) -> str:
        rid = f"resnet18_baseline-20260101T000000Z-{abs(hash((group, seed))) % 9000 + 1000}"
        overrides, cfg = planned_run(plan, group, seed)
        store.run_started(rid, config=cfg.model_dump(mode="json"), device="cpu", pid=os.getpid(),
                          run_dir=str(ws.home / rid), epochs_total=1, params=1, flops=None, study=plan.study,
                          group=group)
        if acc is not None:
            store.epoch_done(rid, {"epoch": 1, "test_acc": acc, "best_acc": acc, "best_epoch": 1}, 1.0)
            store.run_ended(rid, "completed", None, 1.0)
        return rid

    run(g1, 0, 40.0), run(g1, 1, 44.0), run(g2, 0, 41.0)
    live = run(g2, 1, None)  # training in a worker's task

    def cells(table: DataTable) -> dict[str, dict[str, str]]:
        keys = [c.value for c in table.columns]
        return {r.key.value: dict(zip(keys, (getattr(c, "plain", str(c)) for c in table.get_row(r.key))))
                for r in table.ordered_rows}

    async def wait_for(pilot, cond, what: str) -> None:
        deadline = time.monotonic() + 60
        while not cond() and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert cond(), f"timed out waiting for {what}"

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=(180, 48)) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3", "f")
            await wait_for(pilot, lambda: isinstance(app.screen, StudiesScreen), "the studies screen")
            await pilot.press("t")
            await wait_for(pilot, lambda: plan.study in app.study_tabs.views, "the study's tab")
            pane = app.study_tabs.views[plan.study]
            table = pane.query_one("#study-grid", DataTable)
            note = lambda: str(pane.query_one("#study-note", Static).render())  # noqa: E731
            await wait_for(pilot, lambda: "run by SLURM workers 12_0, 12_1" in note(), "its workers named")
            await wait_for(pilot, lambda: cells(table).get(g1, {}).get("auto") == "capped", "g1 capped (±5.6 > ±0.5)")
            assert cells(table)[g2]["auto"] == "needs ~2" and cells(table)[g2]["s1"].startswith("▶")
            assert "driven by this TUI" not in note() and plan.study not in app.auto_driver.studies
            store.epoch_done(live, {"epoch": 1, "test_acc": 41.0, "best_acc": 41.0, "best_epoch": 1}, 1.0)
            store.run_ended(live, "completed", None, 1.0)  # the worker's run ends, elsewhere
            await wait_for(pilot, lambda: cells(table)[g2]["s1"] == "✔ 41.00", "the run's cell filled")
            await wait_for(pilot, lambda: cells(table)[g2]["auto"] == "resolved", "g2 resolved (±0)")
            assert not app.sup.queued()  # shown, never driven from here

    asyncio.run(scenario())
    store.close()


def test_a_study_that_is_done_submits_no_worker_and_another_kind_of_study_of_its_name_is_refused(tmp_path):
    from engine.config import ConfigError

    from cifar_tui.auto_workers import submit_study

    class NoSbatch:
        def submit_calls(self, *args, **kw):
            raise AssertionError("nothing should be submitted")

    ws, plan, _ = setup(tmp_path)
    spec = AutoSpec(max_seeds=2, target_ci=0.5)
    store = ws.store()
    for group in plan.groups():
        for seed in range(2):
            rid = f"r-{group[-4:]}-{seed}"
            overrides, cfg = planned_run(plan, group, seed)
            store.run_started(rid, config=cfg.model_dump(mode="json"), device="cpu", pid=os.getpid(),
                              run_dir=str(ws.home / rid), epochs_total=1, params=1, flops=None, study=plan.study,
                              group=group)
            store.epoch_done(rid, {"epoch": 1, "test_acc": 40.0, "best_acc": 40.0, "best_epoch": 1}, 1.0)
            store.run_ended(rid, "completed", None, 1.0)
    record = {"names": ["resnet18_baseline"], "sets": ["optim.lr=1e-3,2e-3", "data.source=synthetic"], "extra": []}
    done = submit_study(ws, plan, spec, record, 2, NoSbatch())
    assert done.nothing_left and done.job_ids == [] and done.finished == 4 and not done.continued
    assert store.study(plan.study)["spec"] == {**record, **spec.to_dict(), "launcher": "slurm", "nproc": 1,
                                               "workers": []}
    store.save_study("tn", "tune", "resnet18_baseline", {"trials": 4})
    with pytest.raises(ConfigError, match="--study tn: already a tune study"):
        submit_study(ws, make_plan(["resnet18_baseline"], ["optim.lr=1e-3,2e-3"], 1, study="tn"), spec, record, 2,
                     NoSbatch())
    assert store.study("tn")["kind"] == "tune"
    store.close()
