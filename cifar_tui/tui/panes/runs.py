"""The Runs tab: launches refused before they started (until dismissed), the queue, then every run
newest first; s / r / d on the highlighted run, d on a queued item cancels it, l retries a refused
launch from the launch form. Redrawn row by row from the store's changes, only while in front."""
from __future__ import annotations

import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from ...table_rows import fmt_acc, fmt_duration
from ..messages import CancelQueued, DismissRefused, OpenRun, RetryLaunch
from ..runs_index import Changes, RunsIndex
from ..support import short_run
from ..widgets.focus import focus_now
from ..widgets.table_sync import Column, LazyRows, SyncedTable, TableSync
from ..widgets.text import NOT_STARTED, cell, show, status_text
from .run_actions import RUN_BINDINGS, RunActions

# priority: 0 always shown; the larger, the sooner a column goes on a narrow terminal
RUNS_COLUMNS = (Column("status", "status"), Column("run_id", "run id"), Column("config", "config", 6),
                Column("data", "data", 5), Column("device", "device", 7), Column("epochs", "epochs", 2),
                Column("best", "best acc", 1), Column("wall", "wall", 4), Column("started", "started", 3))
QUEUE_PREFIX = "queue:"
REFUSED_PREFIX = "refused:"
HINT = "enter open · s stop · r resume · d delete (or cancel a queued item)"
EMPTY_HINT = "no runs yet: pick an experiment in the Experiments tab (1) and press l"
REFUSED_HINT = "l retry with changed settings (the launch form) · d dismiss"


def _when(t: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(t)) if t else "-"


def _source(overrides: list[str]) -> str:
    return next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("data.source=")), "-")


def run_values(row: dict, status: str) -> tuple:
    return (status, row["run_id"], row["config_name"], row.get("data_source") or "-", row.get("device") or "-",
            f"{row.get('epochs_done') or 0}/{row.get('epochs_total') or '?'}", fmt_acc(row.get("best_acc")),
            fmt_duration(row.get("wall_s")), _when(row.get("started_at")))


def queue_values(item: dict) -> tuple:
    nproc = item.get("nproc", 1)
    what = f"resume {short_run(item['resume_of'])}" if item.get("resume_of") else f"queue #{item['id']}"
    return ("queued", what, item["config"] if not item.get("resume_of") else "-", _source(item["overrides"]),
            f"{nproc} procs" if nproc > 1 else "-", "-", "-", "-", _when(item["created_at"]))


def starting_values(run_id: str, status: str) -> tuple:
    """A run this app has just started, before its engine writes its store row (importing torch,
    preparing data: seconds)."""
    return (status, run_id, run_id.rsplit("-", 2)[0], "-", "-", "0/?", "-", "-", _when(time.time()))


def refused_values(item: dict) -> tuple:
    if item.get("resume_of"):
        what, config = f"resume {item['resume_of']}", "-"
    else:
        what, config = item.get("run_id") or f"queue #{item['id']}", item["config"]
    return (NOT_STARTED, what, config, _source(item["overrides"]), "-", "-", "-", "-", _when(item["created_at"]))


def runs_cells(key: str, values: tuple) -> list:
    status, run_id, config, source, device, epochs, best, wall, started = values
    if key.startswith(QUEUE_PREFIX):
        return [Text("◷ queued", style="bold magenta"), Text(run_id, style="dim"), config, source, device,
                epochs, best, wall, started]
    if key.startswith(REFUSED_PREFIX):
        return [Text(NOT_STARTED, style="bold red"), Text(run_id, style="red"), cell(config), cell(source), device,
                epochs, best, wall, started]
    return [status_text(status), cell(run_id), cell(config),
            Text(source, style="magenta" if source == "synthetic" else ""), cell(device), cell(epochs), cell(best),
            cell(wall), cell(started)]


