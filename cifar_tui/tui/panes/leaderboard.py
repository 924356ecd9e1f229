"""The Leaderboard tab: every run with a result (or, with `g`, one row per group: n, mean ± std,
95% interval, the reference it is held against and whether it lies inside), CIFAR-100 ranked
apart from synthetic; optionally only one study's runs; marks, sorting by any column, compare
(runs, or groups: mean curves with a band); s / r / d on the highlighted run; `b` makes the
highlighted group the baseline: every other group then shows its difference to it (95% interval,
p-value, verdict, seeds to resolve it). Groups are named by what sets them apart (cifar_tui.names);
what they share is said once above them. Redrawn from the store's changes only while in front,
and only the cells that changed."""
from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from ...table_rows import leaderboard_rows
from ...studies import group_stats, groups_title, vs_baseline
from ..messages import CompareGroups, CompareRuns, OpenRun, ShowStudies
from ..runs_index import Changes, RunsIndex
from ..widgets.focus import focus_now
from ..widgets.table_sync import Column, SyncedTable, TableSync
from ..widgets.text import show
from .leaderboard_rows import (GROUP_COLUMNS, GROUP_DESC_FIRST, GROUP_VS_COLUMNS, LB_COLUMNS, LB_DESC_FIRST,  # noqa: F401
                               group_key, group_row_cells, group_values, lb_cells, lb_values, sort_order)
from .run_actions import RUN_BINDINGS, RunActions

@dataclass
class Board:
    """One of the two tables (runs, groups): its columns, sort and what it shows."""

    table: DataTable
    columns: tuple
    desc_first: set
    sort: tuple[str, bool]
    sync: TableSync | None = None
    stale: bool = True

    def header(self, column: Column) -> str:
        """A column's header, with the sort arrow on the sorted one."""
        col, desc = self.sort
        return f"{column.label} {'▼' if desc else '▲'}" if column.key == col else column.label

    def label(self, key: str) -> str:
        """The words of a column's header (what the hint line calls it)."""
        return next((c.label for c in self.columns if c.key == key), key)


