"""SVG snapshots of the main screens (pytest-textual-snapshot), on a deterministic fake workspace,
plus assertions on what each screen shows. Update with: pytest tests/unit/test_tui_snapshots.py --snapshot-update"""
from __future__ import annotations

import difflib
import html
import re
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.screens import CompareScreen, LaunchScreen, StudiesScreen

from engine.config import list_config_paths
from tests.conftest import CONFIGS
from tests.support.tui import STUDY, TUNE, add_tune_study, fake_workspace, study_workspace, form_ready

SIZE = (160, 45)


@pytest.fixture
def snap_env(tmp_path, monkeypatch):
    """cwd = tmp (relative paths on screen), UTC clock formatting, no time probe (the launch form's
    estimate says unknown: the fixture's runs are another host's)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "off")
    monkeypatch.setenv("CIFAR_TUI_CACHE", str(tmp_path / "cache"))  # no run-time probe of this machine in a picture
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield tmp_path
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.fixture
def snap_ws(snap_env):
    """The deterministic fake workspace."""
    return fake_workspace(snap_env)


@pytest.fixture
def snap_study(snap_env):
    """The fake workspace plus a sweep study of two groups (three seeds each)."""
    return study_workspace(snap_env)


SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_tui_snapshots"


def make_app(ws) -> CifarTUI:
    app = CifarTUI(ws, max_parallel=1)
    notify = app.notify

    def lasting(*args, **kwargs):  # a toast stays on screen until the shot, however slowly the machine gets there
        return notify(*args, **{**kwargs, "timeout": 3600})

    app.notify = lasting  # type: ignore[method-assign]
    return app


def svg_lines(svg: str) -> list[str]:
    """The text of a Textual SVG screenshot, one string per terminal row, without spaces."""
    rows: dict[float, list[str]] = {}
    for m in re.finditer(r'<text[^>]*\by="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(m.group(1)), []).append(html.unescape(m.group(2)).replace("\xa0", " "))
    # spaces dropped: the two SVG writers split runs of text differently
    return ["".join(rows[y]).replace(" ", "") for y in sorted(rows)]


CELL_W, CELL_H = 12.2, 24.4  # Textual's SVG: the size of one terminal cell


def svg_cells(svg: str) -> dict[tuple[int, int], tuple[str, str, str]]:
    """What a Textual SVG screenshot shows, cell by cell: (row, column) -> (background, text style, char).
    Two renders of one screen may split it into runs (rects, text pieces) differently (which parts of
    the screen were redrawn last decides it); what they show is the same."""
    styles = dict(re.findall(r"\.terminal(?:-\d+)?-(r\d+) \{ ([^}]*)\}", svg))
    cells: dict[tuple[int, int], list[str]] = {}
    for m in re.finditer(r'<rect fill="([^"]+)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"', svg):
        fill, x, y, width = m.group(1), *map(float, m.groups()[1:])
        row = round((y - 1.5) / CELL_H)
        for col in range(round(x / CELL_W), round((x + width) / CELL_W)):
            cells.setdefault((row, col), ["", "", " "])[0] = fill
    for m in re.finditer(r'<text class="terminal(?:-\d+)?-(r\d+)" x="([\d.]+)" y="([\d.]+)" '
                         r'textLength="([\d.]+)"[^>]*>(.*?)</text>', svg):
        style, (x, y, length), text = styles.get(m.group(1), ""), map(float, m.groups()[1:4]), html.unescape(m.group(5))
        row, col, width = round((y - 20) / CELL_H), round(x / CELL_W), round(length / CELL_W)
        pieces = list(text) if len(text) == width else [text]  # a wide character: the whole piece at its start
        for i, char in enumerate(pieces):
            cell = cells.setdefault((row, col + i), ["", "", " "])
            cell[1:] = [style if char.strip("\xa0 ") else "", char.replace("\xa0", " ")]
    return {k: tuple(v) for k, v in cells.items()}


def check_snapshot(snap_compare, app, name: str, before, size: tuple[int, int] = SIZE) -> None:
    """snap_compare, and on a mismatch the rows of text that differ (CI keeps no HTML report)."""
    shot = {}

    async def before_and_capture(pilot):
        await before(pilot)
        for field in app.screen.query(Input):  # a blinking cursor is shown or not by the clock: shown
            field.cursor_blink = False
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        shot["svg"] = app.export_screenshot()

    if snap_compare(app, terminal_size=size, run_before=before_and_capture):
        return
    saved = SNAPSHOTS / f"{name}.svg"
    if saved.exists() and shot.get("svg") and svg_cells(saved.read_text()) == svg_cells(shot["svg"]):
        return  # the same screen, cell by cell, in runs split otherwise
    expected = svg_lines(saved.read_text()) if saved.exists() else []
    diff = "\n".join(difflib.unified_diff(expected, svg_lines(shot.get("svg", "")), "saved", "now", lineterm=""))
    pytest.fail(f"the {name} screen differs from its snapshot:\n"
                f"{diff or '(the same text: spacing, colours or styles differ)'}")


async def settle(pilot, cond=lambda: True, timeout: float = 60.0) -> None:  # polls: a busy machine waits longer
    deadline = time.monotonic() + timeout
    while not (cond() and pilot.app.experiments_pane.loaded) and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert cond() and pilot.app.experiments_pane.loaded
    await pilot.pause(0.3)


def test_snapshot_experiments(snap_ws, snap_compare):
    ws, _ = snap_ws
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await settle(pilot)
        table = app.query_one("#exp-table", DataTable)
        seen["rows"] = table.row_count
        seen["yaml"] = app.experiments_pane.yaml_text
        seen["counts"] = str(app.query_one("#counts", Static).render())

    check_snapshot(snap_compare, app, "test_snapshot_experiments", before)
    assert seen["rows"] >= 11
    first = list_config_paths(CONFIGS)[0].stem  # the first row is selected
    assert f"name: {first}" in seen["yaml"]
    assert "0 running" in seen["counts"] and "0 queued" in seen["counts"]


def test_snapshot_runs(snap_ws, snap_compare):
    ws, ids = snap_ws
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await pilot.press("2")
        await settle(pilot)
        table = app.query_one("#runs-table", DataTable)
        seen["status"] = {k.value: table.get_row(k)[0].plain for k in table.rows}

    check_snapshot(snap_compare, app, "test_snapshot_runs", before)
    assert "crashed" in seen["status"][ids["s_crash"]]
    assert "stopped" in seen["status"][ids["s_stop"]]
    assert "completed" in seen["status"][ids["c_base"]]


def test_snapshot_run_view_finished(snap_ws, snap_compare):
    ws, ids = snap_ws
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        view = await app.open_run(ids["c_pre"], True)
        await settle(pilot, lambda: view.loaded)
        table = view.query_one("#epochs", DataTable)
        seen["rows"] = table.row_count
        seen["last"] = [c.plain if hasattr(c, "plain") else c for c in table.get_row("20")]
        seen["status"] = str(view.query_one("#run-status", Static).render())
        seen["log"] = view.query_one("#run-log").lines[-1].text.rstrip()

    check_snapshot(snap_compare, app, "test_snapshot_run_view_finished", before)
    assert seen["rows"] == 20
    assert seen["last"][0] == "20" and seen["last"][4].startswith("55.53")
    assert "completed" in seen["status"] and "best 55.53% @ 20" in seen["status"]
    assert seen["log"] == "completed"


def test_snapshot_leaderboard(snap_ws, snap_compare):
    ws, ids = snap_ws
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await pilot.press("3")
        await settle(pilot)
        table = app.query_one("#lb-table", DataTable)
        seen["order"] = [r.key.value for r in table.ordered_rows]  # as listed
        seen["note"] = str(app.query_one("#lb-note", Static).render())

    check_snapshot(snap_compare, app, "test_snapshot_leaderboard", before)
    assert seen["order"][:2] == [ids["c_pre"], ids["c_base"]]
    assert "3 synthetic" in seen["note"] and "2 CIFAR-100" in seen["note"]


def test_snapshot_compare(snap_ws, snap_compare):
    ws, ids = snap_ws
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("space", "down", "space", "c")
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.provenance is not None)
        seen["diff"] = [k for k, _ in app.screen.diff_rows]
        seen["top5"] = [i.summary[4] for i in app.screen.items]

    check_snapshot(snap_compare, app, "test_snapshot_compare", before)
    assert seen["diff"] == ["model.pretrained", "name", "reference.accuracy"]
    assert seen["top5"] == ["87.74", "66.55"]


def test_snapshot_launch_form_error(snap_ws, snap_compare):
    ws, _ = snap_ws
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await settle(pilot)
        await pilot.press("down", "l")
        await settle(pilot, lambda: form_ready(app))
        form = app.screen
        form.query_one("#f-set", Input).value = "train.epochs=0"
        await pilot.press("ctrl+s")
        # the shot once the plan timer of the last change has run (a busy machine may not have run it yet)
        await settle(pilot, lambda: form._plan_timer is None or form._plan_timer._task is None
                     or form._plan_timer._task.done())
        seen["error"] = str(form.query_one("#form-error", Static).render())
        seen["screen"] = app.screen

    check_snapshot(snap_compare, app, "test_snapshot_launch_form_error", before)
    assert isinstance(seen["screen"], LaunchScreen)
    assert "train.epochs" in seen["error"] and "greater than 0" in seen["error"]


def test_snapshot_leaderboard_groups(snap_study, snap_compare):
    ws, _, _ = snap_study
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot, lambda: isinstance(app.screen, StudiesScreen))
        await pilot.press("g")  # the study's groups
        await settle(pilot, lambda: app.leaderboard_pane.study == STUDY and app.leaderboard_pane.by_group)
        table = app.query_one("#lb-groups", DataTable)
        seen["rows"] = [[c.plain if hasattr(c, "plain") else str(c) for c in table.get_row(r.key)][4:7]
                        for r in table.ordered_rows]

    check_snapshot(snap_compare, app, "test_snapshot_leaderboard_groups", before)
    assert seen["rows"] == [["3", "47.46 ± 2.02", "[42.44, 52.48]"], ["3", "42.41 ± 2.02", "[37.39, 47.43]"]]


def test_snapshot_compare_groups(snap_study, snap_compare):
    ws, _, _ = snap_study
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await pilot.press("3")
        await settle(pilot)
        app.leaderboard_pane.show_study(STUDY, by_group=True)
        await settle(pilot, lambda: app.query_one("#lb-groups", DataTable).row_count == 2)
        await pilot.press("space", "down", "space", "c")
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.provenance is not None)
        seen["provenance"] = [k for k, _ in app.screen.provenance]

    check_snapshot(snap_compare, app, "test_snapshot_compare_groups", before)
    assert seen["provenance"][:2] == ["git_commit", "host"]


def test_snapshot_launch_form_plan(snap_ws, snap_compare):
    ws, _ = snap_ws
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await settle(pilot)
        await pilot.press("down", "l")
        await settle(pilot, lambda: form_ready(app))
        form = app.screen
        for field in form.query(Input):  # the plan takes a varying time: no cursor blink phase in the picture
            field.cursor_blink = False
        form.query_one("#f-set", Input).value = "optim.lr=1e-3,3e-3 optim.weight_decay=1e-4,1e-3"
        form.query_one("#f-seeds", Input).value = "2"
        form.query_one("#f-study", Input).value = "grid"
        await settle(pilot, lambda: form.shown_plan is not None)
        seen["plan"] = str(form.query_one("#plan", Static).render())

    check_snapshot(snap_compare, app, "test_snapshot_launch_form_plan", before)
    assert "8 runs (2 optim.lr x 2 optim.weight_decay x 2 seeds), 4 groups" in seen["plan"]


def test_snapshot_studies(snap_study, snap_compare):
    ws, _, _ = snap_study
    add_tune_study(ws)
    app = make_app(ws)

    async def before(pilot):
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot, lambda: isinstance(app.screen, StudiesScreen) and TUNE in app.screen.trials)

    check_snapshot(snap_compare, app, "test_snapshot_studies", before)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_snapshot_study_tab(snap_study, snap_compare, size):
    """A study's own tab: groups x seeds, the means, the second group against the first (b)."""
    ws, _, _ = snap_study
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await settle(pilot)
        await app.study_tabs.open(STUDY, True)
        pane = app.study_tabs.views[STUDY]
        table = pane.query_one("#study-grid", DataTable)
        await settle(pilot, lambda: table.row_count == 2)
        await pilot.press("b")  # the first group is the baseline
        await settle(pilot, lambda: pane.grid is not None and pane.grid.baseline is not None)
        table.move_cursor(row=1, column=2)  # a run's cell
        app.clear_notifications()
        await pilot.pause(0.1)
        seen["head"] = str(pane.query_one("#study-counts", Static).render())

    check_snapshot(snap_compare, app, f"test_snapshot_study_tab[{size[0]}x{size[1]}]", before, size=size)
    assert "6 runs" in seen["head"] and "vs lr=1e-3" in seen["head"]


