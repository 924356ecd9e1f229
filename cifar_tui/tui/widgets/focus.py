"""Giving a pane's main widget the focus when its tab comes to the front."""
from __future__ import annotations

from textual.widget import Widget


def focus_now(widget: Widget) -> None:
    """Focus `widget` at once, not after the next refresh as `Widget.focus()` does.

    A tab switch hides the pane in front; a hidden widget that still has the focus hands it to a
    focusable neighbour in its own (hidden) pane, which brings that pane's tab back to the front
    for a moment (Textual's TabbedContent follows the focus). With the focus moved first, nothing
    hidden holds it."""
    if widget.focusable and widget.is_attached:
        widget.screen.set_focus(widget)
    else:  # not mounted or not shown yet: Textual's deferred focus
        widget.focus()
