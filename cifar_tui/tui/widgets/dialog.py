"""A dialog box that scrolls when the terminal is too short for it, and says so: its bottom border
reads `▼ more below` while something is out of view (a form's last fields and its buttons, say)."""
from __future__ import annotations

from textual.containers import VerticalScroll

MORE_BELOW = "▼ more below: scroll, or tab to the next field"
MORE_ABOVE = "▲ more above"


class Dialog(VerticalScroll):
    can_focus = False  # the fields inside take the focus; the dialog scrolls to the focused one

    def on_mount(self) -> None:
        self.call_after_refresh(self.update_hint)

    def on_resize(self) -> None:
        self.call_after_refresh(self.update_hint)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.update_hint()

    def watch_virtual_size(self) -> None:
        self.call_after_refresh(self.update_hint)

    def update_hint(self) -> None:
        below = self.scroll_y < self.max_scroll_y - 0.5
        above = self.scroll_y > 0.5
        self.border_subtitle = MORE_BELOW if below else (MORE_ABOVE if above else "")
