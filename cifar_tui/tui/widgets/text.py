"""Small drawing helpers shared by the panes."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..support import STATUS_ICON, STATUS_RICH


def show(static: Static, content: Text | str, layout: bool = True) -> None:
    """Static.update only when the content changed: the app refreshes its tables and hints on
    timers, and each update of a Static costs a layout pass (CPU taken from a training run on the
    same machine: docs/BENCHMARKS.md). Pass layout=False where the widget's size is fixed."""
    if getattr(static, "_shown_content", None) == content:
        return
    static._shown_content = content
    static.update(content, layout=layout)


def status_text(status: str) -> Text:
    return Text(f"{STATUS_ICON.get(status, '?')} {status}", style=STATUS_RICH.get(status, "bold"))


def cell(text: str) -> Text:
    """A plain table cell, as DataTable would make it from a str (no wrapping), without parsing it
    for markup and emoji codes first: a table of thousands of runs makes tens of thousands."""
    return Text(text, no_wrap=True, end="")
