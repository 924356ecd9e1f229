"""The Textual app: pick experiments, launch them in the background, watch them live,
compare them on a leaderboard.

Runs are separate engine processes (cifar_tui.launch): the app only tails their
events.jsonl / stdout.log and reads the SQLite store, so it can quit and re-attach.
torch is never imported here (start-up stays fast).
"""
from __future__ import annotations

import gc
import shutil
import subprocess

from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.content import Content
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from engine.config import ConfigError, load_config
from engine.paths import check_run_id
from engine.store import Store

from ..launch import (LaunchRequest, Workspace, discard_unstarted, last_error_line, launch, recorded_processes,
                     request_stop)
from ..launch import resume as resume_engine
from ..report import experiment_rows, fmt_acc, fmt_duration, leaderboard_rows
from ..gpus import GpuScheduler, Slot, visible_gpus
from .commands import CifarCommands
from .screens.launch import CompareScreen, ConfirmScreen, LaunchPlan, LaunchScreen, QuitScreen
from .support import (RESUMABLE, STATUS_RICH, best_by_config, default_max_parallel,
                          matches_filter, pane_id_for, short_run)
from .panes.run_view import RunView, show, status_text

FIXED_TABS = ("experiments", "runs", "leaderboard")
TAB_GROUP = Binding.Group("tabs", compact=True)

LB_COLUMNS = (("mark", " "), ("rank", "#"), ("config", "config"), ("data", "data"), ("best_acc", "best acc"),
              ("reference", "seed"), ("diff", "diff"), ("best_epoch", "best ep"), ("epochs", "epochs"),
              ("wall_s", "wall"), ("status", "status"), ("run_id", "run id"))
MAIN_ACTIONS = {"show_tab", "launch", "mark", "filter", "stop", "resume", "delete", "compare", "sort", "reverse_sort",
                "close_tab", "prev_tab", "next_tab", "toggle_keys", "quit"}
LB_DESC_FIRST = {"best_acc", "reference", "diff", "wall_s", "best_epoch", "epochs"}


EXP_COLUMNS = (("mark", " "), ("name", "name"), ("model", "model"), ("input", "input"), ("pretrained", "pre"),
               ("head_loss", "head/loss"), ("seed", "seed"), ("best", "best"))
BEST_CELL_WIDTH = len("100.00 syn")


def _table_sync(table: DataTable, rows: list[tuple[str, list]]) -> None:
    """Make `table` show `rows` [(key, cells)], updating in place when the keys are unchanged
    (keeps the cursor and scroll), rebuilding otherwise (cursor stays on the same key)."""
    keys = [k for k, _ in rows]
    current = [rk.value for rk in table.rows]
    col_keys = list(table.columns)
    if keys == current:
        for key, cells in rows:
            old = table.get_row(key)
            for col, before, after in zip(col_keys, old, cells):
                if before != after:
                    table.update_cell(key, col, after)
        return
    cursor_key = current[table.cursor_row] if current and 0 <= table.cursor_row < len(current) else None
    cursor_row = table.cursor_row
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if cursor_key in keys:
        table.move_cursor(row=keys.index(cursor_key), animate=False)
    elif rows:
        table.move_cursor(row=min(cursor_row, len(rows) - 1), animate=False)


class FilterInput(Input):
    BINDINGS = [
        Binding("escape", "clear_filter", "Clear filter"),
        Binding("down", "app.focus_experiments", "To the list", show=False),
    ]

    def action_clear_filter(self) -> None:
        self.value = ""
        self.app.action_focus_experiments()


