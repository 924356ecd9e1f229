"""Studies in the TUI (Pilot, in process, on fake workspaces; no engine starts): the leaderboard's
top-5 column and its rows per group (the figures of `cifar-tui leaderboard --by group`, checked
against numbers computed here), the filter by study, the launch form's plan of a grid times seeds
queued with each run's study and group, its refusals, the compare screen for groups, and the
studies screen with an Optuna study's best trial."""
from __future__ import annotations

import asyncio
import math
import statistics
import time

from textual.widgets import DataTable, Input, Select, Static

from cifar_tui.names import short_number
from cifar_tui.table_rows import fmt_acc, group_cells
from cifar_tui.studies import group_curve, leaderboard_groups
from cifar_tui.sweep import group_key, make_plan
from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.screens import CompareScreen, LaunchScreen, StudiesScreen
from engine.config import ConfigError

from tests.support.tui import (STUDY, TUNE, add_tune_study, fake_workspace, footer_keys, form_ready, study_workspace,
                               until_loaded)

SIZE = (160, 48)
T_975_2 = 4.302652729911275  # Student's t, two-sided 95%, 2 degrees of freedom


def text(value) -> str:
    return value.plain if hasattr(value, "plain") else str(value)


def rows(table: DataTable) -> list[list[str]]:
    """The table as listed, cells as text."""
    return [[text(c) for c in table.get_row(r.key)] for r in table.ordered_rows]


async def wait_for(pilot, cond, what: str, timeout: float = 60.0) -> None:  # a bound for a stuck app, not a speed
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert cond(), f"timed out waiting for {what}"


def test_leaderboard_top5_column_is_each_runs_top5_at_its_best_epoch(tmp_path):
    ws, ids = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3")
            lb = app.query_one("#lb-table", DataTable)
            await wait_for(pilot, lambda: lb.row_count == len(ids), "the leaderboard rows")
            columns = [c.value for c in lb.columns]
            assert columns.index("top5") == columns.index("best_acc") + 1
            for rid in ids.values():
                best_epoch = app.store.run(rid)["best_epoch"]
                top5 = next(e["test_top5"] for e in app.store.epochs(rid) if e["epoch"] == best_epoch)
                cell = text(lb.get_row(rid)[columns.index("top5")])
                assert cell == fmt_acc(top5) and float(cell) >= float(text(lb.get_row(rid)[columns.index("best_acc")]))
            app.leaderboard_pane.set_sort("top5", True)  # sortable like any column, groups never mixed
            listed = [r.key.value for r in lb.ordered_rows]
            assert listed[:2] == [ids["c_pre"], ids["c_base"]]

    asyncio.run(scenario())


def test_group_rows_are_the_cli_groups_and_a_study_filters_them(tmp_path):
    ws, ids, groups = study_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3", "g")
            pane = app.leaderboard_pane
            table = app.query_one("#lb-groups", DataTable)
            expected = leaderboard_groups(app.store)
            await wait_for(pilot, lambda: table.row_count == len(expected), "the group rows")
            assert pane.by_group and app.focused is table
            listed = rows(table)
            # one row per group, as `cifar-tui leaderboard --by group` orders and prints them
            assert [r[4:12] for r in listed] == [group_cells(g)[1:] for g in expected]
            # the keys of the group mode; a group row is not a run: no stop / resume / delete
            keys = footer_keys(app)
            assert keys.get("g") is True and pane.check_action("by_run", ()) and not pane.check_action("by_group", ())
            assert not {"s", "r", "d"} & keys.keys() and keys["c"] is False

            # the study's groups, from the studies screen (f, then g: its groups)
            await pilot.press("f")
            await wait_for(pilot, lambda: isinstance(app.screen, StudiesScreen), "the studies screen")
            assert app.screen.highlighted() == STUDY
            await pilot.press("g")
            await wait_for(pilot, lambda: pane.study == STUDY and table.row_count == 2, "the study's groups")
            assert [r[4:12] for r in rows(table)] == [group_cells(g)[1:] for g in leaderboard_groups(app.store, STUDY)]
            # the figures, computed here from the runs' best accuracies
            for row, (group, run_ids) in zip(rows(table), sorted(groups.items(), key=lambda kv: kv[0])):
                accs = [app.store.run(r)["best_acc"] for r in run_ids]
                mean, std = statistics.mean(accs), statistics.stdev(accs)
                half = T_975_2 * std / math.sqrt(len(accs))
                assert row[4] == "3" and row[5] == f"{mean:.2f} ± {std:.2f}"
                assert row[6] == f"[{mean - half:.2f}, {mean + half:.2f}]"
                lr = float(group.split("optim.lr=")[1].split(" ")[0])  # 0.001 -> lr=1e-3: the short name
                assert row[12] == f"lr={lr:.0e}".replace("e-0", "e-")
            assert "study lr-sweep" in str(app.query_one("#lb-note", Static).render())
            assert "data=synthetic" in str(app.query_one("#lb-note", Static).render())  # shared: said once
            # by run: only the study's runs; esc: every run again
            await pilot.press("g")
            lb = app.query_one("#lb-table", DataTable)
            await wait_for(pilot, lambda: not pane.by_group and lb.row_count == 6, "the study's runs")
            assert {r.key.value for r in lb.ordered_rows} == {r for ids_ in groups.values() for r in ids_}
            await pilot.press("escape")
            await wait_for(pilot, lambda: pane.study is None and lb.row_count == 6 + len(ids), "every run")

    asyncio.run(scenario())


