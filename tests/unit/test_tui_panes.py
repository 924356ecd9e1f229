"""Each pane holds its own keys (Pilot, in process, on the fake workspace): the footer shows a
pane's keys only while it is in front, enabled only when they can act on what is highlighted, and
a key of another pane does nothing. The App keeps the tab keys, help and quit."""
from __future__ import annotations

import asyncio
import time

from textual.widgets import DataTable

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.panes import LeaderboardPane, RunView
from cifar_tui.tui.screens import CompareScreen, ConfirmScreen, LaunchScreen
from engine.store import Store

from tests.support.tui import fake_workspace, footer_keys, until_loaded

SIZE = (160, 48)
TABS = {"1", "2", "3"}
GLOBAL = {"question_mark", "q"}
PANE_KEYS = {"l", "space", "slash", "s", "r", "d", "c", "o", "w", "g", "f"}


def pane_keys(app) -> dict[str, bool]:
    return {k: v for k, v in footer_keys(app).items() if k in PANE_KEYS}


async def wait_for(pilot, cond, what: str, timeout: float = 60.0) -> None:  # a bound for a stuck app, not a speed
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert cond(), f"timed out waiting for {what}"


async def highlight(pilot, table: DataTable, key: str) -> None:
    table.move_cursor(row=table.get_row_index(key), animate=False)
    await pilot.pause()


def test_each_tab_shows_its_own_keys(tmp_path):
    ws, ids = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            assert app.focused.id == "exp-table"
            assert pane_keys(app) == {"l": True, "space": True, "slash": True}
            assert GLOBAL <= footer_keys(app).keys()
            tabs = app.query_one("#tabs")  # the tab keys are on the tabs; the footer keeps its room for the pane's
            assert [str(tabs.get_tab(t).label) for t in ("experiments", "runs", "leaderboard")] == \
                ["1 Experiments", "2 Runs", "3 Leaderboard"]
            assert not TABS & footer_keys(app).keys()
            await pilot.press("2")
            assert app.active_tab == "runs"  # the keys still work
            await pilot.press("1")

            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            await highlight(pilot, runs, ids["s_crash"])
            assert pane_keys(app) == {"s": False, "r": True, "d": True}  # crashed: resume or delete
            await highlight(pilot, runs, ids["c_base"])
            assert pane_keys(app) == {"s": False, "r": False, "d": True}  # completed: delete only

            await pilot.press("3")
            lb = app.query_one("#lb-table", DataTable)
            await highlight(pilot, lb, ids["s_stop"])
            assert pane_keys(app) == {"space": True, "s": False, "r": True, "d": True, "c": False, "o": True, "g": True,
                                      "f": True}
            assert footer_keys(app).get("escape") is None  # "every run" only while one study is shown
            await pilot.press("space", "down", "space")
            assert pane_keys(app)["c"] is True  # two marked: compare can act
            await pilot.press("o")  # sort by the next column in view
            assert app.leaderboard_pane.sort[0] == "top5"
            await pilot.press("g")  # by group: a group row is not a run
            assert pane_keys(app) == {"space": True, "c": False, "o": True, "g": True, "f": True}
            assert app.screen.active_bindings["g"].binding.description == "By run"
            await pilot.press("g")
            assert app.screen.active_bindings["g"].binding.description == "By group"
            await pilot.press("c")
            assert isinstance(app.screen, CompareScreen)
            assert not TABS & footer_keys(app).keys()  # the tab keys belong to the main screen
            await pilot.press("escape")

            await app.open_run(ids["s_stop"], True)
            await pilot.pause()
            assert isinstance(app.active_pane(), RunView)
            assert pane_keys(app) == {"s": False, "r": True, "d": True, "w": True}
            assert GLOBAL <= footer_keys(app).keys()

            await pilot.press("1", "slash")  # typing in the filter: letters are text, not keys
            keys = footer_keys(app)
            assert "escape" in keys and not (PANE_KEYS | GLOBAL) - {"slash"} & keys.keys()

    asyncio.run(scenario())