class CifarTUI(App):
    """cifar-tui: experiments, live runs, leaderboard."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses elsewhere still find it
    TITLE = "cifar-tui"
    COMMANDS = App.COMMANDS | {CifarCommands}
    COMMAND_PALETTE_BINDING = "ctrl+p"

    BINDINGS = [
        Binding("1", "show_tab('experiments')", "Experiments", group=TAB_GROUP),
        Binding("2", "show_tab('runs')", "Runs", group=TAB_GROUP),
        Binding("3", "show_tab('leaderboard')", "Leaderboard", group=TAB_GROUP),
        Binding("l", "launch", "Launch"),
        Binding("space", "mark", "Mark"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "stop", "Stop run"),
        Binding("r", "resume", "Resume"),
        Binding("d", "delete", "Delete"),
        Binding("c", "compare", "Compare"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse_sort", "Reverse", show=False),
        Binding("w", "close_tab", "Close tab"),
        Binding("left_square_bracket", "prev_tab", "Previous tab", show=False),
        Binding("right_square_bracket", "next_tab", "Next tab", show=False),
        Binding("question_mark", "toggle_keys", "Keys"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, ws: Workspace, *, max_parallel: int | None = None, poll_interval: float = 0.25,
                 store_interval: float = 1.0, theme: str = "tokyo-night"):
        super().__init__()
        self.ws = ws
        self.gpus = visible_gpus()
        self.max_parallel = max_parallel or default_max_parallel(self.gpus)
        # GPU pinning of the runs this app starts (one GPU each); the slot count above also
        # counts runs started elsewhere in the workspace
        self.scheduler = GpuScheduler(self.gpus, max_parallel=1_000_000)
        self.slots: dict[str, Slot] = {}
        self.poll_interval = poll_interval
        self.store_interval = store_interval
        self._theme_name = theme
        self.store: Store | None = None
        self.experiments: list[dict] = []
        self.experiments_loaded = False
        self.marked: set[str] = set()          # experiment names
        self.lb_marked: set[str] = set()       # run ids
        self.views: dict[str, RunView] = {}    # run id -> its view (one tab each)
        self.procs: dict[str, subprocess.Popen] = {}  # engines started by this app, until reaped
        self.runs_cache: list[dict] = []
        self.queue_cache: list[dict] = []
        self.lb_rows: list[dict] = []
        self.lb_sort: tuple[str, bool] = ("best_acc", True)
        self._activate: set[int] = set()       # queue ids whose tab opens in front when they start
        self._yaml_for: str | None = None
        self.yaml_text = ""                    # the resolved YAML shown (highlighted) in the side pane

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(Text("◆ cifar-tui", style="bold"), id="brand")
            yield Static(self._workspace_text(), id="workspace")
            yield Static("", id="counts")
        with TabbedContent(id="tabs", initial="experiments"):
            with TabPane("Experiments", id="experiments"):
                with Horizontal(classes="split"):
                    with Vertical(id="exp-left"):
                        yield FilterInput(placeholder="/ filter: type words (name, model, loss)…", id="filter")
                        table = DataTable(id="exp-table", cursor_type="row", zebra_stripes=True)
                        yield table
                        yield Static("", id="exp-hint", classes="hint")
                    with Vertical(id="exp-right"):
                        yield Static("", id="exp-title", classes="pane-title")
                        with VerticalScroll(id="yaml-scroll"):
                            yield Static("", id="yaml")
            with TabPane("Runs", id="runs"):
                yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="runs-hint", classes="hint")
            with TabPane("Leaderboard", id="leaderboard"):
                yield Static("", id="lb-note", classes="hint")
                yield DataTable(id="lb-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def _workspace_text(self) -> Text:
        home = str(self.ws.home)
        user_home = str(Path.home())
        if home.startswith(user_home + "/"):
            home = "~" + home[len(user_home):]
        text = Text("workspace ", style="dim", no_wrap=True, overflow="ellipsis")
        text.append(home)
        return text

    def on_mount(self) -> None:
        if self._theme_name in self.available_themes:
            self.theme = self._theme_name
        self.sub_title = str(self.ws.home)
        self.store = self.ws.store()
        exp = self.query_one("#exp-table", DataTable)
        self._exp_columns()
        runs = self.query_one("#runs-table", DataTable)
        for key, label in (("status", "status"), ("run_id", "run id"), ("config", "config"), ("data", "data"),
                           ("device", "device"), ("epochs", "epochs"), ("best", "best acc"), ("wall", "wall"),
                           ("started", "started")):
            runs.add_column(label, key=key)
        self._lb_columns()
        self.refresh_store()
        self.fill_experiments()
        # validating every config takes a few hundred ms: off the main thread, after the first frame
        self.run_worker(self._load_experiments, thread=True, name="load experiments")
        # re-attach: every live run gets its tab back; crashed ones are reported
        for r in self.runs_cache:
            if r["status"] == "running":
                self.call_later(self.open_run, r["run_id"], False)
        crashed = [r["run_id"] for r in self.runs_cache if r["status"] == "crashed"]
        if crashed:
            self.notify(f"{len(crashed)} run(s) crashed (process gone): {', '.join(map(short_run, crashed[:3]))}. "
                        "Resume from the Runs tab with r.", severity="warning", timeout=8)
        self.set_interval(self.poll_interval, self.tick, name="poll events")
        self.set_interval(self.store_interval, self.slow_tick, name="store + queue")
        exp.focus()
        self.call_later(self.slow_tick)

    def on_unmount(self) -> None:
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ periodic work
    def tick(self) -> None:
        """Tail every open run's events (bounded reads); cheap enough for 4 Hz."""
        for view in list(self.views.values()):
            view.poll()

    @on(RunView.StatusChanged)
    def _run_status_changed(self, event: RunView.StatusChanged) -> None:
        if self.store is not None and event.status in ("completed", "stopped", "failed"):
            # the engine writes the store before its `end` event: show the final row now, not a second later
            self.refresh_store()
        self._update_tab_label(event.run_id)
        self.update_bindings()

    async def slow_tick(self) -> None:
        """Store, liveness, queue: once a second."""
        if self.store is None:
            return
        self._reap()
        try:
            self.refresh_store()
        except NoMatches:  # the app is exiting: its screen's widgets are already gone
            return
        await self.pump_queue()
        self._update_view_status()

    def _reap(self) -> None:
        for rid, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[rid]
            if rid in self.slots:
                self.scheduler.release(self.slots.pop(rid))
            run_dir = self.ws.home / rid
            if not (run_dir / "events.jsonl").exists():
                reason = last_error_line(run_dir) or f"the engine exited with code {code} before starting"
                discard_unstarted(run_dir)
                self.notify(f"{short_run(rid)} did not start: {reason}", severity="error", timeout=10)
                view = self.views.get(rid)
                if view is not None:
                    view.set_external("failed", reason)
                    self._update_tab_label(rid)

    def _update_view_status(self) -> None:
        rows = {r["run_id"]: r for r in self.runs_cache}
        for rid, view in self.views.items():
            view.poll()  # read an end event before judging liveness
            if view.state.status != "running":
                if view.state.status == "starting" and rid not in self.procs and view.external != "failed":
                    # not started by us, no events yet: trust the store if it knows better
                    row = rows.get(rid)
                    if row and row["status"] in ("crashed", "failed", "stopped", "completed"):
                        view.set_external(row["status"])
                continue
            if rid in self.procs:
                status = "stopping" if view.external == "stopping" else None
            else:
                row = rows.get(rid)
                status = "crashed" if (row is None or row["status"] == "crashed") else None
                if status is None and view.external == "stopping":
                    status = "stopping"
                if row is None:
                    from engine.store import pid_alive

                    status = None if pid_alive(view.state.pid) else "crashed"
            if view.set_external(status):
                self._update_tab_label(rid)
        self.update_bindings()

    def refresh_store(self) -> None:
        store = self.store
        self.runs_cache = store.runs()
        self.queue_cache = store.queued()
        self.fill_runs()
        self.fill_leaderboard()
        self._update_best_column()
        running = len([r for r in self.runs_cache if r["status"] == "running"])
        counts = Text()
        counts.append(f"▶ {running} running", style="bold cyan" if running else "dim")
        counts.append("   ")
        counts.append(f"◷ {len(self.queue_cache)} queued", style="bold magenta" if self.queue_cache else "dim")
        where = f"{len(self.gpus)} GPU" + ("s" if len(self.gpus) != 1 else "") if self.gpus else "CPU"
        counts.append(f"   {self.max_parallel} at a time on {where}", style="dim")
        show(self.query_one("#counts", Static), counts)

    # ------------------------------------------------------------------ experiments tab
    def _load_experiments(self) -> None:
        rows = experiment_rows(self.ws.configs)
        try:
            self.call_from_thread(self._experiments_loaded, rows)
        except RuntimeError:  # quitting already
            pass

    def _exp_columns(self) -> None:
        """The experiment table's columns, sized to the experiments' cells. Fixed widths: the table
        does not depend on DataTable measuring new rows when it next goes idle (once, in CI, the
        first screen kept the header widths and cut every name to four letters)."""
        table = self.query_one("#exp-table", DataTable)
        cells = [self._exp_cells(r, {}) for r in self.experiments]
        table.clear(columns=True)
        for i, (key, label) in enumerate(EXP_COLUMNS):
            width = max([len(label)] + [len(c.plain if isinstance(c, Text) else str(c)) for c in
                                         (row[i] for row in cells)])
            table.add_column(label, key=key, width=max(width, BEST_CELL_WIDTH) if key == "best" else width)

    def _experiments_loaded(self, rows: list[dict]) -> None:
        self.experiments = rows
        self.experiments_loaded = True
        self._exp_columns()
        self.fill_experiments()
        self.update_bindings()
        # Start-up objects (widgets, styles, configs) live as long as the app: move them out of
        # the collector's reach, so full collections triggered by parsing events stay short
        # (they were the UI's longest pauses while events stream in).
        self.call_after_refresh(gc.freeze)

    def fill_experiments(self) -> None:
        query = self.query_one("#filter", Input).value
        best = best_by_config(self.runs_cache)
        rows = []
        for r in self.experiments:
            if not matches_filter(query, r["name"], r.get("model"), r.get("head_loss"), r.get("input"),
                                  "pretrained" if r.get("pretrained") else "scratch"):
                continue
            rows.append((r["name"], self._exp_cells(r, best.get(r["name"], {}))))
        table = self.query_one("#exp-table", DataTable)
        _table_sync(table, rows)
        n, total = len(rows), len(self.experiments)
        hint = f"{n}/{total} experiments" if query else f"{total} experiments"
        if not self.experiments_loaded:
            hint = "loading experiments…"
        if self.marked:
            hint += f" · {len(self.marked)} marked (l queues them)"
        show(self.query_one("#exp-hint", Static), hint)
        self._show_yaml()

    def _exp_cells(self, r: dict, best: dict) -> list:
        mark = Text("●", style="bold magenta") if r["name"] in self.marked else Text(" ")
        if r.get("error"):
            return [mark, Text(r["name"], style="red"), Text("invalid config", style="red"), "", "", "", "", ""]
        if best.get("cifar100") is not None:
            best_cell = Text(fmt_acc(best["cifar100"]), style="bold green")
        elif best.get("synthetic") is not None:
            best_cell = Text(f"{fmt_acc(best['synthetic'])} syn", style="magenta")
        else:
            best_cell = Text("-", style="dim")
        return [mark, Text(r["name"], style="bold"), r["model"].replace("/cifar-stem", "·cifar"), r["input"],
                Text("✔", style="green") if r["pretrained"] else Text("·", style="dim"), r["head_loss"],
                fmt_acc(r["reference"]), best_cell]

    def _update_best_column(self) -> None:
        self.fill_experiments()

    def highlighted_experiment(self) -> str | None:
        table = self.query_one("#exp-table", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - empty or changing table
            return None

    def _show_yaml(self) -> None:
        name = self.highlighted_experiment()
        if name == self._yaml_for:
            return
        self._yaml_for = name
        title = self.query_one("#exp-title", Static)
        yaml_view = self.query_one("#yaml", Static)
        if name is None:
            title.update(Text("no experiment matches the filter" if self.experiments_loaded else "loading…",
                              style="dim"))
            yaml_view.update("")
            self.yaml_text = ""
            return
        row = next((r for r in self.experiments if r["name"] == name), None)
        try:
            cfg = load_config(row["path"] if row else name, [], self.ws.configs)
            text = cfg.to_yaml()
        except ConfigError as exc:
            self.yaml_text = str(exc)
            title.update(Text(f"{name}: invalid config", style="bold red"))
            yaml_view.update(Text(str(exc), style="red"))
            return
        head = Text(name, style="bold")
        if row:
            path = Path(row["path"])
            head.append(f"  {path.parent.name}/{path.name}", style="dim")
        title.update(head)
        self.yaml_text = text
        bg = self.theme_variables.get("surface") or "default"
        yaml_view.update(Syntax(text, "yaml", theme="monokai", background_color=bg, word_wrap=True))

    @on(DataTable.RowHighlighted, "#exp-table")
    def _exp_highlighted(self) -> None:
        self._show_yaml()
        self.update_bindings()

    @on(DataTable.RowSelected, "#exp-table")
    def _exp_selected(self) -> None:
        self.action_launch()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.fill_experiments()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.action_focus_experiments()

    def action_focus_experiments(self) -> None:
        self.query_one("#exp-table", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#tabs", TabbedContent).active = "experiments"
        self.query_one("#filter", Input).focus()

    def action_mark(self) -> None:
        tab = self.active_tab
        if tab == "experiments":
            name = self.highlighted_experiment()
            if name is None:
                return
            self.marked.symmetric_difference_update({name})
            self.fill_experiments()
            table = self.query_one("#exp-table", DataTable)
            if table.cursor_row < table.row_count - 1:
                table.move_cursor(row=table.cursor_row + 1, animate=False)
        elif tab == "leaderboard":
            rid = self._highlighted_key("#lb-table")
            if rid is None:
                return
            self.lb_marked.symmetric_difference_update({rid})
            self.fill_leaderboard()
            table = self.query_one("#lb-table", DataTable)
            if table.cursor_row < table.row_count - 1:
                table.move_cursor(row=table.cursor_row + 1, animate=False)
        self.update_bindings()

    # ------------------------------------------------------------------ launching + queue
    def action_launch(self) -> None:
        if self.active_tab != "experiments":
            self.action_show_tab("experiments")
        if self.marked:
            names = [r["name"] for r in self.experiments if r["name"] in self.marked]
        else:
            name = self.highlighted_experiment()
            if name is None:
                self.notify("No experiment highlighted", severity="warning")
                return
            names = [name]
        self.launch_names(names)

    def launch_names(self, names: list[str]) -> None:
        bad = [r["name"] for r in self.experiments if r["name"] in names and r.get("error")]
        if bad:
            self.notify(f"invalid config: {', '.join(bad)} (see the YAML pane)", severity="error")
            return
        self.push_screen(LaunchScreen(names, self.ws.configs, self.ws.data_root, gpus=len(self.gpus)),
                         self._launch_planned)

    async def _launch_planned(self, plan: LaunchPlan | None) -> None:
        if plan is None:
            return
        await self.queue_plan(plan)

    async def queue_plan(self, plan: LaunchPlan, activate: bool = True) -> list[int]:
        """Put the plan's experiments in the persistent queue and start what the slots allow."""
        ids = [self.store.enqueue(name, plan.overrides, plan.nproc) for name in plan.names]
        if activate and ids:
            self._activate.add(ids[0])
        if len(plan.names) > 1:
            self.marked.clear()
        started = await self.pump_queue()
        waiting = [i for i in ids if i not in started]
        if waiting:
            busy = self.slots_used()
            self.notify(f"{len(waiting)} queued: starts when a slot frees ({busy}/{self.max_parallel} busy)",
                        title="Queued", timeout=5)
        self.refresh_store()
        return ids

    def _ended(self) -> set[str]:
        """Runs whose `end` event was read: done, even while their process is still exiting."""
        return {rid for rid, v in self.views.items() if v.state.end is not None}

    def slots_used(self) -> int:
        live = {r["run_id"] for r in self.runs_cache if r["status"] == "running"}
        live |= {rid for rid, p in self.procs.items() if p.poll() is None}
        return len(live - self._ended())

    async def pump_queue(self) -> list[int]:
        """Start queued items while slots are free. Returns the queue ids started."""
        started: list[int] = []
        self.runs_cache = self.store.runs()
        free = self.max_parallel - self.slots_used()
        if free <= 0:
            return started
        for item in self.store.queued():
            if free <= 0:
                break
            nproc = int(item.get("nproc") or 1)
            try:
                slot = self.scheduler.allocate(nproc)
            except ConfigError as exc:  # more processes than visible GPUs: it could never start
                self.store.fail_queued(item["id"])
                self.notify(f"queued {item['config']} cannot start: {exc}", severity="error", timeout=10)
                continue
            if slot is None:
                break  # not enough free GPUs: the queue keeps its order
            if not self.store.claim_queued(item["id"], "starting"):
                self.scheduler.release(slot)
                continue  # another app instance took it
            try:
                launched = launch(self.ws, LaunchRequest(item["config"], list(item["overrides"])), nproc=nproc,
                                  env=slot.env())
            except (ConfigError, OSError) as exc:
                self.scheduler.release(slot)
                self.store.fail_queued(item["id"])
                self.notify(f"queued {item['config']} cannot start: {exc}", severity="error", timeout=10)
                continue
            self.store.set_queue_run_id(item["id"], launched.run_id)
            self.procs[launched.run_id] = launched.process
            self.slots[launched.run_id] = slot
            started.append(item["id"])
            free -= 1
            activate = item["id"] in self._activate
            self._activate.discard(item["id"])
            await self.open_run(launched.run_id, activate)
            self.notify(f"started {launched.run_id}", title="Launched", timeout=4)
        if started:
            self.refresh_store()
        return started

    def cancel_queue_item(self, item_id: int) -> None:
        self.store.cancel_queued(item_id)
        self.refresh_store()
        self.notify(f"removed #{item_id} from the queue")

    # ------------------------------------------------------------------ run tabs
    async def open_run(self, run_id: str, activate: bool = True) -> RunView:
        tabs = self.query_one("#tabs", TabbedContent)
        pane_id = pane_id_for(run_id)
        view = self.views.get(run_id)
        if view is None:
            view = RunView(run_id, self.ws.home / run_id, id=f"view-{pane_id}")
            self.views[run_id] = view
            await tabs.add_pane(TabPane(self._tab_label(run_id), view, id=pane_id))
        if activate:
            tabs.active = pane_id
            view.focus_table()
        self.update_bindings()
        return view

    def _tab_label(self, run_id: str) -> Content:
        view = self.views.get(run_id)
        status = view.status if view else "starting"
        label = Text(f"{status_text(status).plain.split()[0]} ", style=STATUS_RICH.get(status, ""))
        label.append(short_run(run_id))
        return Content.from_rich_text(label)

    def _update_tab_label(self, run_id: str) -> None:
        try:
            self.query_one("#tabs", TabbedContent).get_tab(pane_id_for(run_id)).label = self._tab_label(run_id)
        except Exception:  # noqa: BLE001 - tab closed meanwhile
            pass

    async def action_close_tab(self) -> None:
        rid = self.current_view_run()
        if rid is None:
            return
        tabs = self.query_one("#tabs", TabbedContent)
        await tabs.remove_pane(pane_id_for(rid))
        self.views.pop(rid, None)
        tabs.active = "runs"
        self.query_one("#runs-table", DataTable).focus()

    @property
    def active_tab(self) -> str:
        try:
            return self.query_one("#tabs", TabbedContent).active
        except Exception:  # noqa: BLE001 - during start-up/shutdown
            return ""

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        tabs.active = tab
        target = {"experiments": "#exp-table", "runs": "#runs-table", "leaderboard": "#lb-table"}.get(tab)
        if target:
            self.query_one(target, DataTable).focus()

    def _cycle_tab(self, step: int) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        ids = list(FIXED_TABS) + [pane_id_for(r) for r in self.views]
        try:
            i = ids.index(tabs.active)
        except ValueError:
            i = 0
        target = ids[(i + step) % len(ids)]
        if target in FIXED_TABS:
            self.action_show_tab(target)
        else:
            tabs.active = target
            for rid, view in self.views.items():
                if pane_id_for(rid) == target:
                    view.focus_table()

    def action_next_tab(self) -> None:
        self._cycle_tab(1)

    def action_prev_tab(self) -> None:
        self._cycle_tab(-1)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.update_bindings()

    def current_view_run(self) -> str | None:
        active = self.active_tab
        for rid in self.views:
            if pane_id_for(rid) == active:
                return rid
        return None

    def _highlighted_key(self, selector: str) -> str | None:
        table = self.query_one(selector, DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001
            return None

    def current_run(self) -> str | None:
        """The run the run actions apply to: the open run tab, or the highlighted row."""
        tab = self.active_tab
        if tab == "runs":
            key = self._highlighted_key("#runs-table")
            return None if key is None or key.startswith("queue:") else key
        if tab == "leaderboard":
            return self._highlighted_key("#lb-table")
        return self.current_view_run()

    def run_status(self, run_id: str) -> str:
        view = self.views.get(run_id)
        if view is not None and view.loaded:
            return view.status
        if run_id in self.procs and self.procs[run_id].poll() is None:
            return "starting"
        for r in self.runs_cache:
            if r["run_id"] == run_id:
                return r["status"]
        return "unknown"

    # ------------------------------------------------------------------ stop / resume / delete
    def action_stop(self) -> None:
        rid = self.current_run()
        if rid is None:
            self.notify("No run selected", severity="warning")
            return
        self.stop_run(rid)

    def stop_run(self, run_id: str) -> bool:
        status = self.run_status(run_id)
        if status not in ("running", "starting", "stopping"):
            self.notify(f"{short_run(run_id)} is not running ({status})", severity="warning")
            return False
        pid = None
        row = next((r for r in self.runs_cache if r["run_id"] == run_id), None)
        view = self.views.get(run_id)
        if view is not None and view.state.pid:
            pid = view.state.pid
        elif row is not None and row.get("pid"):
            pid = row["pid"]
        elif run_id in self.procs:
            pid = self.procs[run_id].pid
        if not pid or not request_stop(int(pid)):
            self.notify(f"{short_run(run_id)}: its process is gone", severity="warning")
            return False
        if view is not None:
            view.set_external("stopping")
            self._update_tab_label(run_id)
        self.notify(f"stopping {short_run(run_id)}: it writes a checkpoint, then ends", title="Stop", timeout=4)
        self.update_bindings()
        return True

    async def action_resume(self) -> None:
        rid = self.current_run()
        if rid is None:
            self.notify("No run selected", severity="warning")
            return
        await self.resume_run(rid)

    async def resume_run(self, run_id: str) -> bool:
        status = self.run_status(run_id)
        if status not in RESUMABLE:
            self.notify(f"{short_run(run_id)} cannot be resumed ({status})", severity="warning")
            return False
        if not (self.ws.home / run_id / "config.yaml").is_file():
            self.notify(f"{short_run(run_id)}: no config.yaml in its run directory", severity="error")
            return False
        # a DDP run continues with as many processes as it had: it needs as many GPUs again
        _, nproc = recorded_processes(self.ws.home / run_id)
        try:
            slot = self.scheduler.allocate(nproc)
        except ConfigError as exc:  # it had more GPUs than are visible now
            self.notify(f"{short_run(run_id)} cannot be resumed: {exc}", severity="error", timeout=10)
            return False
        try:
            launched = resume_engine(self.ws, run_id, env=(slot or Slot()).env())
        except ConfigError as exc:
            if slot is not None:
                self.scheduler.release(slot)
            self.notify(f"{short_run(run_id)} cannot be resumed: {exc}", severity="error", timeout=10)
            return False
        slot = slot or Slot()
        self.procs[run_id] = launched.process
        if slot.gpus or not self.gpus:
            self.slots[run_id] = slot
        view = await self.open_run(run_id, True)
        if view.loaded:  # until the new `start` event arrives, the run is starting again
            view.state.end = None
            view.state.status = "starting"
            view.state.status_dirty = True
            view.refresh_view()
        view.set_external(None)
        self._update_tab_label(run_id)
        self.notify(f"resuming {short_run(run_id)} from its last checkpoint", title="Resume", timeout=4)
        self.update_bindings()
        return True

    def action_delete(self) -> None:
        if self.active_tab == "runs":
            key = self._highlighted_key("#runs-table")
            if key and key.startswith("queue:"):
                self.cancel_queue_item(int(key.split(":", 1)[1]))
                return
        rid = self.current_run()
        if rid is None:
            self.notify("No run selected", severity="warning")
            return
        status = self.run_status(rid)
        if status in ("running", "starting", "stopping"):
            self.notify(f"{short_run(rid)} is {status}: stop it first (s)", severity="error")
            return

        async def confirmed(yes: bool | None) -> None:
            if yes:
                await self.delete_run(rid)

        self.push_screen(ConfirmScreen("Delete run?", f"{rid}\n\nIts directory ({self.ws.home / rid}), checkpoints "
                                       "and store rows are removed. This cannot be undone."), confirmed)

    async def delete_run(self, run_id: str) -> None:
        run_dir = self.ws.home / check_run_id(run_id)
        if run_id in self.views:
            tabs = self.query_one("#tabs", TabbedContent)
            await tabs.remove_pane(pane_id_for(run_id))
            self.views.pop(run_id, None)
        if run_dir.is_dir() and run_dir.resolve().parent == self.ws.home.resolve():
            shutil.rmtree(run_dir, ignore_errors=True)
        self.store.delete_run(run_id)
        self.lb_marked.discard(run_id)
        self.refresh_store()
        self.notify(f"deleted {run_id}", title="Delete", timeout=4)

    # ------------------------------------------------------------------ runs tab
    def fill_runs(self) -> None:
        import time

        rows = []
        for q in self.queue_cache:
            src = next((o.split("=", 1)[1] for o in reversed(q["overrides"]) if o.startswith("data.source=")), "-")
            rows.append((f"queue:{q['id']}", [Text("◷ queued", style="bold magenta"), Text(f"queue #{q['id']}", style="dim"),
                                              q["config"], src, f"{q['nproc']} procs" if q.get("nproc", 1) > 1 else "-",
                                              "-", "-", "-",
                                              time.strftime("%m-%d %H:%M", time.localtime(q["created_at"]))]))
        for r in self.runs_cache:
            status = self.run_status(r["run_id"]) if r["run_id"] in self.views else r["status"]
            src = r.get("data_source") or "-"
            started = time.strftime("%m-%d %H:%M", time.localtime(r["started_at"])) if r.get("started_at") else "-"
            rows.append((r["run_id"], [status_text(status), r["run_id"], r["config_name"],
                                       Text(src, style="magenta" if src == "synthetic" else ""), r.get("device") or "-",
                                       f"{r.get('epochs_done') or 0}/{r.get('epochs_total') or '?'}",
                                       fmt_acc(r.get("best_acc")), fmt_duration(r.get("wall_s")), started]))
        _table_sync(self.query_one("#runs-table", DataTable), rows)
        hint = "enter open · s stop · r resume · d delete (or cancel a queued item)"
        if not rows:
            hint = "no runs yet: pick an experiment in the Experiments tab (1) and press l"
        show(self.query_one("#runs-hint", Static), hint)

    @on(DataTable.RowSelected, "#runs-table")
    async def _runs_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key and not key.startswith("queue:"):
            await self.open_run(key, True)

    @on(DataTable.RowHighlighted, "#runs-table, #lb-table")
    def _any_highlighted(self) -> None:
        self.update_bindings()

    # ------------------------------------------------------------------ leaderboard tab
    def _lb_columns(self) -> None:
        table = self.query_one("#lb-table", DataTable)
        table.clear(columns=True)
        col, desc = self.lb_sort
        for key, label in LB_COLUMNS:
            if key == col:
                label = f"{label} {'▼' if desc else '▲'}"
            table.add_column(label, key=key)

    def fill_leaderboard(self) -> None:
        rows = leaderboard_rows(self.store.leaderboard())
        self.lb_rows = rows
        col, desc = self.lb_sort

        def sort_key(r: dict):
            v = r.get(col)
            if col == "epochs":
                v = int(str(v).split("/")[0] or 0)
            missing = v is None
            if isinstance(v, str):
                v = v.lower()
            return (missing, v if not missing else 0)

        groups = []
        for synthetic in (False, True):
            group = [r for r in rows if (r["data"] != "cifar100") == synthetic]
            present = [r for r in group if r.get(col) is not None]
            absent = [r for r in group if r.get(col) is None]
            present.sort(key=sort_key, reverse=desc)
            groups += present + absent
        out = []
        for r in groups:
            syn = r["data"] != "cifar100"
            diff = r["diff"]
            out.append((r["run_id"], [
                Text("●", style="bold magenta") if r["run_id"] in self.lb_marked else Text(" "),
                Text(f"S{r['rank']}" if syn else str(r["rank"]), style="magenta" if syn else "bold"),
                r["config"],
                Text("synthetic", style="italic magenta") if syn else Text(r["data"], style="cyan"),
                Text(fmt_acc(r["best_acc"]), style="bold"),
                fmt_acc(r["reference"]),
                Text("-" if diff is None else f"{diff:+.2f}", style="" if diff is None else ("green" if diff >= 0 else "red")),
                str(r["best_epoch"] or "-"), r["epochs"], r["wall"], status_text(r["status"] or "?"), r["run_id"],
            ]))
        _table_sync(self.query_one("#lb-table", DataTable), out)
        n_syn = len([r for r in rows if r["data"] != "cifar100"])
        note = Text()
        if not rows:
            note.append("No results yet. Finished epochs of every run appear here, best accuracy first.", style="dim")
        else:
            note.append(f"{len(rows) - n_syn} CIFAR-100", style="bold cyan")
            note.append(" · ")
            note.append(f"{n_syn} synthetic (S#, ranked apart, not comparable)", style="magenta")
            note.append(f" · sorted by {col} {'desc' if desc else 'asc'} within each group", style="dim")
            if self.lb_marked:
                note.append(f" · {len(self.lb_marked)} marked", style="bold magenta")
            note.append(" · space mark · c compare · o sort · click a header", style="dim")
        show(self.query_one("#lb-note", Static), note)

    def set_sort(self, col: str, desc: bool | None = None) -> None:
        if col == "mark":
            return
        if desc is None:
            same = self.lb_sort[0] == col
            desc = (not self.lb_sort[1]) if same else (col in LB_DESC_FIRST)
        self.lb_sort = (col, desc)
        table = self.query_one("#lb-table", DataTable)
        table.clear(columns=True)
        self._lb_columns()
        self.fill_leaderboard()

    @on(DataTable.HeaderSelected, "#lb-table")
    def _lb_header(self, event: DataTable.HeaderSelected) -> None:
        self.set_sort(event.column_key.value)

    def action_sort(self) -> None:
        keys = [k for k, _ in LB_COLUMNS if k != "mark"]
        i = keys.index(self.lb_sort[0]) if self.lb_sort[0] in keys else -1
        nxt = keys[(i + 1) % len(keys)]
        self.set_sort(nxt, nxt in LB_DESC_FIRST)

    def action_reverse_sort(self) -> None:
        self.set_sort(self.lb_sort[0], not self.lb_sort[1])

    @on(DataTable.RowSelected, "#lb-table")
    async def _lb_selected(self, event: DataTable.RowSelected) -> None:
        await self.open_run(event.row_key.value, True)

    def action_compare(self) -> None:
        ids = [r["run_id"] for r in self.lb_rows if r["run_id"] in self.lb_marked]
        if len(ids) < 2:
            self.notify("Mark two or more runs with space, then press c", severity="warning")
            return
        self.push_screen(self.compare_screen(ids))

    def compare_screen(self, run_ids: list[str]) -> CompareScreen:
        runs = [self.store.run(r) for r in run_ids]
        runs = [r for r in runs if r is not None]
        epochs = {r["run_id"]: self.store.epochs(r["run_id"]) for r in runs}
        return CompareScreen(runs, epochs)

    # ------------------------------------------------------------------ bindings shown per context
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        try:
            top_is_main = self.screen is self.screen_stack[0]
        except (ScreenStackError, IndexError):  # shutting down
            return False
        if not top_is_main:
            # dialogs and the compare screen: their own bindings; of ours only these
            return action not in MAIN_ACTIONS or action in ("quit", "toggle_keys")
        tab = self.active_tab
        is_run_tab = tab not in FIXED_TABS
        if action in ("launch", "filter"):
            return tab == "experiments"
        if action == "mark":
            return tab in ("experiments", "leaderboard")
        if action in ("compare", "sort", "reverse_sort"):
            if tab != "leaderboard":
                return False
            return True if action != "compare" or len(self.lb_marked) >= 2 else None
        if action == "close_tab":
            return is_run_tab
        if action in ("stop", "resume", "delete"):
            if tab == "experiments":
                return False
            if action == "delete" and tab == "runs":
                key = self._highlighted_key("#runs-table")
                if key and key.startswith("queue:"):
                    return True
            rid = self.current_run()
            if rid is None:
                return None
            status = self.run_status(rid)
            if action == "stop":
                return True if status in ("running", "starting") else None
            if action == "resume":
                return True if status in RESUMABLE else None
            return True if status not in ("running", "starting", "stopping") else None
        return True

    def update_bindings(self) -> None:
        """Refresh the footer only when what it shows changes (a footer rebuild is not free)."""
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down
            return
        state = (id(screen), self.active_tab,
                 tuple(self.check_action(a, ()) for a in ("launch", "mark", "filter", "stop", "resume", "delete",
                                                          "compare", "sort", "close_tab")))
        if state != getattr(self, "_bindings_state", None):
            self._bindings_state = state
            self.refresh_bindings()

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    # ------------------------------------------------------------------ quitting
    def live_runs(self) -> list[str]:
        ended = self._ended()
        live = [r["run_id"] for r in self.store.runs() if r["status"] == "running" and r["run_id"] not in ended]
        live += [rid for rid, p in self.procs.items() if p.poll() is None and rid not in live and rid not in ended]
        return live

    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitScreen):
            return
        live = self.live_runs() if self.store else []
        if not live:
            self.exit()
            return

        def chosen(answer: str | None) -> None:
            if answer == "stop":
                for rid in live:
                    self.stop_run(rid)
                self.exit(result="stopped")
            elif answer == "leave":
                self.exit(result="left running")

        self.push_screen(QuitScreen(live, len(self.queue_cache)), chosen)


def run_app(ws: Workspace, *, max_parallel: int | None = None) -> None:
    """Entry point used by `cifar-tui` with no subcommand. max_parallel: runs at a time
    (default CIFAR_TUI_MAX_PARALLEL, else one per visible GPU, else 1)."""
    CifarTUI(ws, max_parallel=max_parallel).run()
