"""Telling the person at the TUI when a run completes, fails, is stopped, stalls or crashes: a
Textual notification and the terminal bell, for the statuses the workspace's watch settings
notify on (watch.yaml `notify.statuses`).

Where the news comes from (each is shown once):
- a run view that reads an `end` event as it arrives (`RunEnded`, engine.notify.notice_from_end);
- the store, for a run without an open view that was live and now has an end status;
- the supervisor's `alerts()`: runs that stalled or crashed (it also sends the webhook and the
  desktop notification once per workspace; the engine sends its own end's: nothing is sent here).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.notify import Notice, notice_from_row
from engine.record.status import CRASHED, END_STATUSES, STALLED
from engine.watch_config import watch_settings

from .runs_index import Changes, RunsIndex

if TYPE_CHECKING:
    from textual.app import App

    from ..supervisor import Supervisor

TIMEOUT_S = {"information": 6, "warning": 10, "error": 15}


class Announcer:
    def __init__(self, app: App, sup: Supervisor):
        self.app = app
        self.sup = sup
        self.shown: list[Notice] = []        # what was announced (tests, the palette's history)
        self._seen: set[tuple[str, str, float | None]] = set()
        self._live: set[str] = set()         # runs live at the last look
        self._opened = False

    def announce(self, notice: Notice) -> None:
        key = (notice.run_id, notice.status, notice.t if notice.status in END_STATUSES else None)
        if key in self._seen or not watch_settings(self.sup.ws.home).notifies(notice.status):
            return
        self._seen.add(key)
        self.shown.append(notice)
        self.app.notify(notice.message, title=notice.title, severity=notice.severity,
                        timeout=TIMEOUT_S.get(notice.severity, 8))
        self.app.bell()

    def store_changed(self, index: RunsIndex, changes: Changes, with_view: set[str]) -> None:
        """After a refresh of the index: ends of runs nobody watches in a tab, and the supervisor's alerts."""
        live = index.running()
        for rid in self._live - live:
            row = index.runs.get(rid)
            if row is not None and rid not in with_view and row["status"] in END_STATUSES:
                self.announce(notice_from_row(row, row["status"]))
        self._live = live
        if not changes.runs and self._opened:
            return
        rows = [index.runs[rid] for rid in changes.runs if index.runs[rid]["status"] in (STALLED, CRASHED)]
        alerts = self.sup.alerts(rows)
        if not self._opened:  # crashes found on opening: the App says them in one line
            self._opened = True
            alerts = [a for a in alerts if a.status != CRASHED]
        for notice in alerts:
            self.announce(notice)
