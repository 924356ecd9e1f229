"""`--seeds auto` (cifar_tui.auto_seeds) on constructed store rows: the first seeds, then the groups
furthest from resolved first, the baseline keeping up, the cap; the decision a pure function of
the store (queued and in-flight runs counted, stopped and crashed ones resumed, the same decision
again after a restart); the CLI with every group already resolved finishes without a run."""
from __future__ import annotations

import json
import os

import numpy as np
from typer.testing import CliRunner

from cifar_tui.auto_seeds import AutoSpec, decide, planned_run, study_state
from cifar_tui.cli import app
from cifar_tui.stats import compare, seeds_for_half_width
from cifar_tui.sweep import make_plan
from engine.record.store import Store

SETS = ["optim.lr=1e-3,3e-3,1e-2", "data.source=synthetic"]


def plan_of(study: str = "au"):
    return make_plan(["resnet18_baseline"], SETS, 1, study=study)


def finish(store: Store, plan, group: str, seed: int, acc: float | None, status: str = "completed") -> str:
    """A run of the plan's `group` with `seed`, as the engine leaves it in the store."""
    overrides, cfg = planned_run(plan, group, seed)
    rid = f"r-{abs(hash((group, seed))) % 10**8}"
    store.run_started(rid, config=cfg.model_dump(mode="json"), device="cpu", pid=os.getpid(), run_dir=str(store.home / rid),
                      epochs_total=1, params=1, flops=None, study=plan.study, group=group)
    if acc is not None:
        store.epoch_done(rid, {"epoch": 1, "test_acc": acc, "best_acc": acc, "best_epoch": 1}, 1.0)
    if status != "running":
        store.run_ended(rid, status, None, 1.0)
    return rid


def test_every_group_gets_its_first_seeds_round_robin_then_the_cap_holds(tmp_path):
    store, plan = Store(tmp_path / "runs"), plan_of()
    g1, g2, g3 = plan.groups()
    spec = AutoSpec(max_seeds=4, target_ci=0.5)
    d = decide(spec, study_state(store, plan), slots=4)
    assert d.start == [(g1, 0), (g2, 0), (g3, 0), (g1, 1)] and not d.finished  # 3 each first, in plan order
    assert decide(AutoSpec(max_seeds=2, target_ci=0.5), study_state(store, plan), slots=99).start == [
        (g1, 0), (g2, 0), (g3, 0), (g1, 1), (g2, 1), (g3, 1)]  # never more than the cap
    store.close()


def test_the_group_furthest_from_resolved_gets_the_next_seeds(tmp_path):
    store, plan = Store(tmp_path / "runs"), plan_of()
    g1, g2, g3 = plan.groups()
    rng = np.random.default_rng(1)
    spreads = {g1: 0.05, g2: 1.5, g3: 0.6}  # g1 tight (resolved at ±0.5), g2 wide, g3 in between
    for g, sd in spreads.items():
        for seed in range(3):
            finish(store, plan, g, seed, float(40 + rng.normal(0, sd)))
    spec = AutoSpec(max_seeds=30, target_ci=0.5)
    state = {g.group: g for g in study_state(store, plan)}
    need = {g: seeds_for_half_width(np.std(list(state[g].done.values()), ddof=1), 0.5) for g in (g2, g3)}
    assert need[g2] > need[g3] > 3
    d = decide(spec, list(state.values()), slots=need[g2] - 3 + 1)
    assert d.groups[g1].state == "resolved" and all(g != g1 for g, _ in d.start)
    assert d.start[0] == (g2, 3) and [s for g, s in d.start if g == g2] == list(range(3, 3 + len(
        [1 for g, _ in d.start if g == g2])))  # the same seeds as every other group: pairs
    assert sum(1 for g, _ in d.start if g == g2) > sum(1 for g, _ in d.start if g == g3)
    store.close()


def test_vs_the_baseline_keeps_up_and_a_resolved_difference_stops(tmp_path):
    store, plan = Store(tmp_path / "runs"), plan_of()
    g1, g2, g3 = plan.groups()
    for seed, (a, b, c) in enumerate([(44.1, 48.0, 44.3), (44.5, 48.2, 44.0), (44.0, 47.9, 44.6)]):
        finish(store, plan, g1, seed, a)
        finish(store, plan, g2, seed, b)
        finish(store, plan, g3, seed, c)
    spec = AutoSpec(max_seeds=12, vs=g1)
    state = study_state(store, plan)
    d = decide(spec, state, slots=50)
    assert d.groups[g2].state == "resolved" and compare(state[0].done, state[1].done)["verdict"] == "better"
    unresolved = compare(state[0].done, state[2].done)
    assert d.groups[g3].state == "needs" and unresolved["verdict"] == "not resolved"
    wanted = min(unresolved["seeds"] or 12, 12)
    assert {g for g, _ in d.start} == {g1, g3}  # the baseline keeps up with g3; g2 is done
    assert sum(g == g3 for g, _ in d.start) == sum(g == g1 for g, _ in d.start) == wanted - 3
    store.close()