# ---------------------------------------------------------------- every tab and the form at 80x24 and 200x50
SIZES = {"80x24": (80, 24), "200x50": (200, 50)}


async def show_screen(pilot, app, ids, screen: str) -> None:
    if screen == "experiments":
        await settle(pilot)
    elif screen == "runs":
        await pilot.press("2")
        await settle(pilot)
    elif screen == "leaderboard":
        await pilot.press("3")
        await settle(pilot)
    elif screen == "run_view":
        view = await app.open_run(ids["c_pre"], True)
        await settle(pilot, lambda: view.loaded)
    elif screen == "launch_form":
        await settle(pilot)
        await pilot.press("down", "l")
        await settle(pilot, lambda: form_ready(app))
        for field in app.screen.query(Input):
            field.cursor_blink = False
    app.clear_notifications()  # the "1 run crashed" toast would hide a corner of every picture
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", ["experiments", "runs", "run_view", "leaderboard", "launch_form"])
def test_snapshot_at_size(snap_ws, snap_compare, screen, size):
    """Each tab, a run's view and the launch form at 80x24 (the default of many terminals and of tmux
    panes) and at 200x50: the columns that matter stay, the charts keep their legend, the form scrolls."""
    ws, ids = snap_ws
    app = make_app(ws)
    width, height = SIZES[size]
    seen = {}

    async def before(pilot):
        await show_screen(pilot, app, ids, screen)
        if screen in ("experiments", "runs", "leaderboard"):
            table = app.query_one({"experiments": "#exp-table", "runs": "#runs-table", "leaderboard": "#lb-table"}[screen],
                                  DataTable)
            seen["columns"] = [c.key.value for c in table.ordered_columns]
            seen["table_fits"] = table.virtual_size.width <= table.content_region.width
        if screen == "leaderboard":
            seen["note"] = app.query_one("#lb-note", Static).render()
        if screen == "run_view":
            view = app.views[ids["c_pre"]]
            seen["charts"] = [str(p.border_title) for p in view.query(".chart") if p.display]
        if screen == "launch_form":
            form = app.screen
            go = form.query_one("#go")
            seen["launch_in_view"] = form.query_one("#dialog").region.contains_region(go.region)
            seen["hint"] = str(form.query_one("#dialog").border_subtitle)

    check_snapshot(snap_compare, app, f"test_snapshot_at_size[{screen}-{size}]", before, size=(width, height))
    if "columns" in seen:
        assert seen["table_fits"], f"the {screen} table is wider than the terminal"
        must = {"experiments": ["name"], "runs": ["status", "run_id"], "leaderboard": ["rank", "config", "best_acc"]}
        assert set(must[screen]) <= set(seen["columns"])
        if size == "200x50":
            assert len(seen["columns"]) == {"experiments": 8, "runs": 9, "leaderboard": 13}[screen]
    if screen == "leaderboard":  # the note names the sort column by its header's words, on one line
        note = seen["note"].plain
        assert "by best acc ▼" in note and "best_acc" not in note and "\n" not in note
    if screen == "run_view":
        assert seen["charts"] and all("train" in t and "test" in t for t in seen["charts"])  # the legend stays
    if screen == "launch_form":  # the Launch button is in view, or the form says there is more below
        assert seen["launch_in_view"] or "more below" in seen["hint"]


