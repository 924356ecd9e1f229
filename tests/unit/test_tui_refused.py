"""A launch that fails before its run starts, and marking (Pilot, in process, at 80x24): the failure
stays in the Runs tab, in full, until dismissed; its keys are retry (the launch form with its
settings) and dismiss, never resume; its run view says why in full and offers the same retry.
Marking keeps the cursor on the marked row and lists the marked names before a queue is launched.
A run stopped mid-epoch says where it stopped."""
from __future__ import annotations

import asyncio
import json
import re

from textual.widgets import DataTable, Input, Select, Static

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.screens import LaunchScreen
from engine.store import Store

from tests.support.tui import until_form, T0, fake_run, fake_workspace, footer_keys, until_loaded

SMALL = (80, 24)
# what the engine says when pretrained weights are neither cached nor downloadable: longer than 80 columns
REASON = ("model.pretrained: no cached ImageNet weights for 'resnet18' and the hub is unreachable; put the weights "
          "in the timm cache (see README, Offline) or set model.pretrained=false")
RUN_ID = "resnet18_pretrained-20260102T000000Z-0f0f"


def refused_item(ws) -> int:
    """A queue item whose engine refused to start, as the supervisor leaves it (claimed, then refused)."""
    store = Store(ws.home)
    try:
        item = store.enqueue("resnet18_pretrained", ["train.epochs=3", "data.source=synthetic", "optim.lr=0.002",
                                                     "loss.label_smoothing=0.1"])
        assert store.claim_queued(item, RUN_ID)
        store.fail_queued(item, REASON)
        return item
    finally:
        store.close()


def shown(widget: Static) -> str:
    return " ".join(str(widget.render()).split())


def test_a_launch_refused_before_start_stays_listed_with_retry_until_dismissed(tmp_path):
    ws, _ = fake_workspace(tmp_path)
    item = refused_item(ws)
    key = f"refused:{item}"

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SMALL) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("2")
            await pilot.pause(0.2)
            table = app.query_one("#runs-table", DataTable)
            assert table.ordered_rows[0].key.value == key  # first, above the queue and the runs
            assert "not started" in table.get_row(key)[0].plain
            table.move_cursor(row=0)
            await pilot.pause(0.1)
            assert REASON in shown(app.query_one("#runs-hint", Static))  # the whole reason, wrapped
            keys = footer_keys(app)
            assert keys.get("l") is True and keys.get("d") is True
            assert "r" not in keys and "s" not in keys  # no resume: there is nothing to resume

            await pilot.press("l")  # retry: the launch form with its settings, to change
            form = await until_form(pilot, app)
            assert isinstance(form, LaunchScreen) and form.names == ["resnet18_pretrained"]
            assert form.query_one("#f-epochs", Input).value == "3"
            assert form.query_one("#f-lr", Input).value == "0.002"
            assert form.query_one("#f-data", Select).value == "synthetic"
            assert form.query_one("#f-set", Input).value == "loss.label_smoothing=0.1"
            assert any(REASON in shown(s) for s in form.query(Static))
            await pilot.press("escape")  # not retried: still listed
            await pilot.pause(0.2)
            assert key in {r.key.value for r in table.ordered_rows}

            view = await app.open_run(RUN_ID, True)  # its tab, as when it was launched from here
            view.refused(REASON, app.index.refused[0])
            await pilot.pause(0.2)
            assert REASON in shown(view.query_one("#run-error", Static))
            assert "not started" in shown(view.query_one("#epoch-label", Static))
            keys = footer_keys(app)
            assert keys.get("l") is True and "r" not in keys and "s" not in keys and "e" not in keys

            await pilot.press("2")
            await pilot.pause(0.1)
            table.move_cursor(row=0)
            await pilot.press("d")  # dismissed: no longer listed, in this app or the store
            await pilot.pause(0.3)
            assert key not in {r.key.value for r in table.ordered_rows}
            assert app.sup.refused() == []

    asyncio.run(scenario())


