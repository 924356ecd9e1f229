"""Asking a run to end early, through a file in its run directory: `stop_request.json`.

A launcher on any host that shares the workspace can ask (a search pruning a trial, a stop of a
run that lives on another machine or inside a SLURM job, where no local pid can be signalled):

1. the launcher writes `{"status": "pruned"|"stopped", "reason": ..., "t": ...}` atomically
   (`write_request`), then signals the process where it can (SIGTERM, the ordinary graceful stop);
2. every rank of the engine checks for the file at most once per `poll_s` at its stop checks
   (`StopRequestWatcher.requested`), so a run on another host stops within a second or two of the
   file appearing even without the signal;
3. the engine stops as it does on SIGTERM (checkpoint, `end`), and `end_status` turns its
   `stopped` into the status the request asked for: a pruned trial's `end` event and store row say
   `pruned`, with the reason. A run that completed before it noticed stays `completed`.

The engine removes a request left over from an earlier life when it starts (`clear`): a resumed
run is not stopped by the request that stopped it.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from .record.status import PRUNED, STOPPED

REQUEST_FILE = "stop_request.json"
REQUESTABLE = (STOPPED, PRUNED)
_early_warnings: list[int] = []


def hold_early_warning() -> None:
    """SLURM's warning before a job's time limit (SIGUSR2) may come while the engine still starts,
    and would end it: held from the engine's first line, honoured once the trainer listens
    (engine.lifecycle.StopRequested)."""
    signal.signal(signal.SIGUSR2, lambda signum, frame: _early_warnings.append(signum))


def early_warning() -> bool:
    return bool(_early_warnings)


def request_path(run_dir: Path) -> Path:
    return Path(run_dir) / REQUEST_FILE


def write_request(run_dir: Path, status: str = STOPPED, reason: str | None = None) -> Path:
    """Ask the run in `run_dir` to end with `status` (stopped | pruned). Atomic (rename)."""
    if status not in REQUESTABLE:
        raise ValueError(f"a stop request asks for one of {REQUESTABLE}, not {status!r}")
    path = request_path(run_dir)
    tmp = path.with_name(f".{REQUEST_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"status": status, "reason": reason, "t": round(time.time(), 3)}))
    os.replace(tmp, path)
    return path


def read_request(run_dir: Path) -> dict | None:
    """The pending request, or None (no file, or one that cannot be read: then a plain stop)."""
    try:
        data = json.loads(request_path(run_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"status": STOPPED, "reason": None}
    if not isinstance(data, dict) or data.get("status") not in REQUESTABLE:
        return {"status": STOPPED, "reason": None}
    return data


class StopRequestWatcher:
    """The engine's side: is there a request (rate-limited stat), and how does the run end."""

    def __init__(self, run_dir: Path, poll_s: float = 1.0):
        self.path = request_path(run_dir)
        self.run_dir = Path(run_dir)
        self.poll_s = poll_s
        self._checked = float("-inf")
        self._seen = False

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def requested(self) -> bool:
        if self._seen:
            return True
        now = time.monotonic()
        if now - self._checked >= self.poll_s:
            self._checked = now
            self._seen = self.path.exists()
        return self._seen

    def end_status(self, status: str) -> tuple[str, dict]:
        """(status, extra `end` fields): a stopped run that was asked to end as pruned ends pruned."""
        if status != STOPPED:
            return status, {}
        request = read_request(self.run_dir)
        if request is None:
            return status, {}
        extra = {"reason": request.get("reason")} if request.get("reason") else {}
        return request["status"], extra
