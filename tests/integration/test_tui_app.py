"""The Textual app driven by Pilot against real engine processes on tiny synthetic data.

Asserts on widget contents (tables, labels), not only on "no crash".
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from textual import events
from textual.widgets import DataTable, Input, Select, Static

from cifar_tui.tui.app import CifarTUI
from cifar_tui.launch import LaunchRequest, launch
from cifar_tui.workspace import Workspace
from cifar_tui.tui.screens import LaunchScreen, QuitScreen
from cifar_tui.tui.panes.run_view import POLL_MAX_BYTES
from cifar_tui.tui.support import pane_id_for
from engine.record.events import read_events
from engine.record.store import Store
from engine.record.status import pid_alive

from tests.support.tui import until_form, footer_keys, until_loaded

SIZE = (160, 48)
LIMITS = "data.train_limit=256 data.test_limit=128"
# each test starts two tiny engines (~10 s each on an idle 2-core CPU); a busy machine is slower
ENGINE_TIMEOUT = pytest.mark.timeout(900)
TINY_RUN = ["data.source=synthetic", "data.train_limit=256", "data.test_limit=128", "train.batch_size=64",
            "train.device=cpu"]


@pytest.fixture
def engine_ws(tmp_path):
    """A temp workspace; every engine still alive at the end is killed (process group)."""
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data", configs=None)
    yield ws
    if (ws.home / "cifar_tui.db").exists():
        store = Store(ws.home)
        rows = store.conn.execute("SELECT pid FROM runs").fetchall()
        store.close()
        for (pid,) in rows:
            if pid and pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass


async def wait_for(pilot, cond, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(step)
    assert cond(), f"timed out after {timeout}s waiting for {what}"


def epoch_events(ws: Workspace, run_id: str) -> dict[int, dict]:
    return {e["epoch"]: e for e in read_events(ws.home / run_id / "events.jsonl") if e["type"] == "epoch"}


async def fill_form(pilot, form: LaunchScreen, *, epochs: str, overrides: str) -> None:
    form.query_one("#f-epochs", Input).value = epochs
    form.query_one("#f-batch", Input).value = "64"
    form.query_one("#f-device", Select).value = "cpu"
    form.query_one("#f-data", Select).value = "synthetic"
    # Focused at once, on the form: Widget.focus() takes effect on the app's next turn (keys pressed
    # before that went to the field before: 'ata.train_limit=...' in a fresh clone's CI run).
    form.set_focus(form.query_one("#f-set", Input))
    try:
        await wait_for(pilot, lambda: getattr(form.app.focused, "id", "") == "f-set", 60, "the overrides field's focus")
    except AssertionError as exc:  # who has it instead
        field = form.query_one("#f-set", Input)
        raise AssertionError(f"{exc}: focused {form.app.focused!r} on {form.app.screen!r}; the field focusable "
                             f"{field.focusable}, attached {field.is_attached}, disabled {field.disabled}") from None
    await pilot.press(*overrides)


@ENGINE_TIMEOUT
@pytest.mark.cold_engine  # "starting" is the seconds a true start takes before its store row (a warm one writes it at once)
def test_launch_watch_stop_resume_leaderboard(engine_ws):
    ws = engine_ws

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            # filter the list by typing, back to the list, launch with one key
            await pilot.press("slash", *"resnet18_baseline", "enter")
            exp = app.query_one("#exp-table", DataTable)
            assert exp.row_count == 3  # baseline, baseline_lbsmooth, baseline_wd01
            assert app.experiments_pane.highlighted() == "resnet18_baseline"
            await pilot.press("l")
            form = await until_form(pilot, app)
            # a bad override is shown in the form, not a crash
            await fill_form(pilot, form, epochs="4", overrides="train.batch_size=-3")
            await pilot.press("enter")
            assert app.screen is form
            error = str(form.query_one("#form-error", Static).render())
            assert "train.batch_size" in error
            form.query_one("#f-set", Input).value = ""
            await pilot.press(*LIMITS, "enter")
            assert not isinstance(app.screen, LaunchScreen)
            assert len(app.views) == 1
            rid, view = next(iter(app.views.items()))
            assert app.active_tab == pane_id_for(rid)
            assert rid.startswith("resnet18_baseline-")
            # listed at once as starting, in the Runs tab and the header (its engine writes its store row
            # only once torch is imported: seconds after this)
            assert rid not in app.index.runs, "the engine wrote its store row at once: nothing left to check"
            assert "▶ 1 running" in str(app.query_one("#counts", Static).render())
            await pilot.press("2")
            assert "starting" in app.query_one("#runs-table", DataTable).get_row(rid)[0].plain
            app.action_show_tab(pane_id_for(rid))
            table = view.query_one("#epochs", DataTable)

            # the epoch table fills from the live events
            await wait_for(pilot, lambda: table.row_count >= 1, 240, "the first epoch row")
            first = epoch_events(ws, rid)[1]
            row = table.get_row("1")
            assert row[0].plain == "1"
            assert row[1] == f"{first['train_loss']:.4f}"
            assert row[4].plain.split()[0] == f"{first['test_acc']:.2f}"
            title = str(view.query_one("#run-title", Static).render())
            assert "synthetic" in title and "cpu" in title
            assert "/4" in str(view.query_one("#epoch-label", Static).render())

            # stop (graceful): checkpoint + end event -> status stopped, fewer than 4 epochs
            await pilot.press("s")
            await wait_for(pilot, lambda: view.status == "stopped", 180, "the run to stop")
            stopped_rows = table.row_count
            assert 1 <= stopped_rows < 4
            assert "stopped" in str(view.query_one("#run-status", Static).render())
            await wait_for(pilot, lambda: app.store.run(rid)["status"] == "stopped", 60, "the store row")

            # resume: continues in the same tab until all 4 epochs are there
            await pilot.press("r")
            await wait_for(pilot, lambda: view.status == "completed", 300, "the resumed run to complete")
            assert [table.get_row_at(i)[0].plain for i in range(table.row_count)] == ["1", "2", "3", "4"]
            assert "completed" in str(view.query_one("#run-status", Static).render())

            # the leaderboard shows the run with the store's values, marked synthetic
            await pilot.press("3")
            lb = app.query_one("#lb-table", DataTable)
            await wait_for(pilot, lambda: rid in {k.value for k in lb.rows}, 60, "the leaderboard row")
            await wait_for(pilot, lambda: "completed" in lb.get_cell(rid, "status").plain, 3, "the row to say completed")
            stored = app.store.run(rid)
            cells = [c.plain if hasattr(c, "plain") else str(c) for c in lb.get_row(rid)]
            cols = [c.value for c in lb.columns]
            got = dict(zip(cols, cells))
            assert got["best_acc"] == f"{stored['best_acc']:.2f}"
            assert got["data"] == "synthetic" and got["rank"] == "S1"
            assert got["epochs"] == "4/4" and "completed" in got["status"]
            assert got["reference"] == "-"  # a synthetic result is never compared with the seed's figure
            # top-5: the engine's own figure for the best epoch
            best = epoch_events(ws, rid)[stored["best_epoch"]]
            assert got["top5"] == f"{best['test_top5']:.2f}" and best["test_top5"] >= best["test_acc"]
            # past its end event the engine closes its files, then exits by itself
            await wait_for(pilot, lambda: not pid_alive(stored["pid"]), 30, "the engine to exit")

    asyncio.run(scenario())


@ENGINE_TIMEOUT
def test_reattach_after_restart_and_queue_survives(engine_ws):
    ws = engine_ws
    state: dict = {}

    async def first_session():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("slash", *"resnet18_baseline", "enter")
            await pilot.press("space", "down", "space")  # marks baseline and baseline_lbsmooth
            assert app.experiments_pane.marked == {"resnet18_baseline", "resnet18_baseline_lbsmooth"}
            await pilot.press("l")
            form = await until_form(pilot, app)
            assert form.names == ["resnet18_baseline", "resnet18_baseline_lbsmooth"]
            await fill_form(pilot, form, epochs="3", overrides="data.train_limit=256 data.test_limit=128")
            await pilot.press("enter")
            # one slot on CPU: the first runs, the second waits in the persistent queue
            assert len(app.views) == 1
            queued = app.store.queued()
            assert [q["config"] for q in queued] == ["resnet18_baseline_lbsmooth"]
            rid = next(iter(app.views))
            view = app.views[rid]
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: f"queue:{queued[0]['id']}" in {k.value for k in runs.rows}, 60, "queued row")
            await wait_for(pilot, lambda: view.state.step is not None or view.state.epochs, 240, "the first steps")
            assert view.status == "running"
            state["rid"], state["pid"] = rid, view.state.pid
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            await pilot.press("l")  # leave running
        assert app.return_value == "left running"

    asyncio.run(first_session())
    assert pid_alive(state["pid"]), "closing the app must not kill the run"

    async def second_session():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            rid = state["rid"]
            await wait_for(pilot, lambda: rid in app.views and app.views[rid].loaded, 60, "the re-attached tab")
            view = app.views[rid]
            assert view.status in ("running", "completed")
            table = view.query_one("#epochs", DataTable)
            await wait_for(pilot, lambda: view.status == "completed", 300, "the re-attached run to finish")
            assert table.row_count == 3
            # the slot is free: the queued experiment starts by itself, in its own tab
            await wait_for(pilot, lambda: len(app.views) == 2, 30, "the queued run to start")
            second = next(r for r in app.views if r != rid)
            assert second.startswith("resnet18_baseline_lbsmooth-")
            assert app.store.queued() == []
            view2 = app.views[second]
            await wait_for(pilot, lambda: view2.status == "completed", 300, "the queued run to finish")
            assert view2.query_one("#epochs", DataTable).row_count == 3

    asyncio.run(second_session())


@ENGINE_TIMEOUT
def test_killed_engine_shows_crashed_and_resumes(engine_ws):
    ws = engine_ws
    launched = launch(ws, LaunchRequest("resnet18_baseline", [*TINY_RUN, "train.epochs=3"]))
    store = ws.store()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            row = store.run(launched.run_id)
            if row and row["epochs_done"] >= 1:
                break
            time.sleep(0.2)
        assert row and row["status"] == "running"
    finally:
        store.close()
    os.killpg(launched.process.pid, signal.SIGKILL)
    launched.process.wait(10)
    # a warm engine (tests/support/warm_engine.py) dies a moment after its stand-in, when its keeper
    # sees the stand-in gone: the app opens on a dead engine, as after a real kill (it re-attached a live one)
    deadline = time.monotonic() + 30
    while pid_alive(row["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(row["pid"]), "the killed engine is still alive"

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            rid = launched.run_id
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: rid in {k.value for k in runs.rows}, 60, "the runs row")
            assert "crashed" in runs.get_row(rid)[0].plain
            assert rid not in app.views  # a dead run is not re-attached as live
            runs.move_cursor(row=runs.get_row_index(rid))
            await pilot.pause()
            assert footer_keys(app)["r"] is True  # resume shown enabled
            await pilot.press("r")
            view = app.views[rid]
            await wait_for(pilot, lambda: view.status == "completed", 300, "the resumed run to complete")
            assert view.query_one("#epochs", DataTable).row_count == 3

    asyncio.run(scenario())


WRITER = textwrap.dedent("""
    import json, os, sys, time
    path, run_id, stop, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    f = open(path, "a")
    def emit(**e):
        e.update(v=1, t=time.time(), run_id=run_id)
        f.write(json.dumps(e) + "\\n"); f.flush()
        return e["t"]
    emit(type="start", config_name="resnet18_baseline", config={"name": "resnet18_baseline",
         "train": {"epochs": 100000, "batch_size": 64}, "data": {"source": "synthetic"}}, device="cpu",
         data_source="synthetic", pid=0, steps_per_epoch=500)
    start = time.time()
    n, first, last = 0, None, None
    while not os.path.exists(stop) and time.time() < start + limit:  # until told to stop
        n += 1
        if n % 100 == 0:  # 5000 events/s: a thousand times the engine's step rate
            time.sleep(max(0.0, start + n / 5000 - time.time()))
        epoch, step = n // 500 + 1, n % 500
        last = emit(type="step", epoch=epoch, step=step, steps_per_epoch=500, loss=4.6 - n * 1e-5, acc=n * 1e-4,
                    lr=0.001, img_per_s=1234.5)
        first = first or last
        if step == 499:
            emit(type="epoch", epoch=epoch, train_loss=4.0, train_acc=10.0, test_loss=4.1, test_acc=9.0,
                 best_acc=9.0, best_epoch=1, lr=0.001, epoch_s=0.1, epochs=100000)
    print(json.dumps({"n": n, "first": first, "last": last}))