def test_the_decision_is_the_stores_queued_and_live_runs_count_stopped_and_crashed_ones_resume(tmp_path):
    home = tmp_path / "runs"
    store, plan = Store(home), plan_of()
    g1, g2, g3 = plan.groups()
    spec = AutoSpec(max_seeds=3, target_ci=0.5)
    finish(store, plan, g1, 0, 41.0)
    stopped = finish(store, plan, g1, 1, 20.0, status="stopped")
    live = finish(store, plan, g2, 0, None, status="running")  # its pid is alive: in flight
    crashed = finish(store, plan, g3, 0, None, status="running")
    store.conn.execute("UPDATE runs SET pid=999999999 WHERE run_id=?", (crashed,))  # its process is gone
    overrides, _ = planned_run(plan, g2, 1)
    store.enqueue("resnet18_baseline", overrides, study=plan.study, group=g2)  # queued by an earlier driver
    state = {g.group: g for g in study_state(store, plan)}
    assert state[g1].done == {0: 41.0} and state[g1].resumable == {1: stopped}
    assert state[g2].pending == {0, 1} and state[g3].resumable == {0: crashed} and live
    d = decide(spec, list(state.values()), slots=10)
    assert set(d.resume) == {stopped, crashed}
    # g3 lacks the most (one run coming of its first 3): first; seeds in flight or to resume are not started again
    assert d.start == [(g3, 1), (g1, 2), (g2, 2), (g3, 2)]
    # a restart reads the same store: the same decision; once it is queued, nothing more
    again = decide(spec, study_state(store, plan), slots=10)
    assert (again.start, sorted(again.resume)) == (d.start, sorted(d.resume))
    for g, seed in d.start:
        store.enqueue("resnet18_baseline", planned_run(plan, g, seed)[0], study=plan.study, group=g)
    for rid in d.resume:
        store.enqueue(rid, [], resume_of=rid)
    after = decide(spec, study_state(store, plan), slots=10)
    assert after.start == [] and after.resume == [] and not after.finished
    store.close()


def test_the_cli_finishes_at_once_when_every_group_is_resolved_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "off")  # the cost line: no probe (estimate.py's to test)
    home = tmp_path / "runs"
    store, plan = Store(home), plan_of("done")
    for g in plan.groups():
        for seed in range(3):
            finish(store, plan, g, seed, 40.0 + 0.01 * seed)
    store.close()
    args = ["--home", str(home), "run", "resnet18_baseline", *[a for s in SETS for a in ("--set", s)],
            "--seeds", "auto", "--max-seeds", "6", "--target-ci", "0.5", "--study", "done"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert res.output.count(": resolved") == 3 and "run resnet18_baseline-" not in res.output
    store = Store(home)
    spec = store.study("done")["spec"]
    assert (spec["seeds"], spec["max_seeds"], spec["target_ci"]) == ("auto", 6, 0.5) and not store.queued(True)
    store.close()
    dry = CliRunner().invoke(app, [*args[:-2], "--study", "new", "--dry-run", "--json"])
    lines = [json.loads(line) for line in dry.output.splitlines()]
    assert dry.exit_code == 0 and [d["label"] for d in lines] == ["lr=1e-3", "lr=3e-3", "lr=0.01"]


def test_a_plan_says_what_it_costs_on_this_machine_from_earlier_runs(tmp_path, monkeypatch):
    """The plan of a study (and of seeds auto: its first seeds and its cap) prints its time from earlier
    runs of the same model and input size here, over the runs at a time; unknown without any."""
    from cifar_tui.estimate import Estimator, fmt_span, run_seconds
    from cifar_tui.studies import plan_cost

    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "off")
    monkeypatch.setenv("CIFAR_TUI_MAX_PARALLEL", "2")
    home = tmp_path / "runs"
    store, plan = Store(home), plan_of("old")
    assert plan_cost(store, [r.cfg for r in plan.runs], 2).startswith("estimated time: unknown (no earlier run")
    for seed in range(2):  # two finished runs of resnet18 at 32x32 on the CPU, 3 s an epoch
        overrides, cfg = planned_run(plan, plan.groups()[0], seed)
        rid = f"old-{seed}"
        store.run_started(rid, config=cfg.model_dump(mode="json"), device="cpu", pid=os.getpid(),
                          run_dir=str(home / rid), epochs_total=2, params=1, flops=None, study="old", group=plan.groups()[0])
        for ep in (1, 2):
            store.epoch_done(rid, {"epoch": ep, "test_acc": 10.0, "best_acc": 10.0, "best_epoch": ep, "epoch_s": 3.0}, 3.0 * ep)
        store.run_ended(rid, "completed", None, 6.0)
    cfgs = [r.cfg for r in plan.runs]
    rate = Estimator(store).estimate(cfgs[0]).train_s_per_image
    expected = fmt_span(max(sum(run_seconds(c, rate) for c in cfgs) / 2, run_seconds(cfgs[0], rate)))
    line = plan_cost(store, cfgs, 2)
    assert line.startswith(f"estimated time: about {expected} on cpu (3 runs, 2 at a time; from 2 earlier runs")
    store.close()
    args = ["--home", str(home), "run", "resnet18_baseline", *[a for s in SETS for a in ("--set", s)], "--dry-run"]
    res = CliRunner().invoke(app, [*args, "--seeds", "2"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and f"estimated time: about " in res.stdout and "6 runs, 2 at a time" in res.stdout
    res = CliRunner().invoke(app, [*args, "--seeds", "auto", "--max-seeds", "5", "--target-ci", "1"],
                             env={"COLUMNS": "300"})
    assert "first 3 seeds per group: estimated time: about" in res.stdout and "9 runs, 2 at a time" in res.stdout
    assert "at most (5 per group): estimated time: about" in res.stdout and "15 runs" in res.stdout
