"""The Textual app: pick experiments, launch them in the background, watch them live, compare
them on a leaderboard.

The App composes the panes (panes/), routes what they ask (messages.py) to the run lifecycle
(lifecycle.RunLifecycle, an object it owns: the calls into the run supervisor, cifar_tui.supervisor,
and what follows them; the App is the RunDisplay it shows them on) and to the screens (screens/; the
launch form through launch_forms.LaunchForms), passes the store's changes (runs_index) to the panes,
tells the user when runs end or break (notices.py), and holds the global keys: tabs (1 2 3 [ ]),
help (?), quit (q), the palette (ctrl+p). Each pane holds its own keys; every key and paste goes
through widgets/keys.KeysInOrder first (applied in the order typed).

Runs are separate engine processes: the app only tails their events.jsonl / stdout.log and reads
the SQLite store, so it can quit and re-attach. torch is never imported here.
"""
from __future__ import annotations

from pathlib import Path

from textual import events, on
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from engine.record.status import END_STATUSES
from engine.record.store import Store

from ..workspace import Workspace
from ..supervisor import Supervisor
from . import messages as msg
from .palette import CifarCommands
from .compare_data import compare_groups, compare_runs
from .launch_forms import LaunchForms
from .lifecycle import RunLifecycle
from .notices import Announcer
from .panes.experiments import ExperimentsPane
from .panes.leaderboard import LeaderboardPane
from .panes.run_view import RunView
from .panes.runs import RunsPane
from .auto_driver import AutoDriver
from .run_tabs import FIXED_LABELS, RunTabs
from .runs_index import Changes, RunsIndex
from .screens import CompareScreen, ConfirmScreen, LaunchScreen, MainScreen, QuitScreen
from .screens.main import NARROW  # narrower: a compact footer, the top bar without "N at a time on ..."
from .screens.studies import StudiesScreen, StudyChoice, load_studies
from .study_tabs import StudyTabs
from .tab_switcher import TabSwitcher
from .widgets.gpu_bar import GpuBar
from .widgets.keys import KeysInOrder
from .widgets.text import ANSI_DARK
from .widgets.top_bar import TopBar

