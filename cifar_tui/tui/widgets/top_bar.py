"""The app's top line: its name, the workspace (shortened to ~/... and cut with an ellipsis when
the terminal is narrow) and the counts: runs running, items queued, and (when there is room) how
many run at a time on what."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from .text import show


def workspace_text(home: Path) -> Text:
    shown, user_home = str(home), str(Path.home())
    if shown.startswith(user_home + "/"):
        shown = "~" + shown[len(user_home):]
    text = Text("workspace ", style="dim", no_wrap=True, overflow="ellipsis")
    text.append(shown)
    return text


def counts_text(running: int, queued: int, *, at_a_time: int | None = None, gpus: int = 0) -> Text:
    """`▶ 2 running   ◷ 1 queued`, then `   2 at a time on 2 GPUs` when at_a_time is given."""
    counts = Text()
    counts.append(f"▶ {running} running", style="bold cyan" if running else "dim")
    counts.append("   ")
    counts.append(f"◷ {queued} queued", style="bold magenta" if queued else "dim")
    if at_a_time is not None:
        where = f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "CPU"
        counts.append(f"   {at_a_time} at a time on {where}", style="dim")
    return counts


class TopBar(Horizontal):
    def __init__(self, home: Path, **kw):
        super().__init__(**kw)
        self.home = home

    def compose(self) -> ComposeResult:
        yield Static(Text("◆ cifar-tui", style="bold"), id="brand")
        yield Static(workspace_text(self.home), id="workspace")
        yield Static("", id="counts")

    def show_counts(self, running: int, queued: int, *, at_a_time: int | None = None, gpus: int = 0) -> None:
        show(self.query_one("#counts", Static), counts_text(running, queued, at_a_time=at_a_time, gpus=gpus))