class RunsPane(RunActions, Vertical):
    BINDINGS = [
        *RUN_BINDINGS,
        Binding("d", "cancel_queued", "Cancel"),       # one `d` is shown: the one the highlighted row takes
        Binding("d", "dismiss", "Dismiss"),
        Binding("l", "retry", "Retry"),
    ]

    def __init__(self, **kw):
        super().__init__(**kw)
        self._values = LazyRows(self._row_values)     # key -> row values, made when a row is drawn
        self._started: dict[str, float | None] = {}   # run id -> started_at (the order: newest first)
        self._queue: dict[str, dict] = {}             # key -> queued item, in queue order
        self._refused: dict[str, dict] = {}           # key -> refused item, newest first
        self._starting: list[str] = []                # runs this app started that the store has no row of yet
        self._pending = Changes()                     # what changed since the last redraw
        self._index: RunsIndex | None = None
        self._stale = True                            # nothing drawn yet: draw every row
        self.blocked: str | None = None               # why the head of the queue waits (the supervisor says)

    def compose(self) -> ComposeResult:
        yield SyncedTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-hint", classes="hint")

    def on_mount(self) -> None:
        self.table = self.query_one("#runs-table", DataTable)
        self.sync = TableSync(self.table, runs_cells, RUNS_COLUMNS)

    def focus_main(self) -> None:
        focus_now(self.table)

    @property
    def in_front(self) -> bool:
        return self.app.active_tab == "runs"

    # ------------------------------------------------------------------ data
    def runs_changed(self, index: RunsIndex, changes: Changes) -> None:
        """Note what changed; redraw now when in front, else when next shown."""
        self._index = index
        p = self._pending
        p.added |= changes.added
        p.changed |= changes.changed
        p.removed |= changes.removed
        p.queue |= changes.queue
        if self.in_front:
            self.redraw()

    def status_changed(self, run_id: str) -> None:
        """The status the app shows for a run changed (stopping, starting, ...): its row follows."""
        self._pending.changed.add(run_id)
        if self.in_front:
            self.redraw()

    def redraw(self) -> None:
        """Bring the table up to date with what changed since the last redraw."""
        index = self._index
        if index is None or not (self._pending or self._stale):
            return
        p, self._pending = self._pending, Changes()
        reorder = self._stale or bool(p.added or p.removed or p.queue)
        if self._stale:
            self._values.clear()
            self._started = {rid: row["started_at"] for rid, row in index.runs.items()}
        for rid in p.removed:
            self._values.pop(rid, None)
            self._started.pop(rid, None)
        for rid in p.runs:
            self._values.pop(rid, None)
            row = index.runs.get(rid)
            if row is not None:
                reorder = reorder or self._started.get(rid) != row["started_at"]
                self._started[rid] = row["started_at"]
        if p.queue or self._stale:
            for key in [*self._queue, *self._refused]:
                self._values.pop(key, None)
            self._queue = {f"{QUEUE_PREFIX}{item['id']}": item for item in index.queue}
            self._refused = {f"{REFUSED_PREFIX}{item['id']}": item for item in reversed(index.refused)}
        starting = [rid for rid in self.app.lifecycle.starting_runs() if rid not in index.runs]
        if set(starting) != set(self._starting):
            reorder = True
            for rid in self._starting:
                self._values.pop(rid, None)  # its store row arrived (or it was refused): drawn afresh
        self._starting = starting
        if reorder:
            self.sync.show([*self._refused, *self._queue, *starting, *index.newest_first()], self._values)
            self._cursor_off_launches()
        else:
            self.sync.update({rid: self._values[rid] for rid in p.runs if rid in index.runs})
        self._stale = False
        self._draw_hint()

    def _cursor_off_launches(self) -> None:
        """The cursor starts on the newest run, not on a refused or queued launch listed above it
        (Enter opens a run; a launch's own keys are l and d)."""
        key = self.highlighted() or ""
        table = self.table
        if table.cursor_row == 0 and key.startswith((QUEUE_PREFIX, REFUSED_PREFIX)):
            first_run = len(self._refused) + len(self._queue)
            if first_run < table.row_count:
                table.move_cursor(row=first_run, animate=False)

    def set_blocked(self, reason: str | None) -> None:
        """Why the queue's next item waits (None: it does not): shown under the table."""
        if reason != self.blocked:
            self.blocked = reason
            if self._index is not None:
                self._draw_hint()

    def _draw_hint(self) -> None:
        refused = self._refused.get(self.highlighted() or "")
        if refused is not None:  # the whole reason, wrapped: a table cell would cut it
            hint = Text("✖ did not start: ", style="bold red")
            hint.append(refused.get("error") or "its launch was refused", style="")
            hint.append(f"\n{REFUSED_HINT}", style="dim")
        elif self._queue and self.blocked:
            hint = Text("◷ the queue waits: ", style="bold magenta")
            hint.append(self.blocked, style="")
            hint.append(f"   ·   {HINT}", style="dim")
        else:
            hint = Text(HINT if self._queue or self._index.runs else EMPTY_HINT)
        show(self.query_one("#runs-hint", Static), hint)

    def _row_values(self, key: str) -> tuple:
        if key.startswith(QUEUE_PREFIX):
            return queue_values(self._queue[key])
        if key.startswith(REFUSED_PREFIX):
            return refused_values(self._refused[key])
        row = self._index.runs.get(key)
        if row is None:  # started by this app, its engine not yet in the store
            return starting_values(key, self.app.lifecycle.run_status(key))
        return run_values(row, self.app.lifecycle.shown_status(key, row))

    # ------------------------------------------------------------------ keys
    def highlighted(self) -> str | None:
        return self.sync.cursor_key()

    def current_run(self) -> str | None:
        key = self.highlighted()
        return None if key is None or key.startswith((QUEUE_PREFIX, REFUSED_PREFIX)) else key

    def _item(self, prefix: str) -> int | None:
        key = self.highlighted()
        return int(key[len(prefix):]) if key and key.startswith(prefix) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        key = self.highlighted() or ""
        kind = QUEUE_PREFIX if key.startswith(QUEUE_PREFIX) else REFUSED_PREFIX if key.startswith(REFUSED_PREFIX) \
            else None
        if action == "cancel_queued":
            return kind == QUEUE_PREFIX
        if action == "dismiss":
            return kind == REFUSED_PREFIX
        if action == "retry":  # a resume has no form to change: only a new launch is retried
            return kind == REFUSED_PREFIX and not self._refused[key].get("resume_of")
        if action in ("stop", "resume", "delete") and kind is not None:
            return False  # not a run: its own keys are shown instead
        return super().check_action(action, parameters)

    def action_cancel_queued(self) -> None:
        if (item_id := self._item(QUEUE_PREFIX)) is not None:
            self.post_message(CancelQueued(item_id))

    def action_dismiss(self) -> None:
        if (item_id := self._item(REFUSED_PREFIX)) is not None:
            self.post_message(DismissRefused(item_id))

    def action_retry(self) -> None:
        key = self.highlighted() or ""
        item = self._refused.get(key)
        if item is not None and not item.get("resume_of"):
            self.post_message(RetryLaunch(item["id"], item["config"], list(item["overrides"])))

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value or ""
        if key.startswith(REFUSED_PREFIX):
            self.notify("this launch did not start (its reason is under the table): l retries it from the launch "
                        "form, d dismisses it", severity="warning", timeout=5)
        elif key.startswith(QUEUE_PREFIX):
            self.notify("a queued launch: it starts when a slot frees; d cancels it", timeout=4)
        elif key:
            self.post_message(OpenRun(key))

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self) -> None:
        if self._index is not None:
            self._draw_hint()
        self.app.update_bindings()