def test_snapshot_refused_launch(snap_ws, snap_compare):
    """At 80x24: a launch refused before its run started, first in the Runs tab with its reason in full."""
    from tests.unit.test_tui_refused import REASON, refused_item

    ws, _ = snap_ws
    refused_item(ws)
    app = make_app(ws)
    seen = {}

    async def before(pilot):
        await pilot.press("2")
        await settle(pilot)
        app.query_one("#runs-table", DataTable).move_cursor(row=0)
        await settle(pilot, lambda: "did not start" in str(app.query_one("#runs-hint", Static).render()))
        app.clear_notifications()
        await pilot.pause(0.3)
        seen["hint"] = " ".join(str(app.query_one("#runs-hint", Static).render()).split())

    check_snapshot(snap_compare, app, "test_snapshot_refused_launch", before, size=SIZES["80x24"])
    assert REASON in seen["hint"]


def test_svg_cells_sees_a_changed_char_or_colour_but_not_how_runs_are_split():
    svg = (SNAPSHOTS / "test_snapshot_launch_form_error.svg").read_text()
    cells = svg_cells(svg)
    assert len(cells) == SIZE[0] * SIZE[1]
    # the first text run split in two at its second cell: the same screen
    m = re.search(r'<text class="(terminal(?:-\d+)?-r\d+)" x="([\d.]+)" y="([\d.]+)" textLength="([\d.]+)"'
                  r'( clip-path="[^"]*")>([^<&]{2,})</text>', svg)
    cls, x, y, length, clip, text = m.groups()
    split = (f'<text class="{cls}" x="{x}" y="{y}" textLength="{CELL_W}"{clip}>{text[0]}</text>'
             f'<text class="{cls}" x="{float(x) + CELL_W:g}" y="{y}" textLength="{float(length) - CELL_W:g}"{clip}>'
             f'{text[1:]}</text>')
    assert svg_cells(svg.replace(m.group(0), split, 1)) == cells
    assert svg_cells(svg.replace(m.group(0), m.group(0).replace(text, "X" + text[1:]), 1)) != cells
    cell = re.search(r'<rect fill="#[0-9a-f]{6}"( x="[\d.]+" y="25.9")', svg)  # one on the screen's second row
    assert svg_cells(svg.replace(cell.group(0), f'<rect fill="#000001"{cell.group(1)}', 1)) != cells
