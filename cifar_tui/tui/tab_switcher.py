"""Which of the App's tabs is in front: the fixed tabs, then the study tabs, then the run tabs, in
the order `[` and `]` cycle through. A pane coming to the front catches up with the store and
takes the focus, so its keys work at once."""
from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import TabbedContent

from .panes.experiments import ExperimentsPane
from .panes.leaderboard import LeaderboardPane
from .panes.runs import RunsPane
from .study_tabs import study_pane_id
from .support import pane_id_for

if TYPE_CHECKING:
    from .app import CifarTUI

FIXED_TABS = ("experiments", "runs", "leaderboard")
FIXED_PANES = {"experiments": ExperimentsPane, "runs": RunsPane, "leaderboard": LeaderboardPane}


class TabSwitcher:
    def __init__(self, app: CifarTUI):
        self.app = app

    @property
    def _tabs(self) -> TabbedContent:
        return self.app.query_one("#tabs", TabbedContent)

    @property
    def active(self) -> str:
        try:
            return self._tabs.active
        except Exception:  # noqa: BLE001 - during start-up/shutdown
            return ""

    def active_pane(self):
        """The pane of the tab in front (a fixed pane, a study's or a run's view), or None."""
        tab = self.active
        fixed = FIXED_PANES.get(tab)
        if fixed is not None:
            return self.app.query_one(fixed)
        return self.app.study_tabs.view_in(tab) or self.app.run_tabs.view_in(tab)

    def show(self, tab: str) -> None:
        self._tabs.active = tab
        self.front(self.active_pane())

    def front(self, pane) -> None:
        """A pane comes to the front: it catches up with the store and gets the focus, unless the
        focus is in it already (the filter, say)."""
        if pane is None:
            return
        if hasattr(pane, "redraw"):
            pane.redraw()
        focused = self.app.focused
        if focused is None or pane not in focused.ancestors_with_self:
            pane.focus_main()

    def cycle(self, step: int) -> None:
        ids = [*FIXED_TABS, *map(study_pane_id, self.app.study_tabs.views), *map(pane_id_for, self.app.views)]
        try:
            i = ids.index(self._tabs.active)
        except ValueError:
            i = 0
        self.show(ids[(i + step) % len(ids)])
