"""The launch form as the App opens it: for the experiments asked for, or again for a refused launch
(its settings filled in, its error shown), each time starting from the data source chosen last;
the plan it returns goes to the run lifecycle. A study posted from the form reaches the App as a
message (QueueStudy) instead."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .screens.launch import LaunchPlan, LaunchScreen

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .lifecycle import RunLifecycle
    from .runs_index import RunsIndex


class LaunchForms:
    def __init__(self, ws: Workspace, gpus: int, index: RunsIndex, lifecycle: RunLifecycle,
                 push_screen: Callable):
        self.ws = ws
        self.gpus = gpus              # the GPUs a launch may ask for (the supervisor's)
        self.index = index
        self.lifecycle = lifecycle
        self.push_screen = push_screen  # App.push_screen(screen, callback)
        self.chosen_data: str | None = None  # the last data choice in a form of this app

    def last_data(self) -> str | None:
        """The data source chosen last: in a launch form of this app, else the newest run's."""
        if self.chosen_data is None and self.index.runs:
            return self.index.runs[self.index.newest_first()[0]].get("data_source")
        return self.chosen_data

    def data_chosen(self, source: str | None) -> None:
        if source is not None:
            self.chosen_data = source

    def _form(self, names: list[str], **kw) -> LaunchScreen:
        return LaunchScreen(names, self.ws.configs, self.ws.data_root, gpus=self.gpus, data=self.last_data(), **kw)

    def open(self, names: list[str]) -> None:
        async def planned(plan: LaunchPlan | None) -> None:
            if plan is not None:
                await self.lifecycle.queue_plan(plan)

        self.push_screen(self._form(names), planned)

    def retry(self, item_id: int, config: str, overrides: list[str]) -> None:
        """The form again, with the refused launch's settings to change; what it launches replaces
        the refused item (and its tab)."""
        item = self.lifecycle.refused_item(item_id) or {"id": item_id}
        form = self._form([config], overrides=overrides, note=item.get("error"))

        async def done(plan: LaunchPlan | None) -> None:
            if plan is not None:
                await self.lifecycle.queue_plan(plan)
            if form.launched:
                await self.lifecycle.retried(item)

        self.push_screen(form, done)