def test_a_key_acts_only_in_its_own_pane(tmp_path):
    ws, ids = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("d", "c", "w")  # run keys on the Experiments tab
            assert app.screen is app.screen_stack[0] and app.active_tab == "experiments"
            await pilot.press("2", "l", "space")  # experiment keys on the Runs tab
            assert app.screen is app.screen_stack[0] and app.experiments_pane.marked == set()
            runs = app.query_one("#runs-table", DataTable)
            await highlight(pilot, runs, ids["s_stop"])
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmScreen)  # the pane asked, the App asks first
            await pilot.press("n")
            await pilot.press("1", "l")
            assert isinstance(app.screen, LaunchScreen)

    asyncio.run(scenario())


def test_a_click_on_a_tab_puts_its_keys_to_work(tmp_path):
    ws, ids = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.click("#tabs Tab#--content-tab-leaderboard")
            await wait_for(pilot, lambda: app.active_tab == "leaderboard", "the leaderboard tab")
            await wait_for(pilot, lambda: isinstance(app.focused.parent, LeaderboardPane), "the focus in the pane")
            await pilot.press("space")
            assert app.leaderboard_pane.marked == {ids["c_pre"]}

    asyncio.run(scenario())


def test_run_actions_reach_the_lifecycle_through_the_app(tmp_path, monkeypatch):
    """s / r / d post messages; the App routes them to its run supervisor (no process starts here)."""
    ws, ids = fake_workspace(tmp_path)
    asked: list[tuple] = []

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            monkeypatch.setattr(app.sup, "resume", lambda rid, **kw: asked.append(("resume", rid)) or 999)
            monkeypatch.setattr(app.sup, "delete", lambda rid: asked.append(("delete", rid)))
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            await highlight(pilot, runs, ids["s_crash"])
            await pilot.press("r")
            await wait_for(pilot, lambda: asked, "the resume request")
            assert asked == [("resume", ids["s_crash"])]
            await pilot.press("2")
            await highlight(pilot, runs, ids["c_base"])
            await pilot.press("d", "y")
            await wait_for(pilot, lambda: len(asked) == 2, "the delete request")
            assert asked[1] == ("delete", ids["c_base"])

    asyncio.run(scenario())
    store = Store(ws.home)
    try:
        assert store.run(ids["c_base"]) is not None  # the stand-in deleted nothing: the App only routed
    finally:
        store.close()



def test_a_tab_brought_to_the_front_stays_there(tmp_path):
    """Opening a run from the Experiments tab (as a launch does) and switching tabs with keys: the
    tab asked for comes to the front and the one left never comes back, not even for a moment
    (the hidden pane's focused table used to hand the focus to its own filter field, and the
    tabs follow the focus)."""
    from textual.widgets import TabbedContent

    ws, ids = fake_workspace(tmp_path)
    rid = ids["c_base"]
    fronts: list[str] = []

    def hook(message) -> None:
        # the hook sees a message once per node it bubbles through: count each change once
        if isinstance(message, TabbedContent.TabActivated) and (not fronts or fronts[-1] != message.pane.id):
            fronts.append(message.pane.id)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE, message_hook=hook) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("slash", "enter")  # the filter, then back to the table: the focus is there
            fronts.clear()
            for _ in range(3):  # as a launch does: the run opens from a dialog's answer
                async def answered(yes: bool | None) -> None:
                    await app.open_run(rid, True)

                app.push_screen(ConfirmScreen("Open?", rid, yes="Open"), answered)
                await pilot.pause()
                await pilot.press("y")
                await pilot.pause(0.3)
                await pilot.press("1")
                await pilot.pause(0.3)
            assert app.active_tab == "experiments"
        run_tab = f"run-{rid}"
        assert fronts == [run_tab, "experiments"] * 3, fronts

    asyncio.run(scenario())
