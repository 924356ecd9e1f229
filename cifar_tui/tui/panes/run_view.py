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
from textual.widgets import DataTable, Log, ProgressBar, Static
from textual_plotext import PlotextPlot

from engine.events import EventTail
from engine.notify import notice_from_end
from engine.status import (COMPLETED, CRASHED, FAILED, QUEUED, RUNNING, STALLED, STARTING, STOPPED, STOPPING,
                           TERMINAL, UNKNOWN, effective_status)

from ...report import fmt_duration
from ..messages import CloseRun, RunEnded, RunStatusChanged
from ..support import STATUS_RICH, LogTail, RunState, fmt_eta, fmt_num, short_run
from ..widgets.telemetry import RunTelemetry
from ..widgets.text import show, status_text
from .classes import ClassesPanel
from .run_actions import RUN_BINDINGS, RunActions

POLL_MAX_BYTES = 64 * 1024    # per tick (~300 events): a burst of events never stalls the UI
CHART_MIN_INTERVAL_S = 1.0    # redraw charts at most this often for step updates
MAX_PLOT_POINTS = 400         # a terminal chart has ~2 points per cell: more only costs time
NARROW = 130                  # a view narrower than this shows the Classes panel instead of the charts
SHORT = 30                    # a view lower than this spares the blank line under the telemetry


