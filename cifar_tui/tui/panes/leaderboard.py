"""The Leaderboard tab: every run with a result, CIFAR-100 ranked apart from synthetic; marks,
sorting by any column, compare; s / r / d on the highlighted run. Redrawn from the store's
changes only while in front, and only the cells that changed."""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from ...report import fmt_acc, leaderboard_rows
from ..messages import CompareRuns, OpenRun
from ..runs_index import Changes, RunsIndex
from ..widgets.table_sync import TableSync
from ..widgets.text import cell, show, status_text
from .run_actions import RUN_BINDINGS, RunActions

LB_COLUMNS = (("mark", " "), ("rank", "#"), ("config", "config"), ("data", "data"), ("best_acc", "best acc"),
              ("reference", "seed"), ("diff", "diff"), ("best_epoch", "best ep"), ("epochs", "epochs"),
              ("wall_s", "wall"), ("status", "status"), ("run_id", "run id"))
LB_DESC_FIRST = {"best_acc", "reference", "diff", "wall_s", "best_epoch", "epochs"}


def lb_values(r: dict, marked: bool) -> tuple:
    return (marked, (r["rank"], r["data"] != "cifar100"), r["config"], r["data"], r["best_acc"], r["reference"],
            r["diff"], r["best_epoch"], r["epochs"], r["wall"], r["status"] or "?", r["run_id"])


def lb_cells(_key: str, values: tuple) -> list:
    marked, (rank, syn), config, data, best_acc, reference, diff, best_epoch, epochs, wall, status, run_id = values
    return [
        Text("●", style="bold magenta") if marked else Text(" "),
        Text(f"S{rank}" if syn else str(rank), style="magenta" if syn else "bold"),
        cell(config),
        Text("synthetic", style="italic magenta") if syn else Text(data, style="cyan"),
        Text(fmt_acc(best_acc), style="bold"),
        cell(fmt_acc(reference)),
        Text("-" if diff is None else f"{diff:+.2f}", style="" if diff is None else ("green" if diff >= 0 else "red")),
        cell(str(best_epoch or "-")), cell(epochs), cell(wall), status_text(status), cell(run_id),
    ]


def sort_order(rows: list[dict], col: str, desc: bool) -> list[str]:
    """Run ids sorted by `col` within each group (CIFAR-100 first, then synthetic); rows without
    a value for the column go last in their group."""

    def key(r: dict):
        v = r.get(col)
        if col == "epochs":
            v = int(str(v).split("/")[0] or 0)
        return v.lower() if isinstance(v, str) else v

    out: list[str] = []
    for synthetic in (False, True):
        group = [r for r in rows if (r["data"] != "cifar100") == synthetic]
        present = [r for r in group if r.get(col) is not None]
        present.sort(key=key, reverse=desc)
        out += [r["run_id"] for r in present] + [r["run_id"] for r in group if r.get(col) is None]
    return out


