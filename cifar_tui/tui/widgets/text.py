"""Small drawing helpers shared by the panes."""
from __future__ import annotations

from rich.terminal_theme import TerminalTheme
from rich.text import Text
from textual.widgets import Static

from ..support import STATUS_ICON, STATUS_RICH



# The app's colours for Rich's ANSI names (Textual turns them into RGB with this theme): Textual's
# dark default (Monokai), except magenta. Monokai gives magenta the RGB of its red, so every
# "magenta" of ours (synthetic results, marks, the queue) read as an error; here it is orchid.
ANSI_DARK = TerminalTheme(
    (12, 12, 12), (217, 217, 217),
    [(26, 26, 26), (244, 0, 95), (152, 224, 36), (253, 151, 31), (157, 101, 255), (214, 112, 214), (88, 209, 235),
     (196, 197, 181)],
    [(98, 94, 76), (244, 0, 95), (152, 224, 36), (224, 213, 97), (157, 101, 255), (238, 150, 238), (88, 209, 235),
     (246, 246, 239)],
)

NOT_STARTED = "✖ not started"  # a launch refused before its run started (no run status: nothing ran)


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