async def open_form(pilot, app, name: str = "resnet18_baseline") -> LaunchScreen:
    await until_loaded(pilot, app)
    app.experiments_pane.launch([name])
    await wait_for(pilot, lambda: form_ready(app), "the launch form")
    return app.screen


def test_launch_form_plans_a_grid_times_seeds_and_queues_it_with_groups(tmp_path):
    ws, _ = fake_workspace(tmp_path)
    sets = "optim.lr=1e-3,3e-3 optim.weight_decay=1e-4,1e-3"

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            form = await open_form(pilot, app)
            form.query_one("#f-data", Select).value = "cifar100"  # the config's (the form starts on synthetic here)
            form.query_one("#f-set", Input).value = sets
            form.query_one("#f-seeds", Input).value = "2"
            form.query_one("#f-study", Input).value = "grid"
            await wait_for(pilot, lambda: form.shown_plan is not None and form.shown_plan.study == "grid",
                           "the plan in the form")
            shown = str(form.query_one("#plan", Static).render())
            assert "8 runs (2 optim.lr x 2 optim.weight_decay x 2 seeds), 4 groups" in shown
            assert "lr=1e-3 wd=1e-4" in shown and "lr=3e-3 wd=1e-3" in shown  # each group by what sets it apart
            assert "Queue 8 runs" in str(form.query_one("#go").label)
            app.sup.pump = lambda: []  # nothing starts: the runs stay queued (no engine in a unit test)
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: len(app.store.queued()) == 8, "8 queued runs")
            assert not isinstance(app.screen, LaunchScreen)
            items = app.store.queued()
            plan = make_plan(["resnet18_baseline"], sets.split(), 2, study="grid")
            assert [(i["config"], i["overrides"], i["study"], i["group_key"]) for i in items] == [
                ("resnet18_baseline", list(r.overrides), "grid", r.group) for r in plan.runs]
            for item in items:  # the group is the config plus its overrides, the seed left out
                assert item["group_key"] == group_key("resnet18_baseline", item["overrides"])
            by_group: dict[str, set[str]] = {}
            for item in items:
                by_group.setdefault(item["group_key"], set()).add(item["overrides"][-1])
            assert len(by_group) == 4 and all(s == {"train.seed=0", "train.seed=1"} for s in by_group.values())
            study = app.store.study("grid")
            assert study["kind"] == "sweep" and study["spec"]["seeds"] == 2 and study["spec"]["sets"] == sets.split()
            assert study["command"].endswith(f"--set optim.lr=1e-3,3e-3 --set optim.weight_decay=1e-4,1e-3 "
                                             f"--seeds 2 --study grid")
            assert app.sup.children == {}

    asyncio.run(scenario())


def test_launch_form_refuses_malformed_lists_as_the_cli_does(tmp_path):
    ws, _ = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            app.store.save_study("searched", "tune", "resnet18_baseline", {})
            form = await open_form(pilot, app)
            error = form.query_one("#form-error", Static)
            for sets, seeds, study in (("optim.lr=1e-3,,3e-3", "1", ""), ("optim.lr=1e-3,0.001", "1", ""),
                                       ("optim.lr=[1e-3,3e-3", "2", ""), ("optim.lr=1e-3,3e-3", "0", ""),
                                       ("optim.lr=1e-3,3e-3", "1", "a/b"), ("optim.lr=1e-3,3e-3", "1", "searched")):
                try:
                    expected = None
                    if study == "searched":
                        raise ConfigError("--study searched: already a tune study; choose another name")
                    make_plan(["resnet18_baseline"], sets.split(), int(seeds), study=study or "s")
                except ConfigError as exc:
                    expected = str(exc)
                assert expected, (sets, seeds, study)
                form.query_one("#f-set", Input).value = sets
                form.query_one("#f-seeds", Input).value = seeds
                form.query_one("#f-study", Input).value = study
                await wait_for(pilot, lambda: expected in str(form.query_one("#plan", Static).render()),
                               f"the plan's refusal of {sets!r}")
                await pilot.press("ctrl+s")
                assert app.screen is form and str(error.render()) == f"✖ {expected}"
                assert "\n" not in str(error.render())
            await pilot.press("escape")
            assert app.store.queued() == [] and app.store.study("s") is None

    asyncio.run(scenario())


