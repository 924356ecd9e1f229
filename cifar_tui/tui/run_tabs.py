"""The app's run tabs: one RunView per opened run, its tab label (status icon + short id), and the
supervisor's status passed to each view once a second (starting, stopping, queued, stalled, crashed:
what the events alone do not say)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from rich.text import Text
from textual.content import Content
from textual.widgets import TabbedContent, TabPane

from engine.record.status import STARTING

from .panes.run_view import RunView
from .support import STATUS_RICH, pane_id_for, short_run
from .widgets.text import status_text

if TYPE_CHECKING:
    from .app import CifarTUI


FIXED_LABELS = ("1 Experiments", "2 Runs", "3 Leaderboard")  # the App's first three tabs
TAB_PADDING = 2          # a Tab's cells around its label
MIN_LABEL = 6            # "✔ 1a2b": the status and the run's own four hex digits
FULL = 1000


def fit_name(name: str, width: int) -> str:
    """`config·1a2b` in `width` cells: the config shortened with an ellipsis, else the hex alone."""
    if len(name) <= width:
        return name
    config, dot, tail = name.rpartition("·")
    if not dot:
        return name[:max(1, width - 1)] + "…"
    keep = width - len(tail) - 2  # "…·"
    return f"{config[:keep]}…·{tail}" if keep >= 3 else tail


class RunTabs:
    def __init__(self, app: CifarTUI):
        self.app = app
        self.views: dict[str, RunView] = {}    # run id -> its view (one tab each)
        self.label_width = FULL                # the most cells a run tab's label takes (fit())

    @property
    def _tabs(self) -> TabbedContent:
        return self.app.query_one("#tabs", TabbedContent)

    async def open(self, run_id: str, activate: bool) -> RunView:
        view = self.views.get(run_id)
        pane_id = pane_id_for(run_id)
        if view is None:
            view = RunView(run_id, self.app.ws.home / run_id, id=f"view-{pane_id}")
            self.views[run_id] = view
            await self._tabs.add_pane(TabPane(self.label(run_id), view, id=pane_id))
            self.fit()
        if activate:
            self._tabs.active = pane_id
            view.focus_main()
        return view

    async def close(self, run_id: str) -> None:
        if self.views.pop(run_id, None) is not None:
            await self._tabs.remove_pane(pane_id_for(run_id))
            self.fit()

    def fit(self) -> None:
        """Run tab labels short enough that the whole tab bar fits the terminal: it scrolls only when
        even `✔ 1a2b` labels do not fit, and never while they do (a scrolled bar hid "1 Experiments")."""
        if not self.views:
            return
        room = self.app.size.width - sum(len(label) + TAB_PADDING for label in FIXED_LABELS) - 1
        budget = max(MIN_LABEL, room // len(self.views) - TAB_PADDING)
        if budget != self.label_width:
            self.label_width = budget
            for run_id in self.views:
                self.relabel(run_id)

    def view_in(self, tab_id: str) -> RunView | None:
        return next((v for rid, v in self.views.items() if pane_id_for(rid) == tab_id), None)

    def label(self, run_id: str) -> Content:
        view = self.views.get(run_id)
        status = view.status if view else STARTING
        label = Text(f"{status_text(status).plain.split()[0]} ", style=STATUS_RICH.get(status, ""))
        label.append(fit_name(short_run(run_id), self.label_width - 2))
        return Content.from_rich_text(label)

    def relabel(self, run_id: str) -> None:
        try:
            self._tabs.get_tab(pane_id_for(run_id)).label = self.label(run_id)
        except Exception:  # noqa: BLE001 - tab closed meanwhile
            pass

    def poll(self) -> None:
        """Tail every open run's events (bounded reads); cheap enough for 4 Hz."""
        for view in list(self.views.values()):
            view.poll()

    def sync(self, status_of: Callable[[str], str]) -> None:
        """Each view gets the supervisor's status of its run (`status_of`: Supervisor.status) after
        reading its latest events; a changed status relabels its tab."""
        for rid, view in list(self.views.items()):
            view.poll()  # an end event read now wins over a live status said before it
            if view.set_supervised(status_of(rid)):
                self.relabel(rid)