class LeaderboardPane(RunActions, Vertical):
    BINDINGS = [
        Binding("space", "mark", "Mark"),
        *RUN_BINDINGS,
        Binding("c", "compare", "Compare"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse_sort", "Reverse", show=False),
    ]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.marked: set[str] = set()          # run ids
        self.sort: tuple[str, bool] = ("best_acc", True)
        self.rows: list[dict] = []             # leaderboard_rows, ranked
        self._values: dict[str, tuple] = {}
        self._index: RunsIndex | None = None
        self._stale = True

    def compose(self) -> ComposeResult:
        yield Static("", id="lb-note", classes="hint")
        yield DataTable(id="lb-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.table = self.query_one("#lb-table", DataTable)
        for key, label in LB_COLUMNS:
            self.table.add_column(self._label(key, label), key=key)
        self.sync = TableSync(self.table, lb_cells, id_column="run_id")

    def focus_main(self) -> None:
        self.table.focus()

    @property
    def in_front(self) -> bool:
        return self.app.active_tab == "leaderboard"

    def _label(self, key: str, label: str) -> str:
        col, desc = self.sort
        return f"{label} {'▼' if desc else '▲'}" if key == col else label

    # ------------------------------------------------------------------ data
    def runs_changed(self, index: RunsIndex, changes: Changes) -> None:
        self._index = index
        if not self._stale:
            # a run without a result that is not listed (a live run before its first epoch) changes nothing
            self._stale = bool(changes.removed & self._values.keys()) or any(
                rid in self._values or index.runs[rid]["best_acc"] is not None for rid in changes.runs)
        if self.in_front:
            self.redraw()

    def redraw(self, force: bool = False) -> None:
        """Bring the table up to date when something it lists changed since the last redraw."""
        if not ((self._stale or force) and self._index is not None):
            return
        self._stale = False
        self.rows = leaderboard_rows(self._index.leaderboard())
        self._values = {r["run_id"]: lb_values(r, r["run_id"] in self.marked) for r in self.rows}
        self.marked &= self._values.keys()
        self.sync.show(sort_order(self.rows, *self.sort), self._values)
        self._note()

    def _note(self) -> None:
        n_syn = len([r for r in self.rows if r["data"] != "cifar100"])
        col, desc = self.sort
        note = Text()
        if not self.rows:
            note.append("No results yet. Finished epochs of every run appear here, best accuracy first.", style="dim")
        else:
            note.append(f"{len(self.rows) - n_syn} CIFAR-100", style="bold cyan")
            note.append(" · ")
            note.append(f"{n_syn} synthetic (S#, ranked apart, not comparable)", style="magenta")
            note.append(f" · sorted by {col} {'desc' if desc else 'asc'} within each group", style="dim")
            if self.marked:
                note.append(f" · {len(self.marked)} marked", style="bold magenta")
            note.append(" · space mark · c compare · o sort · click a header", style="dim")
        show(self.query_one("#lb-note", Static), note)

    # ------------------------------------------------------------------ sorting
    def set_sort(self, col: str, desc: bool | None = None) -> None:
        if col == "mark":
            return
        if desc is None:
            same = self.sort[0] == col
            desc = (not self.sort[1]) if same else (col in LB_DESC_FIRST)
        before = self.sort[0]
        self.sort = (col, desc)
        self._relabel({before, col})
        self.redraw(force=True)

    def _relabel(self, keys: set[str]) -> None:
        """Put the sort arrow on the sorted column's header, resized as DataTable sizes a column
        (widest cell or label); an empty table just gets its columns again."""
        if not self.table.row_count:
            self.table.clear(columns=True)
            for key, label in LB_COLUMNS:
                self.table.add_column(self._label(key, label), key=key)
            return
        labels = dict(LB_COLUMNS)
        first = self.sync.cursor_key() or next(iter(self.sync.shown))
        for column in self.table.columns.values():
            if column.key.value in keys:
                column.label = Text(self._label(column.key.value, labels[column.key.value]))
                self.table.update_cell(first, column.key, self.table.get_cell(first, column.key), update_width=True)

    @on(DataTable.HeaderSelected, "#lb-table")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self.set_sort(event.column_key.value)

    def action_sort(self) -> None:
        keys = [k for k, _ in LB_COLUMNS if k != "mark"]
        i = keys.index(self.sort[0]) if self.sort[0] in keys else -1
        nxt = keys[(i + 1) % len(keys)]
        self.set_sort(nxt, nxt in LB_DESC_FIRST)

    def action_reverse_sort(self) -> None:
        self.set_sort(self.sort[0], not self.sort[1])

    # ------------------------------------------------------------------ marks, compare, keys
    def current_run(self) -> str | None:
        return self.sync.cursor_key()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "compare":
            return True if len(self.marked) >= 2 else None
        return super().check_action(action, parameters)

    def action_mark(self) -> None:
        rid = self.current_run()
        if rid is None:
            return
        self.marked.symmetric_difference_update({rid})
        self._values[rid] = lb_values(next(r for r in self.rows if r["run_id"] == rid), rid in self.marked)
        self.sync.update({rid: self._values[rid]})
        self._note()
        if self.table.cursor_row < self.table.row_count - 1:
            self.table.move_cursor(row=self.table.cursor_row + 1, animate=False)
        self.app.update_bindings()

    def action_compare(self) -> None:
        ids = [r["run_id"] for r in self.rows if r["run_id"] in self.marked]
        if len(ids) < 2:
            self.notify("Mark two or more runs with space, then press c", severity="warning")
            return
        self.post_message(CompareRuns(ids))

    @on(DataTable.RowSelected, "#lb-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(OpenRun(event.row_key.value))

    @on(DataTable.RowHighlighted, "#lb-table")
    def _highlighted(self) -> None:
        self.app.update_bindings()