class LeaderboardPane(RunActions, Vertical):
    BINDINGS = [
        Binding("space", "mark", "Mark"),
        *RUN_BINDINGS,
        Binding("c", "compare", "Compare"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse_sort", "Reverse", show=False),
        Binding("g", "by_group", "By group"),   # one of the two `g` is shown: the mode it switches to
        Binding("g", "by_run", "By run"),
        Binding("b", "baseline", "Baseline"),
        Binding("f", "studies", "Studies"),
        Binding("escape", "all_runs", "All runs"),
    ]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.marked: set[str] = set()          # run ids
        self.marked_groups: set[str] = set()   # group keys
        self.by_group = False
        self.study: str | None = None          # only this study's runs (None: every run)
        self.rows: list[dict] = []             # leaderboard_rows, ranked (runs)
        self.groups: list[dict] = []           # group_stats rows, ranked (groups)
        self._values: dict[str, tuple] = {}
        self._group_values: dict[str, tuple] = {}
        self.title = ""                        # what every listed group shares
        self.baseline: str | None = None       # the group the others are held against (its full key)
        self._index: RunsIndex | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="lb-note", classes="hint")
        yield SyncedTable(id="lb-table", cursor_type="row", zebra_stripes=True)
        yield SyncedTable(id="lb-groups", cursor_type="row", zebra_stripes=True, classes="-hidden")

    def on_mount(self) -> None:
        self.runs_board = Board(self.query_one("#lb-table", DataTable), LB_COLUMNS, LB_DESC_FIRST, ("best_acc", True))
        self.groups_board = Board(self.query_one("#lb-groups", DataTable), GROUP_COLUMNS, GROUP_DESC_FIRST,
                                  ("mean_acc", True))
        for board, render in ((self.runs_board, lb_cells), (self.groups_board, group_row_cells)):
            board.sync = TableSync(board.table, render, board.columns, header=board.header)
        self.table = self.runs_board.table
        self.sync = self.runs_board.sync

    @property
    def board(self) -> Board:
        return self.groups_board if self.by_group else self.runs_board

    @property
    def sort(self) -> tuple[str, bool]:
        return self.board.sort

    def focus_main(self) -> None:
        focus_now(self.board.table)

    @property
    def in_front(self) -> bool:
        return self.app.active_tab == "leaderboard"

    # ------------------------------------------------------------------ data
    def runs_changed(self, index: RunsIndex, changes: Changes) -> None:
        self._index = index
        runs = self.runs_board
        if not runs.stale:
            # a run without a result that is not listed (a live run before its first epoch) changes nothing
            runs.stale = bool(changes.removed & self._values.keys()) or any(
                rid in self._values or index.runs[rid]["best_acc"] is not None for rid in changes.runs)
        # a group also counts its unfinished runs: any change of a run may change it
        self.groups_board.stale = self.groups_board.stale or bool(changes.runs or changes.removed)
        if self.in_front:
            self.redraw()

    def redraw(self, force: bool = False) -> None:
        """Bring the table in view up to date when something it lists changed since the last redraw."""
        board = self.board
        if not ((board.stale or force) and self._index is not None):
            return
        board.stale = False
        if self.by_group:
            self._redraw_groups()
        else:
            self._redraw_runs()
        self._note()

    def _redraw_runs(self) -> None:
        listed = [r for r in self._index.leaderboard() if self.study is None or r.get("study") == self.study]
        self.rows = leaderboard_rows(listed)
        top5 = self._index.best_top5([r["run_id"] for r in self.rows])
        for r in self.rows:
            r["top5"] = top5.get(r["run_id"])
        self._values = {r["run_id"]: lb_values(r, r["run_id"] in self.marked) for r in self.rows}
        self.marked &= self._values.keys()
        self.runs_board.sync.show(sort_order(self.rows, *self.runs_board.sort), self._values)

    def _redraw_groups(self) -> None:
        ranks: dict[str, int] = {}
        self.groups = []
        stats = group_stats(self._index.group_rows(self.study))
        self.title = groups_title(stats)  # said once in the note, not on every row
        if self.baseline is not None and not any(g["group"] == self.baseline for g in stats):
            self._set_baseline(None)  # its runs are gone (or another study is listed)
        if self.baseline is not None:
            vs_baseline(stats, self.baseline)
        for g in stats:
            ranks[g["data"]] = ranks.get(g["data"], 0) + 1
            vs = g.get("vs") or {}
            self.groups.append(dict(g, key=group_key(g), rank=ranks[g["data"]], ci_low=g["ci95"][0] if g["ci95"] else None,
                                    settings=g["label"], vs_diff=vs.get("diff"), vs_seeds=vs.get("seeds"),
                                    vs_p=vs.get("p"), vs_verdict=vs.get("verdict")))
        self._group_values = {g["key"]: self._group_row(g) for g in self.groups}
        columns = GROUP_VS_COLUMNS if self.baseline is not None else GROUP_COLUMNS
        if self.groups_board.columns is not columns:  # the vs columns come and go with the baseline
            self.groups_board.columns = columns
            self.groups_board.sync.reset()
            self.groups_board.sync.set_columns(columns)
        self.marked_groups &= self._group_values.keys()
        col, desc = self.groups_board.sort
        self.groups_board.sync.show(sort_order(self.groups, "ci_low" if col == "ci95" else col, desc, id_key="key"),
                                    self._group_values)

    def _note(self) -> None:
        note = Text()
        if self.study:
            note.append(f"study {self.study}", style="bold yellow")
            note.append(" (esc: all) · ", style="dim")
        col, desc = self.sort
        if self.by_group:
            n_syn = len([g for g in self.groups if g["data"] != "cifar100"])
            if not self.groups:
                note.append("No groups yet: a group is a config plus its overrides, seed left out.", style="dim")
            else:
                if len(self.groups) > n_syn:
                    note.append(f"{len(self.groups) - n_syn} CIFAR-100 groups", style="bold cyan")
                    note.append(" · ")
                if n_syn:
                    note.append(f"{n_syn} synthetic (S#)", style="magenta")
                    note.append(" · ")
                note.append("best acc of completed runs: mean ± std, t 95% interval", style="dim")
                if self.marked_groups:
                    note.append(f" · {len(self.marked_groups)} marked", style="bold magenta")
                if self.baseline is not None:
                    base = next((g["label"] for g in self.groups if g["group"] == self.baseline), self.baseline)
                    note.append(" · vs ", style="dim")
                    note.append(base, style="bold yellow")
                    note.append(" (b: none)", style="dim")
                if self.title:
                    note.append(" · every group: ", style="dim")
                    note.append(self.title)
            self._show_note(note)
            return
        n_syn = len([r for r in self.rows if r["data"] != "cifar100"])
        if not self.rows:
            note.append("No results yet. Finished epochs of every run appear here, best accuracy first.", style="dim")
        else:
            note.append(f"{len(self.rows) - n_syn} CIFAR-100", style="bold cyan")
            note.append(" · ")
            note.append(f"{n_syn} synthetic (S#, ranked apart)", style="magenta")
            note.append(f" · by {self.board.label(col)} {'▼' if desc else '▲'}", style="dim")
            if self.marked:
                note.append(f" · {len(self.marked)} marked", style="bold magenta")
                if len(self.marked) < 2:
                    note.append(": mark another to compare (c)", style="dim")
        self._show_note(note)

    def _show_note(self, note: Text) -> None:
        note.no_wrap, note.overflow = True, "ellipsis"  # one line; the footer has the keys
        show(self.query_one("#lb-note", Static), note)

    # ------------------------------------------------------------------ modes and studies
    def set_mode(self, by_group: bool) -> None:
        if by_group == self.by_group:
            return
        had_focus = self.board.table.has_focus
        self.by_group = by_group
        self.runs_board.table.set_class(by_group, "-hidden")
        self.groups_board.table.set_class(not by_group, "-hidden")
        self.redraw(force=True)
        if had_focus or self.in_front:
            self.board.table.focus()
        self.app.update_bindings()

    def show_study(self, study: str | None, by_group: bool | None = None) -> None:
        """Only this study's runs (None: every run); by_group None keeps the mode."""
        if study != self.study:
            for board in (self.runs_board, self.groups_board):  # the columns size afresh to what is listed
                board.sync.reset()
        self.study = study
        self.runs_board.stale = self.groups_board.stale = True
        if by_group is not None and by_group != self.by_group:
            self.set_mode(by_group)
        else:
            self.redraw(force=True)
        self.app.update_bindings()

    def action_by_group(self) -> None:
        self.set_mode(True)

    def action_by_run(self) -> None:
        self.set_mode(False)

    def action_studies(self) -> None:
        self.post_message(ShowStudies())

    def action_all_runs(self) -> None:
        self.show_study(None)

    # ------------------------------------------------------------------ sorting
    def set_sort(self, col: str, desc: bool | None = None) -> None:
        board = self.board
        if col == "mark":
            return
        if desc is None:
            same = board.sort[0] == col
            desc = (not board.sort[1]) if same else (col in board.desc_first)
        before = board.sort[0]
        board.sort = (col, desc)
        self._relabel(board, {before, col})
        self.redraw(force=True)

    def _relabel(self, board: Board, keys: set[str]) -> None:
        """Put the sort arrow on the sorted column's header."""
        board.sync.relabel(keys)

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self.set_sort(event.column_key.value)

    def action_sort(self) -> None:
        board = self.board
        keys = [k for k in board.sync.visible if k != "mark"]  # the columns in view, left to right
        i = keys.index(board.sort[0]) if board.sort[0] in keys else -1
        nxt = keys[(i + 1) % len(keys)]
        self.set_sort(nxt, nxt in board.desc_first)

    def action_reverse_sort(self) -> None:
        self.set_sort(self.sort[0], not self.sort[1])

    # ------------------------------------------------------------------ marks, compare, keys
    def current_run(self) -> str | None:
        return None if self.by_group else self.runs_board.sync.cursor_key()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "by_group":
            return not self.by_group
        if action == "by_run":
            return self.by_group
        if action == "all_runs":
            return self.study is not None
        if action in ("stop", "resume", "delete") and self.by_group:
            return False  # a group row is not a run
        if action == "baseline":
            return self.by_group
        if action == "compare":
            return True if len(self.marked_groups if self.by_group else self.marked) >= 2 else None
        return super().check_action(action, parameters)

    def action_mark(self) -> None:
        board = self.board
        key = board.sync.cursor_key()
        if key is None:
            return
        if self.by_group:
            self.marked_groups.symmetric_difference_update({key})
            g = next(g for g in self.groups if g["key"] == key)
            self._group_values[key] = self._group_row(g)
            board.sync.update({key: self._group_values[key]})
        else:
            self.marked.symmetric_difference_update({key})
            self._values[key] = lb_values(next(r for r in self.rows if r["run_id"] == key), key in self.marked)
            board.sync.update({key: self._values[key]})
        self._note()  # the cursor stays on the row: the next key acts on what the user sees
        self.app.update_bindings()

    def _group_row(self, g: dict) -> tuple:
        return group_values(g, g["rank"], g["key"] in self.marked_groups, with_vs=self.baseline is not None)

    def _set_baseline(self, group: str | None) -> None:
        """Hold every group against `group` (None: against none); the table gets the vs columns."""
        self.baseline = group
        self.groups_board.stale = True

    def action_baseline(self) -> None:
        """The highlighted group becomes the baseline (again on it: no baseline)."""
        key = self.groups_board.sync.cursor_key()
        g = next((g for g in self.groups if g["key"] == key), None)
        if g is None:
            return
        self._set_baseline(None if self.baseline == g["group"] else g["group"])
        self.redraw(force=True)
        self.app.update_bindings()

    def action_compare(self) -> None:
        if self.by_group:
            chosen = [g for g in self.groups if g["key"] in self.marked_groups]
            if len(chosen) < 2:
                self.notify("Mark two or more groups with space, then press c", severity="warning")
                return
            self.post_message(CompareGroups(chosen))
            return
        ids = [r["run_id"] for r in self.rows if r["run_id"] in self.marked]
        if len(ids) < 2:
            self.notify("Mark two or more runs with space, then press c", severity="warning")
            return
        self.post_message(CompareRuns(ids))

    @on(DataTable.RowSelected, "#lb-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(OpenRun(event.row_key.value))

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.app.update_bindings()
