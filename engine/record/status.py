"""Run status: the one vocabulary and the one function that decides a run's status.

The engine records what it knows (`running` at start, an end status in its `end` event
and store row). Whether a `running` run is still alive is decided by readers, here:
its process on this host, its heartbeat, its last step. Every view (CLI, TUI,
supervisor) calls `effective_status`, on a store row or on an events summary
(`summary_facts`).
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Mapping

QUEUED = "queued"        # waiting in the launch queue (no process yet)
RUNNING = "running"      # process alive, heartbeat fresh
COMPLETED = "completed"  # trained every epoch
STOPPED = "stopped"      # stopped on request (Ctrl-C, `cifar-tui stop`, the TUI), resumable
FAILED = "failed"        # an error ended it (its `end` event says which), resumable
CRASHED = "crashed"      # process gone (or silent) without an `end` event, resumable
STALLED = "stalled"      # process alive but no step for longer than the stall threshold
PRUNED = "pruned"        # ended early by a search (Optuna)
# Launcher-side transients (the supervisor knows them; the store never holds them):
STARTING = "starting"    # spawned, no `start` yet
STOPPING = "stopping"    # a stop was requested, no `end` yet
UNKNOWN = "unknown"      # nothing recorded (no store row, no `start` event)

STATUSES = (QUEUED, RUNNING, COMPLETED, STOPPED, FAILED, CRASHED, STALLED, PRUNED)
END_STATUSES = (COMPLETED, STOPPED, FAILED, PRUNED)        # what an `end` event may say
TERMINAL = END_STATUSES + (CRASHED,)                      # will not change unless resumed
RESUMABLE = (STOPPED, FAILED, CRASHED)
LIVE = (RUNNING, STALLED, STARTING, STOPPING)             # a process exists: never delete, never resume

# Queue item states (the `queue` table's `state` column): not run statuses, so not their words
ITEM_QUEUED, ITEM_STARTED, ITEM_REFUSED, ITEM_CANCELLED = "queued", "started", "refused", "cancelled"
ITEM_REFUSED_BEFORE = "failed"  # what a store written before the rename holds for a refused item: still read

HEARTBEAT_STALE_S = 90.0  # a live engine beats every 5 s; silence this long means it is gone


def stall_after_default(home=None) -> float | None:
    """Seconds without a step before a live run counts as stalled (None: never): the workspace's
    watch.yaml `stall_after`, overridden by CIFAR_TUI_STALL_AFTER_S; 10 minutes when neither says
    (engine/watch_config.py tells why)."""
    from ..watch_config import watch_settings  # pydantic and yaml only when a status is computed

    return watch_settings(home).stall_after_s


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purpose.
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


_HOST = socket.gethostname()


def this_host() -> str:
    return _HOST


def _get(known: Any, key: str) -> Any:
    try:
        return known[key]
    except (KeyError, IndexError):  # sqlite3.Row raises IndexError for a missing column
        return None


def effective_status(known: Mapping | Any, *, now: float | None = None, stall_after_s: float | None = None,
                     heartbeat_stale_s: float = HEARTBEAT_STALE_S) -> str:
    """A run's status from what is known about it.

    `known` is a store row (sqlite3.Row or dict) or `summary_facts(...)`: status (as recorded),
    pid, host, heartbeat_at, started_at and optionally progress_at (last step or epoch).
    A recorded `running` becomes `crashed` when its process is gone (checked on this host) or
    its heartbeat is older than `heartbeat_stale_s`, and `stalled` when `stall_after_s` is given
    and its latest heartbeat came longer than that after its last progress. The engine's
    heartbeat (every 5 s) records the time of the last training step or evaluation batch, so the
    gap is exact as of that beat, with no lag between beats to mistake for a stall; a run whose
    process is alive but whose loop is stuck (a hung DataLoader, GPU or collective) keeps
    beating and its gap grows. Anything else is returned as recorded."""
    status = _get(known, "status") or UNKNOWN
    if status != RUNNING:
        return status
    now = time.time() if now is None else now
    host = _get(known, "host")
    if (not host or host == _HOST) and not pid_alive(_get(known, "pid")):
        return CRASHED
    beat = _get(known, "heartbeat_at") or _get(known, "started_at") or 0
    if now - beat > heartbeat_stale_s:
        return CRASHED
    if stall_after_s:
        progress = _get(known, "progress_at") or _get(known, "started_at") or beat
        if beat - progress > stall_after_s:
            return STALLED
    return RUNNING


def summary_facts(summary: Mapping) -> dict:
    """The facts `effective_status` needs, from `engine.record.events.summarize(events)`."""
    start = summary.get("start") or {}
    return {"status": summary.get("status"), "pid": start.get("pid"), "host": start.get("host"),
            "heartbeat_at": summary.get("last_t"), "started_at": summary.get("started_at"),
            "progress_at": summary.get("progress_t")}
