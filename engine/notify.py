"""Notifications: when a run completes, fails, is stopped, stalls or crashes, a webhook (JSON
POST) and a desktop notification (notify-send) tell the person who started it.

Who sends what:
- the engine sends its own end (completed / failed / stopped, pruned if asked): `notify_run_end`,
  called last in the trainer, so headless runs notify too;
- observers (the supervisor, for the CLI and the TUI) see what a process cannot say itself:
  `stalled` (alive, no step) and `crashed` (gone without an end); `claim` makes sure that only one
  observer of the workspace sends each (the `notices` table of the store).

Delivery never blocks or fails a run: it runs in a daemon thread, each attempt with a short
timeout, retried with backoff, all within DELIVERY_BUDGET_S; the caller waits at most that long
(`Delivery.wait`). Where and whether: engine/watch_config.py (watch.yaml, CIFAR_TUI_NOTIFY_URL).

The TUI shows the same `Notice`s: ``notice.title``, ``notice.message``, ``notice.severity``
(Textual's "information" / "warning" / "error").

Webhook body (``Notice.payload()``)::

    {"event": "run_end" | "run_alert", "run_id": ..., "status": ..., "best_acc": 44.1 | null,
     "config_name": ..., "host": ..., "data_source": ..., "epochs_done": ..., "epochs_total": ...,
     "error": ... | null, "detail": ... | null, "run_dir": ..., "t": <unix seconds>,
     "text": "<one line for chat webhooks (Slack, Mattermost)>"}
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .watch_config import WatchSettings, watch_settings

DELIVERY_BUDGET_S = 4.0      # all attempts of one notification, and the longest anyone waits for it
ATTEMPT_TIMEOUT_S = 2.0      # one POST (connect + response)
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)
END_EVENTS = ("completed", "failed", "stopped", "pruned")  # what an engine says of itself
SEVERITY = {"completed": "information", "stopped": "warning", "pruned": "information", "stalled": "warning",
            "failed": "error", "crashed": "error"}


@dataclass(frozen=True)
class Notice:
    run_id: str
    status: str
    config_name: str | None = None
    best_acc: float | None = None
    host: str = field(default_factory=socket.gethostname)
    data_source: str | None = None
    epochs_done: int | None = None
    epochs_total: int | None = None
    error: str | None = None
    detail: str | None = None          # e.g. "no step for 12 min" (stalled)
    run_dir: str | None = None
    t: float = field(default_factory=time.time)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.status, "information")

    @property
    def title(self) -> str:
        return f"{self.config_name or self.run_id} {self.status}"

    @property
    def message(self) -> str:
        parts = [self.run_id]
        if self.best_acc is not None:
            parts.append(f"best {self.best_acc:.2f}%")
        if self.epochs_done is not None:
            parts.append(f"epoch {self.epochs_done}/{self.epochs_total or '?'}")
        if self.error:
            parts.append(self.error)
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts)

    def payload(self) -> dict:
        body = asdict(self)
        body["event"] = "run_end" if self.status in END_EVENTS else "run_alert"
        body["text"] = f"cifar-tui on {self.host}: {self.title}: {self.message}"
        return body


def notice_from_row(row: dict, status: str, detail: str | None = None) -> Notice:
    """A notice about a run from its store row (observers: stalled, crashed)."""
    return Notice(run_id=row["run_id"], status=status, config_name=row.get("config_name"), best_acc=row.get("best_acc"),
                  host=row.get("host") or socket.gethostname(), data_source=row.get("data_source"),
                  epochs_done=row.get("epochs_done"), epochs_total=row.get("epochs_total"), error=row.get("error"),
                  detail=detail, run_dir=row.get("run_dir"))


def notice_from_end(end: dict, start: dict | None = None) -> Notice:
    """A notice from a run's `end` event (and its `start` event for the names): what the TUI shows."""
    start = start or {}
    cfg = start.get("config") or {}
    return Notice(run_id=end.get("run_id") or start.get("run_id") or "?", status=end.get("status") or "failed",
                  config_name=start.get("config_name") or cfg.get("name"), best_acc=end.get("best_acc"),
                  host=start.get("host") or socket.gethostname(), data_source=start.get("data_source"),
                  epochs_done=end.get("epochs_done"), epochs_total=(cfg.get("train") or {}).get("epochs"),
                  error=end.get("error"), t=end.get("t") or time.time())


# ---------------------------------------------------------------- delivery