class CifarTUI(App):
    """cifar-tui: experiments, live runs, leaderboard. It is the `RunDisplay` its lifecycle shows on."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses elsewhere still find it
    TITLE = "cifar-tui"
    COMMANDS = App.COMMANDS | {CifarCommands}
    COMMAND_PALETTE_BINDING = "ctrl+p"
    ansi_theme_dark = Reactive(ANSI_DARK, init=False)  # magenta is not red (widgets/text.py)

    BINDINGS = [
        # the tabs carry their keys in their labels ("1 Experiments"): the footer keeps its room for the pane's keys
        Binding("1", "show_tab('experiments')", "Experiments", show=False),
        Binding("2", "show_tab('runs')", "Runs", show=False),
        Binding("3", "show_tab('leaderboard')", "Leaderboard", show=False),
        Binding("left_square_bracket", "prev_tab", "Previous tab", show=False),
        Binding("right_square_bracket", "next_tab", "Next tab", show=False),
        Binding("question_mark", "toggle_keys", "Keys"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, ws: Workspace, *, max_parallel: int | None = None, poll_interval: float = 0.25,
                 store_interval: float = 1.0, theme: str = "tokyo-night"):
        super().__init__()
        self.ws = ws
        self.poll_interval = poll_interval
        self.store_interval = store_interval
        self._max_parallel = max_parallel
        self._theme_name = theme
        self.store: Store | None = None        # the index's connection (the supervisor has its own)
        self.index: RunsIndex | None = None
        self.sup: Supervisor | None = None
        self.notices: Announcer | None = None
        self.run_tabs = RunTabs(self)
        self.views = self.run_tabs.views       # run id -> its view (one tab each)
        self.study_tabs = StudyTabs(self)      # study -> its tab (a study's runs get no tab each)
        self.auto_driver = AutoDriver(self)    # --seeds auto studies this TUI decides for
        self.tab_switcher = TabSwitcher(self)  # which tab is in front; [ ] cycle
        self.lifecycle: RunLifecycle | None = None  # start / stop / resume / delete / queue (on mount)
        self.keys = KeysInOrder(self, self._check_bindings)  # every key and paste, applied in the order typed
        self._bindings_state: tuple | None = None
        self.launch_forms: LaunchForms | None = None  # the launch form, opened with the last data choice (on mount)

    def get_default_screen(self) -> Screen:
        return MainScreen(id="_default")

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield TopBar(self.ws.home, id="topbar")
        yield GpuBar([], id="gpu-bar")
        with TabbedContent(id="tabs", initial="experiments"):
            with TabPane(FIXED_LABELS[0], id="experiments"):
                yield ExperimentsPane(self.ws.configs, id="exp-pane")
            with TabPane(FIXED_LABELS[1], id="runs"):
                yield RunsPane(id="runs-pane")
            with TabPane(FIXED_LABELS[2], id="leaderboard"):
                yield LeaderboardPane(id="lb-pane")
        yield Footer()

    @property
    def experiments_pane(self) -> ExperimentsPane:
        return self.query_one(ExperimentsPane)

    @property
    def runs_pane(self) -> RunsPane:
        return self.query_one(RunsPane)

    @property
    def leaderboard_pane(self) -> LeaderboardPane:
        return self.query_one(LeaderboardPane)

    def on_mount(self) -> None:
        if self._theme_name in self.available_themes:
            self.theme = self._theme_name
        self.sub_title = str(self.ws.home)
        self.store = self.ws.store()
        self.index = RunsIndex(self.store)
        self.sup = Supervisor(self.ws, max_parallel=self._max_parallel, shared_queue=True)
        self.lifecycle = RunLifecycle(self.sup, self.index, self, self.auto_driver)
        self.launch_forms = LaunchForms(self.ws, len(self.sup.gpus), self.index, self.lifecycle, self.push_screen)
        self.notices = Announcer(self, self.sup)
        self.gpu_bar.gpus = list(self.sup.gpus)
        self.refresh_store()
        self.call_later(self.lifecycle.reattach)  # live runs get their tabs back; crashed ones are reported
        self.set_interval(self.poll_interval, self.tick, name="poll events")
        self.set_interval(self.store_interval, self.slow_tick, name="store + queue")
        self.experiments_pane.focus_main()
        self.call_later(self.slow_tick)

    def on_unmount(self) -> None:
        if self.sup is not None:
            self.sup.close()
        if self.store is not None:
            self.store.close()

    @property
    def gpu_bar(self) -> GpuBar:
        return self.query_one(GpuBar)

    async def on_event(self, event: events.Event) -> None:
        if not await self.keys.handled(event):
            await super().on_event(event)

    # ------------------------------------------------------------------ periodic work
    def tick(self) -> None:
        try:
            self.run_tabs.poll()
        except NoMatches:  # the app is exiting: the views' widgets are going
            pass

    async def slow_tick(self) -> None:
        """Processes, store changes, queue, statuses, GPU holders: once a second. Reads the store
        only when it changed."""
        if self.store is None:
            return
        try:
            await self.lifecycle.tick()
            self.run_tabs.sync(self.sup.status)
            self.gpu_bar.set_holders(self.lifecycle.gpu_holders())
        except NoMatches:  # the app is exiting: its screen's widgets are already gone
            return

    def refresh_store(self, force: bool = False) -> Changes:
        """Read what changed in the store (nothing when nothing did) and pass it to the panes."""
        changes = self.index.refresh(force)
        if changes:
            for pane in (self.experiments_pane, self.runs_pane, self.leaderboard_pane):
                pane.runs_changed(self.index, changes)
            self.study_tabs.runs_changed(self.index, changes)
            self._draw_counts()
            self.update_bindings()
        self.notices.store_changed(self.index, changes, set(self.views))
        return changes

    def _draw_counts(self) -> None:
        running = len(self.index.running()) + len(self.lifecycle.starting_runs())
        at_a_time = self.sup.max_parallel if self.size.width >= NARROW else None
        self.query_one(TopBar).show_counts(running, len(self.index.queue), at_a_time=at_a_time, gpus=len(self.sup.gpus))

    def on_resize(self) -> None:
        """A narrow terminal: a compact footer without the palette's key (ctrl+p still opens it), fewer
        keys in it (screens.main) and a shorter top bar; the panes fit their own columns."""
        footer = self.query_one(Footer)
        footer.compact = self.size.width < NARROW
        footer.show_command_palette = self.size.width >= NARROW
        if self.index is not None:
            self._draw_counts()
        self.run_tabs.fit()
        self._bindings_state = None
        self.update_bindings()

    @on(msg.RunStatusChanged)
    async def _run_status_changed(self, event: msg.RunStatusChanged) -> None:
        if self.store is not None and event.status in END_STATUSES:
            # the engine writes the store before its `end` event: show the final row now, not a second later
            self.refresh_store()
        self.show_status(event.run_id)

    @on(msg.RunEnded)
    def _run_ended(self, event: msg.RunEnded) -> None:
        self.notices.announce(event.notice)

    # ------------------------------------------------------------------ launching + queue
    @on(msg.LaunchRequested)
    def _launch_requested(self, event: msg.LaunchRequested) -> None:
        self.launch_forms.open(event.names)

    @on(LaunchScreen.DataChosen)
    def _data_chosen(self, event: LaunchScreen.DataChosen) -> None:
        self.launch_forms.data_chosen(event.source)

    @on(msg.RetryLaunch)
    def _retry_launch(self, event: msg.RetryLaunch) -> None:
        self.launch_forms.retry(event.item_id, event.config, event.overrides)

    @on(msg.CancelQueued)
    def _cancel_queued(self, event: msg.CancelQueued) -> None:
        self.lifecycle.cancel_queue_item(event.item_id)

    @on(msg.DismissRefused)
    def _dismiss_refused(self, event: msg.DismissRefused) -> None:
        self.lifecycle.dismiss_refused(event.item_id)

    # ------------------------------------------------------------------ stop / resume / delete
    @on(msg.StopRequested)
    def _stop_requested(self, event: msg.StopRequested) -> None:
        self.lifecycle.stop_run(event.run_id)

    @on(msg.ResumeRequested)
    async def _resume_requested(self, event: msg.ResumeRequested) -> None:
        await self.lifecycle.resume_run(event.run_id)

    @on(msg.DeleteRequested)
    def _delete_requested(self, event: msg.DeleteRequested) -> None:
        rid = event.run_id
        refusal = self.lifecycle.delete_refusal(rid)
        if refusal:
            self.notify(refusal, severity="error")
            return

        async def confirmed(yes: bool | None) -> None:
            if yes:
                await self.lifecycle.delete_run(rid)

        self.push_screen(ConfirmScreen("Delete run?", f"{rid}\n\nIts directory ({self.ws.home / rid}), checkpoints "
                                       "and store rows are removed. This cannot be undone."), confirmed)

    # ------------------------------------------------------------------ compare
    @on(msg.CompareRuns)
    def _compare(self, event: msg.CompareRuns) -> None:
        items = compare_runs(self.store, self.ws.home, event.run_ids)
        self.push_screen(CompareScreen(items, runs=[self.store.run(i.key) for i in items]))

    @on(msg.CompareGroups)
    def _compare_groups(self, event: msg.CompareGroups) -> None:
        self.push_screen(CompareScreen(compare_groups(self.store, self.ws.home, event.groups), groups=event.groups))

    # ------------------------------------------------------------------ studies
    @on(msg.QueueStudy)
    async def _queue_study(self, event: msg.QueueStudy) -> None:
        await self.lifecycle.queue_study(event.plan, spec=event.spec, nproc=event.nproc, command=event.command)

    @on(msg.ShowStudies)
    def _show_studies(self) -> None:
        pane = self.leaderboard_pane

        async def chosen(choice: StudyChoice | None) -> None:
            if choice is not None and choice.tab and choice.study:
                await self.open_study(choice.study, True)
            elif choice is not None:
                pane.show_study(choice.study, choice.by_group)
                self.action_show_tab("leaderboard")

        self.push_screen(StudiesScreen(self.ws, load_studies(self.store), current=pane.study), chosen)

    @on(msg.OpenStudy)
    async def _open_study(self, event: msg.OpenStudy) -> None:
        await self.open_study(event.study, True)

    @on(msg.CloseStudy)
    async def _close_study(self, event: msg.CloseStudy) -> None:
        await self.study_tabs.close(event.study)
        self.action_show_tab("runs")

    @on(msg.DriveStudy)
    def _drive_study(self, event: msg.DriveStudy) -> None:
        error = self.auto_driver.continue_recorded(event.study)
        if error:
            self.notify(error, severity="error", timeout=10)
        else:
            self.notify(f"study {event.study}: this TUI now adds its seeds", title="Seeds auto", timeout=5)

    # ------------------------------------------------------------------ run tabs
    @on(msg.OpenRun)
    async def _open_requested(self, event: msg.OpenRun) -> None:
        await self.open_run(event.run_id, True)

    @on(msg.CloseRun)
    async def _close_requested(self, event: msg.CloseRun) -> None:
        await self.close_run(event.run_id)
        self.action_show_tab("runs")

    # ------------------------------------------------------------------ what the lifecycle shows on (RunDisplay)
    async def open_run(self, run_id: str, activate: bool = True) -> RunView:
        view = await self.run_tabs.open(run_id, activate)
        self.update_bindings()
        return view

    async def close_run(self, run_id: str) -> None:
        await self.run_tabs.close(run_id)

    async def open_study(self, study: str, activate: bool = True, *, planned: list[str] | None = None) -> None:
        await self.study_tabs.open(study, activate, planned=planned)
        self.update_bindings()

    def show_label(self, run_id: str) -> None:
        self.run_tabs.relabel(run_id)

    def show_status(self, run_id: str) -> None:
        self.run_tabs.relabel(run_id)
        try:
            self.runs_pane.status_changed(run_id)
        except NoMatches:  # the app is exiting: the pane is gone already
            return
        self.update_bindings()

    def show_blocked(self, reason: str | None) -> None:
        self.runs_pane.set_blocked(reason)

    def marks_spent(self) -> None:
        self.experiments_pane.clear_marks()

    @property
    def active_tab(self) -> str:
        return self.tab_switcher.active

    def active_pane(self):
        """The pane of the tab in front (a fixed pane, a study's or a run's view), or None."""
        return self.tab_switcher.active_pane()

    def current_view_run(self) -> str | None:
        view = self.active_pane()
        return view.run_id if isinstance(view, RunView) else None

    def action_show_tab(self, tab: str) -> None:
        self.tab_switcher.show(tab)

    def action_next_tab(self) -> None:
        self.tab_switcher.cycle(1)

    def action_prev_tab(self) -> None:
        self.tab_switcher.cycle(-1)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self) -> None:
        # also a click on a tab: the pane takes the focus, so its keys work at once
        self.tab_switcher.front(self.active_pane())
        self.update_bindings()

    def pane_action(self, action: str) -> None:
        """Run a pane's action on the tab in front (the palette's Stop / Resume / Delete run)."""
        handler = getattr(self.active_pane(), f"action_{action}", None)
        if handler is None:
            self.notify("No run selected", severity="warning")
            return
        handler()

    # ------------------------------------------------------------------ keys shown per context
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("show_tab", "prev_tab", "next_tab"):
            try:  # the tab keys belong to the main screen, not to the compare screen over it
                return self.screen is self.screen_stack[0]
            except (ScreenStackError, IndexError):  # shutting down
                return False
        return True

    def update_bindings(self) -> None:
        """Refresh the footer only when what it shows changes (a footer rebuild is not free)."""
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down
            return
        state = (id(screen), tuple((k, b.binding.action, b.enabled) for k, b in screen.active_bindings.items()))
        if state != self._bindings_state:
            self._bindings_state = state
            self.refresh_bindings()

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    # ------------------------------------------------------------------ quitting
    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitScreen):
            return
        live = self.lifecycle.live_runs() if self.lifecycle else []
        if not live:
            self.exit()
            return

        def chosen(answer: str | None) -> None:
            if answer == "stop":
                for rid in live:
                    self.lifecycle.stop_run(rid)
                self.exit(result="stopped")
            elif answer == "leave":
                self.exit(result="left running")

        self.push_screen(QuitScreen(live, len(self.index.queue)), chosen)


def run_app(ws: Workspace, *, max_parallel: int | None = None) -> None:
    """Entry point used by `cifar-tui` with no subcommand. max_parallel: runs at a time
    (default CIFAR_TUI_MAX_PARALLEL, else one per visible GPU, else 1)."""
    CifarTUI(ws, max_parallel=max_parallel).run()
