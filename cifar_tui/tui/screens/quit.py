"""Quitting while runs train: leave them running, stop them, or stay."""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static


class QuitScreen(ModalScreen[str | None]):
    """Runs are still going: leave them running, stop them, or stay."""

    BINDINGS = [
        Binding("l", "answer('leave')", "Leave running"),
        Binding("s", "answer('stop')", "Stop them"),
        Binding("escape,c", "answer(None)", "Cancel"),
    ]

    def __init__(self, live: list[str], queued: int):
        super().__init__()
        self.live, self.queued = live, queued

    def compose(self) -> ComposeResult:
        n = len(self.live)
        with Vertical(id="dialog", classes="quit-dialog"):
            yield Label(f"{n} run{'s are' if n != 1 else ' is'} still training", classes="dialog-title")
            yield Static("\n".join(f"  ▶ {r}" for r in self.live[:8]) + (f"\n  … and {n - 8} more" if n > 8 else ""),
                         classes="dialog-body")
            note = ("Runs are separate processes: left running, they keep training and this app re-attaches "
                    "when you open it again. Stopping writes a checkpoint; resume later with r.")
            if self.queued:
                note += f" {self.queued} queued run{'s' if self.queued != 1 else ''} will start when the app is open again."
            yield Static(note, classes="dialog-sub")
            with Horizontal(classes="buttons"):
                yield Button("Leave running (l)", variant="primary", id="leave")
                yield Button("Stop them (s)", variant="warning", id="stop")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def action_answer(self, value: str | None) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)
