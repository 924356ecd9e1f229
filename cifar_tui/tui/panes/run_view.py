"""The run view: one tab per run, updated from its events file (progress, telemetry, epoch table,
charts, the Classes panel of a finished run, log).

Its keys (s stop, r resume, d delete, w close the tab, e evaluate) post messages the App routes or
start the Classes panel's worker; the view itself only reads the run's files and the store.

Its status: what the run supervisor says (the App passes `sup.status(run_id)` once a second:
starting, stopping, queued, stalled, crashed, the store's end status), except that an `end` event
read since then wins over a live status the supervisor gave before it.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, ProgressBar, RichLog, Static

from engine.events import EventTail
from engine.notify import notice_from_end
from engine.status import (COMPLETED, CRASHED, FAILED, QUEUED, RUNNING, STALLED, STARTING, STOPPED, STOPPING,
                           TERMINAL, UNKNOWN, effective_status)

from ...report import fmt_duration
from ..messages import CloseRun, RetryLaunch, RunEnded, RunStatusChanged
from ..support import STATUS_RICH, LogTail, RunState, fmt_eta, fmt_num, short_run
from ..widgets.charts import RunCharts
from ..widgets.focus import focus_now
from ..widgets.table_sync import Column, SyncedTable, TableSync
from ..widgets.telemetry import RunTelemetry
from ..widgets.text import NOT_STARTED, show, status_text
from .classes import ClassesPanel
from .run_actions import RUN_BINDINGS, RunActions

POLL_MAX_BYTES = 64 * 1024    # per tick (~300 events): a burst of events never stalls the UI
CHART_MIN_INTERVAL_S = 1.0    # redraw charts at most this often for step updates
NARROW = 130                  # a view narrower than this shows the Classes panel instead of the charts
SHORT = 30                    # a view lower than this: no blank lines, a shorter log, one chart at a time
TITLE_RUN_ID = 120            # a view narrower than this leaves the run id out of its title (the tab names it)

# priority: 0 always shown; the larger, the sooner a column goes on a narrow terminal
EPOCH_COLUMNS = (Column("epoch", "epoch"), Column("train_loss", "train loss", 1), Column("train_acc", "train acc", 5),
                 Column("test_loss", "test loss", 4), Column("test_acc", "test acc"), Column("lr", "lr", 3),
                 Column("epoch_s", "time", 2))


def epoch_values(e: dict, best_epoch: int | None) -> tuple:
    best = e.get("epoch") == best_epoch and e.get("test_acc") is not None
    return (e.get("epoch"), e.get("train_loss"), e.get("train_acc"), e.get("test_loss"), (e.get("test_acc"), best),
            e.get("lr"), e.get("epoch_s"))


def epoch_cells(_key: str, values: tuple) -> list:
    epoch, train_loss, train_acc, test_loss, (test_acc, best), lr, epoch_s = values
    return [
        Text(str(epoch), style="bold"),
        fmt_num(train_loss, ".4f"),
        fmt_num(train_acc, ".2f"),
        fmt_num(test_loss, ".4f"),
        Text(fmt_num(test_acc, ".2f") + (" ★" if best else "  "), style="bold green" if best else ""),
        fmt_num(lr, ".2e"),
        fmt_duration(epoch_s),
    ]


def stopped_where(st: RunState) -> tuple[int, int | None]:
    """(epoch, step) where a stopped run stopped: the step inside the epoch after the last finished
    one (the `end` event's `step_in_epoch`, else the last step event's), None at an epoch's end."""
    end = st.end or {}
    done = end.get("epochs_done", st.epochs_done) or 0
    step = end.get("step_in_epoch")
    if step is None and st.step and (st.step.get("epoch") or 0) > done:
        step = st.step.get("step")
    return done, step or None


class RunLog(RichLog):
    """stdout.log, wrapped; it keeps its last lines in view when it gets shorter (a short view)."""

    def on_resize(self) -> None:  # Textual also runs RichLog's own handler (it lays out deferred lines)
        if self.auto_scroll:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)