def test_compare_groups_shows_mean_curves_with_band_config_and_provenance_differences(tmp_path):
    ws, _, groups = study_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3")
            pane = app.leaderboard_pane
            pane.show_study(STUDY, by_group=True)
            table = app.query_one("#lb-groups", DataTable)
            await wait_for(pilot, lambda: table.row_count == 2, "the study's groups")
            table.focus()  # takes effect on the app's next turn: the keys below wait for it
            await wait_for(pilot, lambda: app.focused is table, "the groups table's focus")
            table.move_cursor(row=0)
            await pilot.press("space", "down", "space")
            assert footer_keys(app)["c"] is True
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")
            screen = app.screen
            assert screen.by_group and len(screen.items) == 2
            for item, g in zip(screen.items, pane.groups):
                curve = group_curve(app.store, groups[g["group"]])
                assert item.curve == {k: curve[k] for k in ("epochs", "mean", "low", "high")}
                assert item.curve["low"] != item.curve["high"]  # a band: the seeds differ
            # the configs differ in the swept key only (the seed is what a group leaves out)
            assert screen.diff_rows == [("optim.lr", [0.001, 0.003])]
            await wait_for(pilot, lambda: screen.provenance is not None, "the provenance read")
            prov = dict(screen.provenance)
            assert prov["git_commit"] == ["1111111", "2222222"] and prov["host"] == ["fixture-host", "other-host"]
            assert "versions.torch" not in prov  # the same everywhere: not listed
            table = screen.query_one("#compare-provenance", DataTable)
            assert [text(table.get_row_at(i)[0]) for i in range(table.row_count)] == list(prov)
            await pilot.press("escape")
            assert not isinstance(app.screen, CompareScreen)

    asyncio.run(scenario())


def test_studies_screen_shows_an_optuna_studys_best_trial(tmp_path):
    ws, _, _ = study_workspace(tmp_path)
    tune = add_tune_study(ws)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3", "f")
            await wait_for(pilot, lambda: isinstance(app.screen, StudiesScreen), "the studies screen")
            screen = app.screen
            table = screen.query_one("#studies-table", DataTable)
            assert [r.key.value for r in table.ordered_rows] == [TUNE, STUDY]  # newest first
            assert text(table.get_row(TUNE)[1]) == "tune" and "1 pruned" in text(table.get_row(TUNE)[3])
            assert screen.highlighted() == TUNE
            await wait_for(pilot, lambda: TUNE in screen.trials, "the best trial, read off the UI thread")
            detail = str(screen.query_one("#study-detail", Static).render())
            best = tune["best_run"]
            assert f"best trial #1: {fmt_acc(tune['bests'][best])}%" in detail
            assert f"lr={short_number(tune['best_lr'])}" in detail and best in detail  # as the trial is named
            assert "2 complete, 1 pruned" in detail and "--param optim.lr=log:1e-4:1e-1" in detail
            await pilot.press("enter")  # its runs on the leaderboard
            lb = app.query_one("#lb-table", DataTable)
            await wait_for(pilot, lambda: app.leaderboard_pane.study == TUNE and lb.row_count == 3, "the study's runs")
            assert {r.key.value for r in lb.ordered_rows} == set(tune["runs"])

    asyncio.run(scenario())


def test_studies_screen_follows_a_search_that_runs_elsewhere(tmp_path):
    """Tune workers on SLURM (another process): a trial's run arrives in the store, the trial in the
    Optuna journal; the open screen shows both without being reopened."""
    import optuna

    from cifar_tui.tune import _storage
    from engine.record.rebuild import rebuild_store
    from engine.record.store import Store
    from tests.support.tui import fake_run

    ws, _, _ = study_workspace(tmp_path)
    tune = add_tune_study(ws)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3", "f")
            await wait_for(pilot, lambda: isinstance(app.screen, StudiesScreen), "the studies screen")
            screen = app.screen
            table = screen.query_one("#studies-table", DataTable)
            await wait_for(pilot, lambda: TUNE in screen.trials, "the best trial")
            assert text(table.get_row(TUNE)[3]) == "2 completed, 1 pruned"
            # a worker elsewhere: a fourth trial, better than all, its run in the store and its value in the journal
            run = fake_run(tmp_path / "runs", "resnet18_baseline", "7fff", epochs=4, overrides=["optim.lr=0.01"],
                           acc_scale=1.6, t0=tune_t0(app) + 600, study=TUNE)
            store = Store(tmp_path / "runs")
            rebuild_store(store)
            best = store.run(run)["best_acc"]
            store.close()
            search = optuna.load_study(study_name=TUNE, storage=_storage(ws))
            search.add_trial(optuna.trial.create_trial(
                params={"optim.lr": 0.01}, distributions={"optim.lr": optuna.distributions.FloatDistribution(
                    1e-4, 1e-1, log=True)}, value=best, user_attrs={"run_id": run}))
            await wait_for(pilot, lambda: text(table.get_row(TUNE)[3]) == "3 completed, 1 pruned", "the new run counted")
            detail = lambda: str(screen.query_one("#study-detail", Static).render())  # noqa: E731
            await wait_for(pilot, lambda: f"best trial #3: {fmt_acc(best)}%" in detail(), "the new best trial")
            assert "3 complete, 1 pruned" in detail() and run in detail()

    asyncio.run(scenario())


def tune_t0(app) -> float:
    return max(r["started_at"] or 0 for r in app.store.runs())
