"""What the panes and screens ask of the App. A pane never starts, stops or deletes a run itself: it
posts one of these; the App routes it to the run supervisor (`cifar_tui.supervisor.Supervisor`) and
the screens."""
from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from engine.notify import Notice


class RunMessage(Message):
    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id


class LaunchRequested(Message):
    """Open the launch form for these experiments (config names)."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names


class OpenRun(RunMessage):
    """Open (or bring to the front) the run's tab."""


class CloseRun(RunMessage):
    """Close the run's tab (the run keeps going)."""


class StopRequested(RunMessage):
    """Stop the run gracefully."""


class ResumeRequested(RunMessage):
    """Resume the run from its last checkpoint."""


class DeleteRequested(RunMessage):
    """Delete the run (the App asks first)."""


class CancelQueued(Message):
    """Remove a queued item."""

    def __init__(self, item_id: int):
        super().__init__()
        self.item_id = item_id


class DismissRefused(Message):
    """Put away a launch that was refused before it started (it is no longer listed)."""

    def __init__(self, item_id: int):
        super().__init__()
        self.item_id = item_id


class RetryLaunch(Message):
    """Open the launch form again for a refused launch (`config` with its `overrides` filled in); what
    is launched from it replaces the refused item."""

    def __init__(self, item_id: int, config: str, overrides: list[str]):
        super().__init__()
        self.item_id = item_id
        self.config = config
        self.overrides = overrides


class CompareRuns(Message):
    """Show the compare screen for these runs."""

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids = run_ids


class RunStatusChanged(RunMessage):
    """A run view's shown status changed (the App updates the tab label, the lists, the footer)."""

    def __init__(self, run_id: str, status: str):
        super().__init__(run_id)
        self.status = status


class RunEnded(RunMessage):
    """A run view read the run's `end` event as it came (not from the history): the App tells the user."""

    def __init__(self, run_id: str, notice: Notice):
        super().__init__(run_id)
        self.notice = notice


class QueueStudy(Message):
    """Queue a study from the launch form: `plan` (cifar_tui.sweep.Plan: the grid times the seeds,
    each run with its group), recorded with `spec` and `command`; each run of `nproc` processes."""

    def __init__(self, plan, spec: dict, nproc: int = 1, command: str | None = None):
        super().__init__()
        self.plan = plan
        self.spec = spec
        self.nproc = nproc
        self.command = command


class CompareGroups(Message):
    """Show the compare screen for these groups (`studies.group_stats` rows)."""

    def __init__(self, groups: list[dict]):
        super().__init__()
        self.groups = groups


class ShowStudies(Message):
    """Open the studies screen (its choice filters the leaderboard)."""


class StudyMessage(Message):
    def __init__(self, study: str):
        super().__init__()
        self.study = study


class OpenStudy(StudyMessage):
    """Open (or bring to the front) the study's tab."""


class CloseStudy(StudyMessage):
    """Close the study's tab (its runs keep going)."""


class DriveStudy(StudyMessage):
    """Decide a `--seeds auto` study's next runs from this TUI (tui/auto_driver)."""