def test_space_marks_in_place_and_the_marked_names_show_before_queueing(tmp_path):
    ws, _ = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SMALL) as pilot:
            await until_loaded(pilot, app)
            table = app.query_one("#exp-table", DataTable)
            first, second = (r.key.value for r in table.ordered_rows[:2])
            await pilot.press("space")
            assert table.cursor_row == 0  # the cursor stays on the row it marked
            await pilot.press("space")  # so space again unmarks it
            assert app.experiments_pane.marked == set()
            await pilot.press("space", "down", "space")
            assert app.experiments_pane.marked == {first, second}
            hint = shown(app.query_one("#exp-hint", Static))
            assert f"2 marked: {first}, {second}" in hint and "l queues them" in hint
            await pilot.press("l")
            await until_form(pilot, app)
            assert isinstance(app.screen, LaunchScreen) and app.screen.names == [first, second]

    asyncio.run(scenario())


def test_a_run_stopped_mid_epoch_shows_where_it_stopped(tmp_path):
    ws, _ = fake_workspace(tmp_path)
    home = tmp_path / "runs"
    run_id = fake_run(home, "resnet18_baseline", "0a0a", epochs=8, done=1, status=None, t0=T0 + 20000)
    events = home / run_id / "events.jsonl"
    t = T0 + 20100
    lines = [{"v": 1, "t": t + s, "type": "step", "run_id": run_id, "epoch": 2, "step": s, "steps_per_epoch": 4,
              "loss": 4.0, "acc": 10.0, "lr": 1e-3, "img_per_s": 512.0} for s in (1, 2, 3)]
    lines.append({"v": 1, "t": t + 4, "type": "end", "run_id": run_id, "status": "stopped", "error": None,
                  "best_acc": 1.0, "best_epoch": 1, "epochs_done": 1, "step_in_epoch": 3, "wall_s": 20.0})
    with events.open("a") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SMALL) as pilot:
            await until_loaded(pilot, app)
            view = await app.open_run(run_id, True)
            for _ in range(100):
                if view.loaded:
                    break
                await pilot.pause(0.05)
            await pilot.pause(0.2)
            assert shown(view.query_one("#epoch-label", Static)) == "epoch 2/8"
            assert "stopped at step 3/4 of epoch 2" in shown(view.query_one("#progress-info", Static))

    asyncio.run(scenario())


def test_a_running_run_labels_its_time_left_as_time_left(tmp_path):
    """`epoch 00:06 left · run 00:42 left`, never a bare `ETA … run …` that reads as elapsed time."""
    ws, _ = fake_workspace(tmp_path)
    home = tmp_path / "runs"
    run_id = fake_run(home, "resnet18_baseline", "0b0b", epochs=8, done=1, status=None, t0=T0 + 20000)
    with (home / run_id / "events.jsonl").open("a") as f:
        f.write(json.dumps({"v": 1, "t": T0 + 20100, "type": "step", "run_id": run_id, "epoch": 2, "step": 1,
                            "steps_per_epoch": 4, "loss": 4.0, "acc": 10.0, "lr": 1e-3, "img_per_s": 512.0}) + "\n")

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SMALL) as pilot:
            await until_loaded(pilot, app)
            view = await app.open_run(run_id, True)
            for _ in range(100):
                if view.loaded:
                    break
                await pilot.pause(0.05)
            # as the supervisor says of a live engine; read at once: the app's once-a-second status
            # sync would say 'crashed' of this fake run (no process), and a pause lets it run first
            view.supervised = "running"
            view._draw_progress()
            info = shown(view.query_one("#progress-info", Static))
            assert re.search(r"epoch \S+ left · run \S+ left", info), info
            assert "ETA" not in info

    asyncio.run(scenario())


def test_a_failed_runs_error_is_readable_in_full_in_the_view_and_its_log(tmp_path):
    ws, _ = fake_workspace(tmp_path)
    home = tmp_path / "runs"
    run_id = fake_run(home, "resnet18_baseline", "0c0c", epochs=8, done=1, status="failed", t0=T0 + 20000)
    events = home / run_id / "events.jsonl"
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    lines[-1]["error"] = REASON
    events.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with (home / run_id / "stdout.log").open("a") as f:
        f.write(f"error: {REASON}\n")

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SMALL) as pilot:
            await until_loaded(pilot, app)
            view = await app.open_run(run_id, True)
            for _ in range(100):
                if view.loaded:
                    break
                await pilot.pause(0.05)
            await pilot.pause(0.3)
            assert REASON in shown(view.query_one("#run-error", Static))
            log = view.query_one("#run-log")
            assert len(log.lines) > 3 and max(len(line.text.rstrip()) for line in log.lines) < 80  # wrapped
            assert f"error: {REASON}" in " ".join(" ".join(line.text.split()) for line in log.lines)

    asyncio.run(scenario())
