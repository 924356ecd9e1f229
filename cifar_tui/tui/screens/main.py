"""The app's main screen (the tabs). Its footer lists the tab keys first, then the keys of the
focused pane, then the app's own (help, quit), the order they had when every key was the App's."""
from __future__ import annotations

from textual.binding import ActiveBinding, Binding
from textual.screen import Screen

TAB_GROUP = Binding.Group("tabs", compact=True)


class MainScreen(Screen):
    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        bindings = super().active_bindings
        tabs = {k: b for k, b in bindings.items() if b.binding.group == TAB_GROUP}
        return {**tabs, **{k: b for k, b in bindings.items() if k not in tabs}}