""")


def test_ui_stays_responsive_while_events_stream(tmp_path):
    """Events stream at 5000 lines/s (a thousand times the engine's ~5 step events/s) from another
    process, until the last key press has been handled: every key press, sent at arbitrary moments
    while events are arriving, is handled, in order, between the view's reads of the stream, each
    of them bounded (POLL_MAX_BYTES), so none waits for a backlog to be read. How fast (the key
    latency in seconds) depends on the machine and its load: not asserted here."""
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    rid = "resnet18_baseline-20260101T000000Z-beef"
    run_dir = ws.home / rid
    run_dir.mkdir(parents=True)
    store = ws.store()
    store.run_started(rid, config={"name": "resnet18_baseline", "data": {"source": "synthetic"}}, device="cpu",
                      pid=os.getpid(), run_dir=str(run_dir), epochs_total=100000, params=1, flops=None)
    store.close()
    stop = tmp_path / "stop-streaming"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir / "events.jsonl"), rid, str(stop), "120"],
                              stdout=subprocess.PIPE, text=True)
    latencies: list[float] = []
    keys = [("1", "experiments"), ("2", "runs"), ("3", "leaderboard")] * 4
    sent_at: list[float] = []  # wall clock, as the writer's event times
    applied_t: list[float] = []  # the newest event the live view had applied when each key was handled
    reads: list[int] = []  # bytes of each read of the events file by the live view

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        handled: list[tuple[str, float]] = []
        original = app.action_show_tab

        def spy(tab: str) -> None:
            handled.append((tab, time.perf_counter()))
            applied_t.append(app.views[rid].state.last_t)
            original(tab)

        app.action_show_tab = spy  # type: ignore[method-assign]
        sent: list[float] = []

        def presser() -> None:
            # keys arrive from outside the event loop, as a terminal's would, at arbitrary moments
            for key, _ in keys:
                time.sleep(0.23)
                sent.append(time.perf_counter())
                sent_at.append(time.time())
                app.post_message(events.Key(key, key))

        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await wait_for(pilot, lambda: rid in app.views and app.views[rid].loaded, 60, "the live tab")
            view = app.views[rid]
            tail, read = view.tail, view.tail.poll_lines

            def counted(max_bytes: int) -> list[bytes]:
                before = tail._offset or 0
                lines = read(max_bytes)
                reads.append((tail._offset or 0) - before)
                return lines

            tail.poll_lines = counted  # type: ignore[method-assign]
            await pilot.pause(0.5)  # let the stream build up
            thread = threading.Thread(target=presser, daemon=True)
            thread.start()
            await wait_for(pilot, lambda: len(handled) == len(keys), 20, "all key presses", step=0.05)
            thread.join()
            stop.touch()  # only now: the stream went on until the last key was handled
            assert [h[0] for h in handled] == [tab for _, tab in keys]
            latencies.extend(h[1] - s for h, s in zip(handled, sent))
            assert app.active_tab == keys[-1][1]
            # the stream was being consumed meanwhile
            assert view.state.epochs and view.state.step is not None
            assert view.query_one("#epochs", DataTable).row_count > 0

    try:
        asyncio.run(scenario())
    finally:
        stop.touch()
        writer.wait(30)
    streamed = json.loads(writer.stdout.read())
    assert streamed["n"] > 4000  # the writer really streamed
    assert len(sent_at) == len(keys) == len(latencies)
    # every key went out while events were arriving, and the view kept applying them meanwhile
    assert all(streamed["first"] < t < streamed["last"] for t in sent_at), (streamed, sent_at)
    assert None not in applied_t and applied_t[-1] > applied_t[0], applied_t
    # the view read the stream in bounded steps, several of them full (there was a backlog to bound)
    assert max(reads) <= POLL_MAX_BYTES and POLL_MAX_BYTES in reads, reads


@ENGINE_TIMEOUT
def test_a_study_from_the_form_runs_with_its_groups(engine_ws):
    """Seeds 2 in the form: two real runs queued one after another, each recording its study and
    group; the leaderboard's group row is `leaderboard --by group`'s (n = 2, mean ± std, interval)."""
    from cifar_tui.table_rows import group_cells
    from cifar_tui.studies import leaderboard_groups

    ws = engine_ws

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            app.experiments_pane.launch(["resnet18_baseline"])
            form = await until_form(pilot, app)
            await fill_form(pilot, form, epochs="1", overrides=LIMITS)
            form.query_one("#f-seeds", Input).value = "2"
            form.query_one("#f-study", Input).value = "seeds2"
            try:
                await wait_for(pilot, lambda: form.shown_plan is not None, 60, "the plan")
            except AssertionError as exc:  # what the form shows instead, and the fields it read
                fields = {w.id: w.value for w in form.query(Input)}
                raise AssertionError(f"{exc}: plan {form.query_one('#plan', Static).render()!s}; "
                                     f"error {form.query_one('#form-error', Static).render()!s}; fields {fields}")
            assert "2 runs (2 seeds), 1 group" in str(form.query_one("#plan", Static).render())
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: len(app.store.study_runs("seeds2")) == 2 and all(
                r["status"] == "completed" for r in app.store.study_runs("seeds2")), 600, "both runs to complete")
            runs = app.store.study_runs("seeds2")
            groups = {r["group_key"] for r in runs}
            assert len(groups) == 1 and "train.seed" not in next(iter(groups))
            for r in runs:  # the engine recorded them
                start = next(e for e in read_events(ws.home / r["run_id"] / "events.jsonl") if e["type"] == "start")
                assert start["study"] == "seeds2" and start["group"] == r["group_key"]
            assert sorted(json.loads(r["config_json"])["train"]["seed"] for r in runs) == [0, 1]
            # one tab for the study, none per run: its grid filled in with both runs' best accuracies
            assert app.views == {} and "seeds2" in app.study_tabs.views
            pane = app.study_tabs.views["seeds2"]
            await wait_for(pilot, lambda: pane.grid is not None and sorted(
                (c.status, c.best) for c in pane.grid.cells.values()) == sorted(
                ("completed", r["best_acc"]) for r in runs), 10, "the study's grid")
            await pilot.press("3", "g")
            table = app.query_one("#lb-groups", DataTable)
            expected = leaderboard_groups(app.store, "seeds2")[0]
            key = f"synthetic\t{expected['group']}"
            await wait_for(pilot, lambda: key in {r.key.value for r in table.ordered_rows}, 60, "the group row")
            row = [c.plain if hasattr(c, "plain") else str(c) for c in table.get_row(key)]
            assert expected["n"] == 2 and row[4:12] == group_cells(expected)[1:]

    asyncio.run(scenario())