class RunView(RunActions, Vertical):
    """Everything about one run, updated from its events file by `poll()` (called on a timer)."""

    BINDINGS = [*RUN_BINDINGS, Binding("l", "retry", "Retry"), Binding("w", "close_tab", "Close tab"),
                Binding("e", "evaluate", "Classes"), Binding("c", "chart('loss')", "Loss chart"),
                Binding("c", "chart('acc')", "Accuracy chart")]

    def __init__(self, run_id: str, run_dir: Path, **kw):
        super().__init__(**kw)
        self.run_id = run_id
        self.run_dir = Path(run_dir)
        self.state = RunState(run_id)
        self.tail = EventTail(self.run_dir / "events.jsonl")
        self.log_tail = LogTail(self.run_dir / "stdout.log")
        self.loaded = False            # the catch-up read of existing events is done
        self.supervised: str | None = None  # the supervisor's status of the run (set by the App)
        self.start_error: str | None = None  # why its engine never started (the App says)
        self.refused_item: dict | None = None  # the queue item that did not start (a retry starts from it)
        self.chart = "acc"                  # the chart shown when there is room for one only
        self._chart_t = 0.0
        self._shown_status: str | None = None
        self._classes_for: str | None = None  # the finished status the Classes panel was loaded for
        self._progress_status: str | None = None  # the status the progress line was drawn for
        self._best_shown: int | None = None
        self._ready = False                # composed and mounted: the parts can be drawn

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(classes="run-head"):
            yield Static(id="run-title", classes="run-title")
            yield Static(id="run-status", classes="run-status")
        with Horizontal(classes="run-progress"):
            yield Static("epoch -/-", id="epoch-label", classes="epoch-label")
            yield ProgressBar(total=None, show_eta=False, id="bar")
            yield Static("", id="progress-info", classes="progress-info")
        yield Static("", id="run-error", classes="run-error")
        yield RunTelemetry(id="run-telemetry")
        with Horizontal(classes="run-body"):
            table = SyncedTable(id="epochs", cursor_type="row", zebra_stripes=True)
            table.border_title = "Epochs"
            yield table
            yield RunCharts(classes="charts")
            yield ClassesPanel(self.run_id, id="classes")
        # wrapped: a long error line (the reason a run failed) is read in full, not cut at the edge
        log = RunLog(id="run-log", max_lines=400, auto_scroll=True, wrap=True, min_width=20, classes="run-log")
        log.border_title = "stdout.log"
        yield log

    def on_mount(self) -> None:
        self.epochs_sync = TableSync(self.query_one("#epochs", DataTable), epoch_cells, EPOCH_COLUMNS)
        self._ready = True
        self._draw_title()
        self._draw_status()
        self._draw_charts(force=True)
        self.run_worker(self._catch_up, thread=True, name=f"catch-up {self.run_id}", group="catch-up")

    def focus_main(self) -> None:
        focus_now(self.query_one("#epochs", DataTable))

    # ------------------------------------------------------------------ keys
    def current_run(self) -> str | None:
        return self.run_id

    def action_close_tab(self) -> None:
        self.post_message(CloseRun(self.run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.start_error is not None:  # it never started: only a retry from the form, or closing the tab
            if action == "retry":
                return bool(self.refused_item) and not self.refused_item.get("resume_of")
            if action in ("stop", "resume", "delete", "evaluate", "chart"):
                return False
        if action == "retry":
            return False
        if action == "chart":  # one chart at a time on a short view: the key shows the other
            return self.has_class("-short") and not self._classes_instead() and parameters[0] != self.chart
        if action == "evaluate":
            return True if self.finished else None
        return super().check_action(action, parameters)

    def explain_disabled(self, action: str, parameters: tuple[object, ...]) -> str | None:
        if action == "evaluate":
            return (f"e evaluates a finished run's best checkpoint (the Classes panel): {short_run(self.run_id)} is "
                    f"{self.status}{'' if self.loaded else ' (its events are still being read)'}")
        return super().explain_disabled(action, parameters)

    def action_retry(self) -> None:
        item = self.refused_item
        if item is not None and not item.get("resume_of"):
            self.post_message(RetryLaunch(item["id"], item["config"], list(item["overrides"])))

    def action_chart(self, name: str) -> None:
        self.chart = name
        self._layout_charts()
        self.app.update_bindings()

    def _classes_instead(self) -> bool:
        """The Classes panel takes the charts' place (a narrow view with something to show)."""
        return self.has_class("-narrow") and self.query_one(".run-body").has_class("-classes")

    def _layout_charts(self) -> None:
        self.query_one(RunCharts).show_only(self.chart if self.has_class("-short") else None)

    def action_evaluate(self) -> None:
        """The Classes panel: evaluate the run's best checkpoint (again)."""
        if self.finished:
            self.classes_panel.compute()

    @property
    def finished(self) -> bool:
        return self.loaded and self.status in TERMINAL

    @property
    def classes_panel(self) -> ClassesPanel:
        return self.query_one(ClassesPanel)

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW, "-narrow")
        self.set_class(self.size.height < SHORT, "-short")
        self._layout_charts()
        self._draw_telemetry()
        if self._ready:
            self._draw_title()
        self.app.update_bindings()

    # ------------------------------------------------------------------ data
    def _catch_up(self) -> None:
        """Read the events already written (possibly many MB) off the main thread."""
        state = RunState(self.run_id)
        while True:
            events = self.tail.poll(max_bytes=8 << 20)
            if not events:
                break
            state.apply(events)
        lines = self.log_tail.poll()
        try:
            self.app.call_from_thread(self._caught_up, state, lines)
        except RuntimeError:  # the app is shutting down
            pass

    def _caught_up(self, state: RunState, lines: list[str]) -> None:
        if not self.is_attached:  # the tab was closed meanwhile
            return
        self.state = state
        self.loaded = True
        if lines:
            self._write_log(lines)
        self.refresh_view(force=True)

    def _write_log(self, lines: list[str]) -> None:
        log = self.query_one("#run-log", RunLog)
        for line in lines:
            log.write(Text(line), scroll_end=None)

    def poll(self) -> bool:
        """Read what arrived since the last call (bounded); True when the status changed."""
        if not self.loaded or not self._ready:
            return False
        events = self.tail.poll(max_bytes=POLL_MAX_BYTES)
        if events:
            end_before = self.state.end
            self.state.apply(events)
            end = self.state.end
            if end is not None and end is not end_before:  # seen live, not read from the history
                self.post_message(RunEnded(self.run_id, notice_from_end(end, self.state.start)))
        lines = self.log_tail.poll()
        if lines:
            self._write_log(lines)
        before = self._shown_status
        if events or self.state.status_dirty:
            self.refresh_view()
        return before != self.status

    @property
    def status(self) -> str:
        """The supervisor's status, or what the events say when it knows nothing of the run (or
        when an `end` event arrived after it last said the run was live)."""
        told, own = self.supervised, self.state.status
        if told is None or told == UNKNOWN:
            if self.start_error and own == STARTING:
                return FAILED
            if own == RUNNING and told == UNKNOWN:  # no store row: the events' facts, judged the same way
                return effective_status({"status": own, "pid": self.state.pid, "host": self.state.host,
                                         "heartbeat_at": self.state.last_t, "started_at": self.state.last_t})
            return own
        if self.state.end is not None and told in (RUNNING, STALLED, STOPPING):
            return own
        if told == STARTING and own == RUNNING:  # the engine's `start` event is newer than the supervisor's last look
            return own
        return told

    def set_supervised(self, status: str | None) -> bool:
        """The supervisor's status of the run; True when what the view shows changed."""
        if status == self.supervised:
            return False
        before = self.status
        self.supervised = status
        if self._ready:
            self._draw_status()
            self._draw_progress()
            self._draw_telemetry()
        return before != self.status

    def refused(self, reason: str, item: dict | None = None) -> None:
        """Its engine exited before it started (bad input): the view says so, and why, in full; `item`:
        the queue item it came from (`l` opens the launch form with its settings)."""
        self.start_error = reason
        self.refused_item = item
        self.supervised = None
        if self._ready:
            self._draw_status()
            self._draw_progress()
        self.app.update_bindings()

    # ------------------------------------------------------------------ drawing
    def _show(self, selector: str, text: Text, layout: bool = False) -> None:
        # the title and the progress line have fixed sizes: no layout pass on each step event
        show(self.query_one(selector, Static), text, layout=layout)

    def refresh_view(self, force: bool = False) -> None:
        st = self.state
        if not self._ready:
            return
        if st.status_dirty or force:
            self._draw_title()
        if st.new_epochs or force or self._best_shown != st.best_epoch:
            self._draw_epochs(force)
        # the status also comes from the supervisor (starting -> running) without a new event
        if st.progress_dirty or st.status_dirty or force or self.status != self._progress_status:
            self._draw_progress()
        if st.telemetry.dirty or force:
            self._draw_telemetry()
        self._draw_status()
        if st.chart_dirty or force:
            now = time.monotonic()
            if force or st.new_epochs or now - self._chart_t >= CHART_MIN_INTERVAL_S or st.end:
                self._draw_charts()
        st.new_epochs.clear()
        st.progress_dirty = st.status_dirty = False

    def _draw_title(self) -> None:
        st = self.state
        bits = [Text(st.config_name or short_run(self.run_id), style="bold")]
        if st.data_source:
            bits.append(Text(st.data_source, style="bold magenta" if st.data_source == "synthetic" else "bold cyan"))
        if st.device:
            bits.append(Text(st.device))
        if st.params:
            bits.append(Text(f"{st.params / 1e6:.1f}M params"))
        if self.size.width >= TITLE_RUN_ID or not self.size.width:
            bits.append(Text(self.run_id, style="dim"))
        title = Text("  ·  ", no_wrap=True, overflow="ellipsis").join(bits)
        title.no_wrap, title.overflow = True, "ellipsis"
        self._show("#run-title", title)

    @property
    def never_started(self) -> bool:
        """Its launch was refused before the engine's `start` (the Runs tab's `✖ not started`)."""
        return self.start_error is not None and self.state.start is None

    def _draw_status(self) -> None:
        status = self.status
        text = Text(NOT_STARTED, style="bold red") if self.never_started else status_text(status)
        if self.state.best_acc is not None:
            text.append(f"   best {self.state.best_acc:.2f}% @ {self.state.best_epoch}", style="bold")
        self._show("#run-status", text, layout=True)  # width: auto
        if status != self._shown_status:
            self._shown_status = status
            self.post_message(RunStatusChanged(self.run_id, status))
        # once finished, a result kept by `cifar-tui eval` (or an earlier `e`) is shown; by status, not by
        # its change: the supervisor may say `completed` before the catch-up read is done (a busy machine)
        if self.finished and self._classes_for != status:
            self._classes_for = status
            self.classes_panel.load()

    def _draw_telemetry(self) -> None:
        if self._ready:
            self.query_one(RunTelemetry).draw(self.state.telemetry, live=self.status in (RUNNING, STALLED))

    def _draw_progress(self) -> None:
        st = self.state
        bar = self.query_one("#bar", ProgressBar)

        def label(text: Text) -> None:
            self._show("#epoch-label", text)

        def info(text: Text) -> None:
            self._show("#progress-info", text)

        total_epochs = st.epochs_total or "?"
        status = self._progress_status = self.status
        self._draw_error(status)
        if self.never_started:
            label(Text("not started", style="bold red"))
            bar.update(total=1, progress=0)
            info(Text("its launch was refused (below): l opens the form to change its settings", style="bold red"))
            return
        if status in (STARTING, QUEUED):
            label(Text("starting…" if status == STARTING else "queued", style="italic"))
            bar.update(total=None)
            info(Text("waiting for the engine (importing torch, preparing data)" if status == STARTING else
                      "waits in the queue for a free slot (the Runs tab says why)", style="dim"))
            return
        if status in TERMINAL or st.end:
            done, step = stopped_where(st)
            spe = st.steps_per_epoch
            if step and spe and status in (STOPPED, FAILED, CRASHED):  # where it stopped, inside an epoch
                label(Text(f"epoch {done + 1}/{total_epochs}", style="bold"))
                bar.update(total=spe, progress=min(step, spe))
                where = f"at step {step}/{spe} of epoch {done + 1}"
            else:
                label(Text(f"epoch {done}/{total_epochs}", style="bold"))
                frac_total = st.epochs_total or max(done, 1)
                bar.update(total=frac_total, progress=min(done, frac_total))
                where = f"after epoch {done}"
            msg = {COMPLETED: "finished",
                   STOPPED: f"stopped {where}: r resumes from there",
                   CRASHED: "the engine process died without an end event: r resumes from its last checkpoint",
                   FAILED: f"failed {where} (the error is below): r resumes from its last checkpoint"}.get(status, status)
            info(Text(msg, style=STATUS_RICH.get(status, "")))
            return
        epoch = st.current_epoch
        label(Text(f"epoch {epoch}/{total_epochs}", style="bold"))
        spe = st.steps_per_epoch
        step = (st.step or {}).get("step") or 0
        if spe:
            bar.update(total=spe, progress=min(step, spe))
        parts = []
        if st.step:
            parts.append(f"loss {fmt_num(st.step.get('loss'), '.4f')}")
            parts.append(f"acc {fmt_num(st.step.get('acc'), '.2f')}%")
            parts.append(f"{fmt_num(st.step.get('img_per_s'), ',.0f')} img/s")
        epoch_left, run_left = st.eta()
        parts.append(f"epoch {fmt_eta(epoch_left)} left")
        parts.append(f"run {fmt_eta(run_left)} left")
        if status == STOPPING:
            parts.insert(0, "stopping after this step…")
        if status == STALLED:
            parts.insert(0, "stalled: alive, no step lately (s stops it)")
        info(Text("  ·  ".join(parts), style=STATUS_RICH[STALLED] if status == STALLED else ""))

    def _draw_error(self, status: str) -> None:
        """Why the run failed or never started, in full (wrapped) under the progress line."""
        error = self.start_error if self.never_started else (
            self.state.error if status == FAILED else None)
        box = self.query_one("#run-error", Static)
        box.display = bool(error)
        if error:
            self._show("#run-error", Text(f"✖ {error}", style="red"), layout=True)

    def _draw_epochs(self, force: bool) -> None:
        st = self.state
        values = {str(n): epoch_values(e, st.best_epoch) for n, e in st.epochs.items()}
        self.epochs_sync.show([str(n) for n in sorted(st.epochs)], values)
        table = self.epochs_sync.table
        if st.new_epochs and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._best_shown = st.best_epoch

    def _draw_charts(self, force: bool = False) -> None:
        self._chart_t = time.monotonic()
        self.state.chart_dirty = False
        self.query_one(RunCharts).draw(self.state)
