"""RunLifecycle needs nothing of the App but RunDisplay: here it runs on a real supervisor and
store (the fake workspace: no engine starts) and shows on a display that only records what it is
told. The Pilot tests (test_tui_panes, tests/integration/test_tui_app.py) drive it through the App."""
from __future__ import annotations

import asyncio

from cifar_tui.supervisor import Supervisor
from cifar_tui.tui.lifecycle import RunLifecycle
from cifar_tui.tui.runs_index import RunsIndex
from cifar_tui.tui.support import short_run

from tests.support.tui import fake_workspace


class RecordingDisplay:
    """A RunDisplay with no widgets: the calls it gets, in order."""

    def __init__(self, index: RunsIndex):
        self.index = index
        self.views: dict = {}
        self.calls: list[tuple] = []

    def notify(self, message: str, **kw) -> None:
        self.calls.append(("notify", message, kw.get("severity", "information")))

    def refresh_store(self, force: bool = False):
        self.calls.append(("refresh", force))
        return self.index.refresh(force)

    async def open_run(self, run_id: str, activate: bool = True):
        self.calls.append(("open_run", run_id, activate))

    async def close_run(self, run_id: str) -> None:
        self.calls.append(("close_run", run_id))

    async def open_study(self, study: str, activate: bool = True, *, planned=None) -> None:
        self.calls.append(("open_study", study, activate))

    def show_label(self, run_id: str) -> None:
        self.calls.append(("show_label", run_id))

    def show_status(self, run_id: str) -> None:
        self.calls.append(("show_status", run_id))

    def show_blocked(self, reason) -> None:
        self.calls.append(("show_blocked", reason))

    def marks_spent(self) -> None:
        self.calls.append(("marks_spent",))

    def notices(self) -> list[tuple[str, str]]:
        return [(c[1], c[2]) for c in self.calls if c[0] == "notify"]


class NoAutoStudies:
    def tick(self) -> bool:
        return False


def test_the_lifecycle_shows_its_outcomes_through_the_display_only(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    store = ws.store()
    sup = Supervisor(ws, max_parallel=1, shared_queue=True)
    try:
        index = RunsIndex(store)
        display = RecordingDisplay(index)
        life = RunLifecycle(sup, index, display, NoAutoStudies())
        display.refresh_store()

        async def scenario():
            await life.reattach()  # the crashed run is reported; nothing is live, so no tab opens
            assert display.notices() == [(f"1 run crashed (process gone): {short_run(ids['s_crash'])}. Resume from "
                                          "the Runs tab with r.", "warning")]
            assert not [c for c in display.calls if c[0] in ("open_run", "open_study")]

            display.calls.clear()
            assert life.stop_run(ids["c_base"]) is False  # completed: nothing to stop
            assert display.notices() == [(f"{short_run(ids['c_base'])} is not running (completed)", "warning")]

            assert life.delete_refusal(ids["c_base"]) is None
            display.calls.clear()
            await life.delete_run(ids["c_base"])
            assert ids["c_base"] not in index.runs and not (ws.home / ids["c_base"]).exists()
            assert display.calls[:2] == [("close_run", ids["c_base"]), ("refresh", True)]
            assert display.notices() == [(f"deleted {ids['c_base']}", "information")]

            item = sup.enqueue("resnet18_baseline", ["data.source=synthetic"])
            display.refresh_store(force=True)
            assert [q["id"] for q in index.queue] == [item]
            display.calls.clear()
            life.cancel_queue_item(item)
            assert index.queue == [] and display.notices() == [(f"removed #{item} from the queue", "information")]

            display.calls.clear()
            await life.tick()  # nothing queued: nothing waits, nothing starts
            assert ("show_blocked", None) in display.calls and not sup.children

        asyncio.run(scenario())
    finally:
        sup.close()
        store.close()