def post_webhook(url: str, body: dict, *, deadline: float, log: Callable[[str], None] = lambda _: None) -> bool:
    """POST `body` as JSON until a 2xx answer or `deadline` (time.monotonic()); True when delivered.
    Connection errors, timeouts, 408, 429 and 5xx are retried with backoff; other 4xx are not."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode()
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            log(f"webhook {url}: not delivered within {DELIVERY_BUDGET_S:.0f}s ({attempt} attempts)")
            return False
        attempt += 1
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "cifar-tui"})
        try:
            with urllib.request.urlopen(request, timeout=min(ATTEMPT_TIMEOUT_S, remaining)) as response:
                response.read(65536)
            return True
        except urllib.error.HTTPError as exc:
            if exc.code not in (408, 429) and exc.code < 500:
                log(f"webhook {url}: refused with HTTP {exc.code}; not retried")
                return False
            problem = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets, a malformed answer
            problem = str(getattr(exc, "reason", exc)) or type(exc).__name__
        pause = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
        if deadline - time.monotonic() <= pause + 0.05:
            log(f"webhook {url}: not delivered after {attempt} attempts ({problem})")
            return False
        time.sleep(pause)


def desktop_notify(notice: Notice) -> bool:
    """notify-send where there is one and a desktop session to show it; silently nothing otherwise."""
    exe = shutil.which("notify-send")
    if exe is None or not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")):
        return False
    urgency = "critical" if notice.severity == "error" else "normal"
    try:
        proc = subprocess.Popen([exe, "--app-name=cifar-tui", f"--urgency={urgency}", notice.title, notice.message],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait(timeout=DELIVERY_BUDGET_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class Delivery(threading.Thread):
    """One notice on its way (webhook and desktop); `wait()` returns within the budget whatever happens."""

    def __init__(self, notice: Notice, settings: WatchSettings, log: Callable[[str], None]):
        super().__init__(daemon=True, name=f"notify-{notice.run_id}")
        self.notice, self.settings, self.log = notice, settings, log
        self.deadline = time.monotonic() + DELIVERY_BUDGET_S
        self.webhook_ok: bool | None = None
        self.desktop_ok: bool | None = None

    def run(self) -> None:
        try:
            if self.settings.desktop:
                self.desktop_ok = desktop_notify(self.notice)
            if self.settings.notify_url:
                self.webhook_ok = post_webhook(self.settings.notify_url, self.notice.payload(), deadline=self.deadline,
                                               log=self.log)
        except Exception as exc:  # noqa: BLE001 - a notification never takes anything down
            self.log(f"notification failed: {exc}")

    def wait(self) -> "Delivery":
        self.join(max(0.0, self.deadline - time.monotonic()) + 0.1)
        return self


def _stderr_log(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def dispatch(notice: Notice, settings: WatchSettings, *, log: Callable[[str], None] = _stderr_log) -> Delivery | None:
    """Send `notice` in the background if `settings` ask for its status; None when nothing is sent."""
    if not settings.notifies(notice.status) or not (settings.notify_url or settings.desktop):
        return None
    delivery = Delivery(notice, settings, log)
    delivery.start()
    return delivery


def notify_run_end(home: Path, notice: Notice) -> Delivery | None:
    """The engine's last act: send its end and wait for it, DELIVERY_BUDGET_S at most."""
    try:
        delivery = dispatch(notice, watch_settings(home))
        return delivery.wait() if delivery is not None else None
    except Exception as exc:  # noqa: BLE001 - the run has ended as it ended, whatever happens here
        _stderr_log(f"notification not sent: {exc}")
        return None


# ---------------------------------------------------------------- once per workspace

_NOTICES = """CREATE TABLE IF NOT EXISTS notices (
    run_id TEXT NOT NULL, status TEXT NOT NULL, episode TEXT NOT NULL, host TEXT, pid INTEGER, at REAL NOT NULL,
    PRIMARY KEY (run_id, status, episode))"""


def claim(conn: sqlite3.Connection, run_id: str, status: str, episode: Any = "") -> bool:
    """True for the first caller (of any process on the workspace) to claim this notice; the
    episode tells a second stall of the same run (after progress) from the first."""
    conn.execute(_NOTICES)
    cur = conn.execute("INSERT OR IGNORE INTO notices (run_id, status, episode, host, pid, at) VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, status, str(episode), socket.gethostname(), os.getpid(), time.time()))
    return cur.rowcount == 1


def dispatch_once(conn: sqlite3.Connection, notice: Notice, settings: WatchSettings, episode: Any = "", *,
                  log: Callable[[str], None] = _stderr_log) -> Delivery | None:
    """`dispatch` for the first observer that claims (run, status, episode); None for the others."""
    if not settings.notifies(notice.status) or not claim(conn, notice.run_id, notice.status, episode):
        return None
    return dispatch(notice, settings, log=log)
