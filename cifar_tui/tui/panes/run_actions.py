"""The stop / resume / delete keys of the panes that have a current run (runs list, leaderboard,
run view). Each pane lists RUN_BINDINGS in its own BINDINGS; this mixin decides when they apply
and posts the request."""
from __future__ import annotations

from textual.binding import Binding

from engine.record.status import LIVE, RESUMABLE, RUNNING, STALLED, STARTING

from ..messages import DeleteRequested, ResumeRequested, StopRequested
from ..support import short_run

RUN_BINDINGS = [
    Binding("s", "stop", "Stop"),
    Binding("r", "resume", "Resume"),
    Binding("d", "delete", "Delete"),
]
STOPPABLE = (RUNNING, STALLED, STARTING)  # stopping: asked already


def run_action_state(action: str, status: str) -> bool:
    """May `action` (stop, resume, delete) act on a run of this status?"""
    if action == "stop":
        return status in STOPPABLE
    if action == "resume":
        return status in RESUMABLE
    return status not in LIVE


class RunActions:
    """Mixin for a Widget with `current_run()`: s / r / d enabled by the run's status (shown
    dimmed when they cannot act), and posted as messages to the App."""

    def current_run(self) -> str | None:
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in ("stop", "resume", "delete"):
            return True
        rid = self.current_run()
        if rid is None:
            return None
        return True if run_action_state(action, self.app.lifecycle.run_status(rid)) else None

    def explain_disabled(self, action: str, parameters: tuple[object, ...]) -> str | None:
        """Why a dimmed s / r / d does nothing now (the App says it when the key is pressed)."""
        rid = self.current_run()
        if rid is None or action not in ("stop", "resume", "delete"):
            return None
        status = self.app.lifecycle.run_status(rid)
        return {"stop": f"s stops a live run: {short_run(rid)} is {status}",
                "resume": f"r resumes a stopped, failed or crashed run: {short_run(rid)} is {status}",
                "delete": f"d deletes an ended run: {short_run(rid)} is {status} (s stops it first)"}[action]

    def _current_or_warn(self) -> str | None:
        rid = self.current_run()
        if rid is None:
            self.notify("No run selected", severity="warning")
        return rid

    def action_stop(self) -> None:
        if rid := self._current_or_warn():
            self.post_message(StopRequested(rid))

    def action_resume(self) -> None:
        if rid := self._current_or_warn():
            self.post_message(ResumeRequested(rid))

    def action_delete(self) -> None:
        if rid := self._current_or_warn():
            self.post_message(DeleteRequested(rid))
