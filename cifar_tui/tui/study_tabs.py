"""The app's study tabs: one StudyPane per opened study (a study launched from the TUI opens its
tab, never one tab per run), its label, and the store's changes passed to each."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from textual.widgets import TabbedContent, TabPane

from ..auto_seeds import AutoSpec
from .panes.study import StudyPane

if TYPE_CHECKING:
    from .app import CifarTUI


def study_pane_id(study: str) -> str:
    return "study-" + re.sub(r"[^A-Za-z0-9_-]", "_", study)


def study_tab_label(study: str) -> str:
    return "◆ " + (study if len(study) <= 28 else study[:27] + "…")


class StudyTabs:
    def __init__(self, app: CifarTUI):
        self.app = app
        self.views: dict[str, StudyPane] = {}   # study -> its pane (one tab each)

    @property
    def _tabs(self) -> TabbedContent:
        return self.app.query_one("#tabs", TabbedContent)

    async def open(self, study: str, activate: bool = True, *, planned: list[str] | None = None) -> StudyPane:
        view = self.views.get(study)
        if view is None:
            recorded = self.app.store.study(study) or {}
            auto = AutoSpec.from_dict(recorded.get("spec") or {})
            view = StudyPane(study, kind=recorded.get("kind") or "runs", auto=auto,
                             baseline=auto.vs if auto is not None else None, planned=planned,
                             id=f"view-{study_pane_id(study)}")
            self.views[study] = view
            await self._tabs.add_pane(TabPane(study_tab_label(study), view, id=study_pane_id(study)))
            view._index = self.app.index  # drawn from the index as it is; later changes come through runs_changed
        elif planned:
            view.planned = list(dict.fromkeys([*view.planned, *planned]))
            view.stale = True
        if activate:
            self._tabs.active = study_pane_id(study)
            view.redraw(force=True)
            view.focus_main()
        return view

    async def close(self, study: str) -> None:
        if self.views.pop(study, None) is not None:
            await self._tabs.remove_pane(study_pane_id(study))

    def view_in(self, tab_id: str) -> StudyPane | None:
        return next((v for s, v in self.views.items() if study_pane_id(s) == tab_id), None)

    def runs_changed(self, index, changes) -> None:
        for view in list(self.views.values()):
            view.runs_changed(index, changes)