def thin(items: list, limit: int) -> list:
    """At most `limit` evenly spaced items, always keeping the last."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    out = [items[int(i * step)] for i in range(limit - 1)]
    out.append(items[-1])
    return out


EPOCH_COLUMNS = (("epoch", "epoch"), ("train_loss", "train loss"), ("train_acc", "train acc"),
                 ("test_loss", "test loss"), ("test_acc", "test acc"), ("lr", "lr"), ("epoch_s", "time"))


def epoch_cells(e: dict, best_epoch: int | None) -> list:
    best = e.get("epoch") == best_epoch and e.get("test_acc") is not None
    test_acc = Text(fmt_num(e.get("test_acc"), ".2f") + (" ★" if best else "  "),
                    style="bold green" if best else "")
    return [
        Text(str(e.get("epoch")), style="bold"),
        fmt_num(e.get("train_loss"), ".4f"),
        fmt_num(e.get("train_acc"), ".2f"),
        fmt_num(e.get("test_loss"), ".4f"),
        test_acc,
        fmt_num(e.get("lr"), ".2e"),
        fmt_duration(e.get("epoch_s")),
    ]


class RunView(RunActions, Vertical):
    """Everything about one run, updated from its events file by `poll()` (called on a timer)."""

    BINDINGS = [*RUN_BINDINGS, Binding("w", "close_tab", "Close tab"), Binding("e", "evaluate", "Classes")]

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
        self._chart_t = 0.0
        self._shown_status: str | None = None
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
        yield RunTelemetry(id="run-telemetry")
        with Horizontal(classes="run-body"):
            table = DataTable(id="epochs", cursor_type="row", zebra_stripes=True)
            table.border_title = "Epochs"
            yield table
            with Vertical(classes="charts"):
                loss = PlotextPlot(id="loss-plot", classes="chart")
                loss.border_title = "Loss"
                yield loss
                acc = PlotextPlot(id="acc-plot", classes="chart")
                acc.border_title = "Accuracy %"
                yield acc
            yield ClassesPanel(self.run_id, id="classes")
        log = Log(id="run-log", max_lines=400, auto_scroll=True, classes="run-log")
        log.border_title = "stdout.log"
        yield log

    def on_mount(self) -> None:
        table = self.query_one("#epochs", DataTable)
        for key, label in EPOCH_COLUMNS:
            table.add_column(label, key=key)
        self._ready = True
        self._draw_title()
        self._draw_status()
        self._draw_charts(force=True)
        self.run_worker(self._catch_up, thread=True, name=f"catch-up {self.run_id}", group="catch-up")

    def focus_main(self) -> None:
        self.query_one("#epochs", DataTable).focus()

    # ------------------------------------------------------------------ keys
    def current_run(self) -> str | None:
        return self.run_id

    def action_close_tab(self) -> None:
        self.post_message(CloseRun(self.run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "evaluate":
            return True if self.finished else None
        return super().check_action(action, parameters)

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
        self._draw_telemetry()

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
            self.query_one("#run-log", Log).write_lines(lines)
        self.refresh_view(force=True)

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
            self.query_one("#run-log", Log).write_lines(lines)
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

    def refused(self, reason: str) -> None:
        """Its engine exited before it started (bad input): the view says failed, and why."""
        self.start_error = reason
        self.supervised = None
        if self._ready:
            self._draw_status()
            self._draw_progress()

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
        bits.append(Text(self.run_id, style="dim"))
        self._show("#run-title", Text("  ·  ").join(bits))

    def _draw_status(self) -> None:
        status = self.status
        text = status_text(status)
        if self.state.best_acc is not None:
            text.append(f"   best {self.state.best_acc:.2f}% @ {self.state.best_epoch}", style="bold")
        self._show("#run-status", text, layout=True)  # width: auto
        if status != self._shown_status:
            self._shown_status = status
            self.post_message(RunStatusChanged(self.run_id, status))
            if self.finished:
                self.classes_panel.load()  # a result kept by `cifar-tui eval` (or an earlier `e`) is shown

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
        if status in (STARTING, QUEUED):
            label(Text("starting…" if status == STARTING else "queued", style="italic"))
            bar.update(total=None)
            info(Text("waiting for the engine (importing torch, preparing data)" if status == STARTING else
                      "waits in the queue for a free slot (the Runs tab says why)", style="dim"))
            return
        if status in TERMINAL or st.end:
            done = st.epochs_done
            label(Text(f"epoch {done}/{total_epochs}", style="bold"))
            frac_total = st.epochs_total or max(done, 1)
            bar.update(total=frac_total, progress=min(done, frac_total))
            msg = {COMPLETED: "finished", STOPPED: "stopped: resume with r", CRASHED:
                   "the engine process died without an end event: resume with r",
                   FAILED: f"failed: {st.error or self.start_error or 'see the log below'}"}.get(status, status)
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
        parts.append(f"ETA {fmt_eta(epoch_left)}")
        parts.append(f"run {fmt_eta(run_left)}")
        if status == STOPPING:
            parts.insert(0, "stopping after this step…")
        if status == STALLED:
            parts.insert(0, "stalled: alive, no step lately (s stops it)")
        info(Text("  ·  ".join(parts), style=STATUS_RICH[STALLED] if status == STALLED else ""))

    def _draw_epochs(self, force: bool) -> None:
        st = self.state
        table = self.query_one("#epochs", DataTable)
        keys = sorted(st.epochs) if force else list(st.new_epochs)
        # the best marker moves: redraw the row that held it
        if self._best_shown is not None and self._best_shown != st.best_epoch and self._best_shown in st.epochs:
            keys.append(self._best_shown)
        if st.best_epoch in st.epochs:
            keys.append(st.best_epoch)
        existing = {rk.value for rk in table.rows}
        for n in dict.fromkeys(keys):
            e = st.epochs.get(n)
            if e is None:
                continue
            cells = epoch_cells(e, st.best_epoch)
            key = str(n)
            if key in existing:
                for (col, _), value in zip(EPOCH_COLUMNS, cells):
                    table.update_cell(key, col, value)
            else:
                table.add_row(*cells, key=key)
                existing.add(key)
        if st.new_epochs and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._best_shown = st.best_epoch

    def _draw_charts(self, force: bool = False) -> None:
        st = self.state
        self._chart_t = time.monotonic()
        st.chart_dirty = False
        epochs = thin([st.epochs[k] for k in sorted(st.epochs)], MAX_PLOT_POINTS)
        pts = thin(st.step_points, MAX_PLOT_POINTS)
        for plot_id, step_idx, test_key, ylabel in (("#loss-plot", 1, "test_loss", "loss"), ("#acc-plot", 2, "test_acc", "%")):
            plot = self.query_one(plot_id, PlotextPlot)
            plt = plot.plt
            plt.clear_data()
            plt.clear_figure()
            xs = [p[0] for p in pts if p[step_idx] is not None]
            ys = [p[step_idx] for p in pts if p[step_idx] is not None]
            if xs:
                plt.plot(xs, ys, marker="braille", label="train", color="cyan")
            ex = [e["epoch"] for e in epochs if e.get(test_key) is not None]
            ey = [e[test_key] for e in epochs if e.get(test_key) is not None]
            if ex:
                plt.plot(ex, ey, marker="dot" if len(ex) > 1 else "hd", label="test", color="orange")
            if not xs and not ex:
                plt.title("waiting for the first steps")
            elif plot_id == "#acc-plot":
                top = max(ys + ey + [1.0])
                plt.ylim(0, min(100.0, top * 1.05))
            plt.xlabel("epoch")
            plot.refresh()
