"""Small things a new user ran into (Pilot, in process): Enter in the Runs tab opens a run, not the
retry form of a refused launch above it; a refused launch's tab says `not started`, not `failed`;
a key shown dimmed says why when pressed (`e` on a running run); run tabs shorten so the tab bar
keeps "1 Experiments" in view; synthetic results are not drawn in the error red."""
from __future__ import annotations

import asyncio
import json
import os
import re
import time

from textual.widgets import DataTable, Static, Tabs

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.screens import LaunchScreen
from engine.record.status import this_host

from tests.support.tui import T0, fake_run, fake_workspace, until_loaded
from tests.unit.test_tui_refused import REASON, RUN_ID, refused_item

SMALL = (80, 24)


def shown(widget: Static) -> str:
    return " ".join(str(widget.render()).split())


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def live_run(home) -> str:
    """A run dir whose engine is this test's process (alive, on this host, beating just now)."""
    t0 = time.time() - 30
    run_id = fake_run(home, "resnet18_baseline", "1e1e", epochs=4, done=1, status=None, t0=t0)
    events = home / run_id / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    lines[0].update(pid=os.getpid(), host=this_host())
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return run_id


def svg_colour(svg: str, text: str) -> str:
    fills = dict(re.findall(r"\.([\w-]+) \{ fill: (#[0-9a-f]{6})", svg))
    return fills[re.search(r'<text class="([\w-]+)"[^>]*>' + re.escape(text) + "</text>", svg).group(1)]


def test_runs_tab_enter_refused_tab_dimmed_keys_tab_bar_and_colours(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    refused_item(ws)
    home = tmp_path / "runs"
    live = live_run(home)
    tabs_runs = [fake_run(home, "resnet18_baseline", f"00a{k}", epochs=2, t0=T0 + 60 * k) for k in range(1, 5)]

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=(160, 45)) as pilot:
            await until_loaded(pilot, app)
            await pilot.pause(0.3)
            # synthetic results are not in the error red (Textual's Monokai gives magenta red's RGB)
            assert svg_colour(app.export_screenshot(), "39.24&#160;syn") != "#f4005f"
            await pilot.resize_terminal(*SMALL)

            # the Runs tab: the refused launch is listed first, the cursor is on the newest run; enter opens it
            await pilot.press("2")
            await pilot.pause(0.3)
            table = app.query_one("#runs-table", DataTable)
            assert table.ordered_rows[0].key.value.startswith("refused:")
            newest = app.index.newest_first()[0]
            assert app.runs_pane.highlighted() == newest
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert not isinstance(app.screen, LaunchScreen) and newest in app.views
            await pilot.press("2")
            await pilot.pause(0.1)
            table.move_cursor(row=0)
            await pilot.press("enter")  # on the refused launch: it says which keys act on it
            await pilot.pause(0.2)
            assert not isinstance(app.screen, LaunchScreen)
            assert any("l retries it" in n for n in notes(app))

            # its own tab says what its body says: not started (never "failed": nothing ran)
            view = await app.open_run(RUN_ID, True)
            view.refused(REASON, app.index.refused[0])
            await pilot.pause(0.2)
            assert shown(view.query_one("#run-status", Static)) == "✖ not started"
            assert "not started" in shown(view.query_one("#epoch-label", Static))

            # a key shown dimmed says why when pressed: e on a running run, s on a completed one
            view = await app.open_run(live, True)
            for _ in range(100):
                await pilot.pause(0.05)
                if view.loaded and view.status == "running":
                    break
            assert view.status == "running"
            await pilot.press("e")
            await pilot.pause(0.2)
            assert any(re.match(r"e evaluates a finished run's best checkpoint .*: \S+1e1e is running$", n)
                       for n in notes(app)), notes(app)
            await app.open_run(ids["c_base"], True)
            await pilot.pause(0.3)
            await pilot.press("s")
            await pilot.pause(0.2)
            assert any(re.match(r"s stops a live run: \S+00a1 is completed$", n) for n in notes(app)), notes(app)

            # four run tabs at 80 columns: they shorten, the bar does not scroll "1 Experiments" away
            for run_id in list(app.views):
                await app.run_tabs.close(run_id)
            for run_id in tabs_runs:
                await app.open_run(run_id, True)
                await pilot.pause(0.1)
            await pilot.pause(0.2)
            bar = app.query_one(Tabs)
            labels = {t.label.plain: t.region for t in bar.query("Tab")}
            assert labels["1 Experiments"].x == 0 and bar.scroll_x == 0, labels
            assert all(r.right <= SMALL[0] for r in labels.values()), labels
            assert "✔ 00a4" in labels  # the status and the run's own hex digits

    asyncio.run(scenario())
