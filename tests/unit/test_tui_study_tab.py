"""A study's tab and the baseline group in the TUI (Pilot, in process; no engine starts): the groups x
seeds grid with each run's state and best accuracy, each group's mean and interval, the difference
to a baseline group (checked against scipy), a run opened from its cell; a study launched from the
form opens one tab, never one per run; `--seeds auto` from the form is decided by the App."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from scipy import stats as sp
from textual.widgets import DataTable, Input, Select

from cifar_tui.launch import Launched
from cifar_tui.table_rows import fmt_ci, vs_cells
from cifar_tui.studies import leaderboard_groups, vs_baseline
from cifar_tui.supervisor import Started
from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.screens import StudiesScreen
from cifar_tui.tui.study_tabs import study_pane_id

from tests.support.tui import STUDY, fake_workspace, study_workspace, until_form, until_loaded

SIZE = (180, 48)


def text(value) -> str:
    return value.plain if hasattr(value, "plain") else str(value)


async def wait_for(pilot, cond, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert cond(), f"timed out waiting for {what}"


def grid_rows(table: DataTable) -> dict[str, dict[str, str]]:
    """group -> {column key: cell text}."""
    keys = [c.value for c in table.columns]
    return {r.key.value: dict(zip(keys, (text(c) for c in table.get_row(r.key)))) for r in table.ordered_rows}


def test_a_studys_tab_shows_groups_by_seeds_means_and_the_difference_to_a_baseline(tmp_path):
    ws, _, groups = study_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3", "f")
            await wait_for(pilot, lambda: isinstance(app.screen, StudiesScreen), "the studies screen")
            await pilot.press("t")  # the study's own tab
            await wait_for(pilot, lambda: STUDY in app.study_tabs.views, "the study's tab")
            pane = app.study_tabs.views[STUDY]
            assert app.active_tab == study_pane_id(STUDY) and not app.views  # one tab, no run tabs
            table = pane.query_one("#study-grid", DataTable)
            await wait_for(pilot, lambda: table.row_count == 2, "two groups")
            columns = [c.value for c in table.columns]
            assert columns[:4] == ["group", "s0", "s1", "s2"]
            rows = grid_rows(table)
            stats = {g["group"]: g for g in leaderboard_groups(app.store, STUDY)}
            for group, run_ids in groups.items():
                row, g = rows[group], stats[group]
                assert row["group"] == g["label"] and row["n"] == "3"
                assert row["mean"] == f"{g['mean_acc']:.2f} " + fmt_ci(g["ci95"], g["ci95_clamped"], g["ci95_wide"])
                for seed, rid in enumerate(run_ids):  # each cell: the run's state and best accuracy
                    assert row[f"s{seed}"] == f"✔ {app.store.run(rid)['best_acc']:.2f}"
            base, other = list(groups)
            table.move_cursor(row=table.get_row_index(base), column=0)
            await pilot.press("b")
            await wait_for(pilot, lambda: grid_rows(table)[other]["vs"] != "-", "the difference to the baseline")
            accs = {g: [app.store.run(r)["best_acc"] for r in ids] for g, ids in groups.items()}
            ref = sp.ttest_rel(accs[other], accs[base])  # the same seeds in both groups: paired
            expected = vs_cells(vs_baseline(leaderboard_groups(app.store, STUDY), base)[
                [g["group"] for g in leaderboard_groups(app.store, STUDY)].index(other)])
            row = grid_rows(table)[other]
            assert row["vs"] == expected[0] and row["verdict"].split(" ")[0] == expected[2]
            assert (f"p={ref.pvalue:.3f}" in row["verdict"] or f"p={ref.pvalue:.2f}" in row["verdict"]
                    or "p<0.001" in row["verdict"])
            assert grid_rows(table)[base]["vs"] == "baseline"
            # a run opens from its cell
            rid = groups[other][1]
            table.move_cursor(row=table.get_row_index(other), column=columns.index("s1"))
            await pilot.press("enter")
            await wait_for(pilot, lambda: rid in app.views, "the run's tab")
            assert app.active_tab != study_pane_id(STUDY)

    asyncio.run(scenario())


def test_the_leaderboard_holds_the_groups_against_a_baseline_marked_with_b(tmp_path):
    ws, _, groups = study_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=(220, 48)) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3", "g")
            pane = app.leaderboard_pane
            pane.show_study(STUDY, True)
            table = app.query_one("#lb-groups", DataTable)
            await wait_for(pilot, lambda: table.row_count == 2, "the study's groups")
            base = pane.groups[0]["group"]
            table.move_cursor(row=0)
            await pilot.press("b")
            await wait_for(pilot, lambda: "vs_verdict" in [c.value for c in table.columns], "the vs columns")
            columns = [c.value for c in table.columns]
            expected = {g["group"]: vs_cells(g) for g in vs_baseline(leaderboard_groups(app.store, STUDY), base)}
            for r in table.ordered_rows:
                cells = [text(c) for c in table.get_row(r.key)]
                group = r.key.value.split("\t", 1)[1]
                got = [cells[columns.index(k)] for k in ("vs_diff", "vs_p", "vs_verdict", "vs_seeds")]
                assert got == expected[group]
            await pilot.press("b")  # again on it: no baseline
            await wait_for(pilot, lambda: "vs_verdict" not in [c.value for c in table.columns], "no vs columns")

    asyncio.run(scenario())


def test_a_study_from_the_form_opens_one_tab_not_one_per_run(tmp_path):
    ws, _ = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=4)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)

            def pump():  # the queue's items start (no engine in a unit test): claimed, reported as Started
                out = []
                for q in app.sup.store.queued()[:app.sup.max_parallel]:
                    rid = f"resnet18_baseline-20260101T000000Z-{q['id']:04x}"
                    app.sup.store.claim_queued(q["id"], rid)
                    out.append(Started(q["id"], Launched(rid, Path(ws.home) / rid, None), (), False))
                return out

            app.sup.pump = pump
            app.experiments_pane.launch(["resnet18_baseline"])
            form = await until_form(pilot, app)
            form.query_one("#f-set", Input).value = "optim.lr=1e-3,3e-3,1e-2"
            form.query_one("#f-seeds", Input).value = "2"
            form.query_one("#f-study", Input).value = "six"
            await wait_for(pilot, lambda: form.shown_plan is not None, "the plan")
            tabs_before = len(app.query("TabPane"))
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: "six" in app.study_tabs.views, "the study's tab")
            await wait_for(pilot, lambda: not app.store.queued(), "every run started")
            await pilot.pause(0.3)
            assert app.views == {} and len(app.query("TabPane")) == tabs_before + 1
            assert app.active_tab == study_pane_id("six")

    asyncio.run(scenario())


def test_seeds_auto_from_the_form_is_recorded_and_decided_by_the_app(tmp_path):
    ws, _ = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=4)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            app.sup.pump = lambda: []  # nothing starts: what the driver queues stays queued
            app.experiments_pane.launch(["resnet18_baseline"])
            form = await until_form(pilot, app)
            form.query_one("#f-data", Select).value = "cifar100"  # no CIFAR-100 here: the form starts on synthetic
            form.query_one("#f-set", Input).value = "optim.lr=1e-3,3e-3"
            form.query_one("#f-seeds", Input).value = "auto"
            form.query_one("#f-study", Input).value = "auto1"
            await wait_for(pilot, lambda: form.query_one("#auto-fields").display, "the auto fields")
            form.query_one("#f-max-seeds", Input).value = "6"
            form.query_one("#f-vs", Input).value = "lr=1e-3"
            await wait_for(pilot, lambda: form.shown_plan is not None and "auto" in str(form.query_one("#go").label)
                           or "Start" in str(form.query_one("#go").label), "the auto plan")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: len(app.store.queued()) == 4, "the first seeds queued")
            spec = app.store.study("auto1")["spec"]
            assert (spec["seeds"], spec["max_seeds"], spec["target_ci"]) == ("auto", 6, None)
            assert spec["vs"] == "resnet18_baseline optim.lr=0.001"
            assert sorted((q["group_key"].split("=")[-1], q["overrides"][-1]) for q in app.store.queued()) == [
                ("0.001", "train.seed=0"), ("0.001", "train.seed=1"), ("0.003", "train.seed=0"), ("0.003", "train.seed=1")]
            assert "--seeds auto --max-seeds 6 --vs" in app.store.study("auto1")["command"]
            pane = app.study_tabs.views["auto1"]
            assert pane.driven and app.views == {}
            await pilot.pause(1.5)  # a second tick: in flight counts, nothing queued twice
            assert len(app.store.queued()) == 4

    asyncio.run(scenario())
