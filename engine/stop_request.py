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
_early_stops: list[tuple[int, float]] = []  # (signal, monotonic time) held while the engine started
_started_at: list[float] = []                # when this engine process began (unix seconds)
_before_hold: dict[int, object] = {}          # the handlers the hold replaced
EARLY_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
SAME_STOP_S = 1.0  # one stop, delivered by several senders (slurmstepd, the job's launcher): counted once


def hold_early_stops() -> None:
    """A stop that comes while the engine still starts (imports torch, builds its data: tens of
    seconds on a busy node) would end it before it has written anything: SLURM's warning before a
    job's time limit, passed on by the job's launcher as SIGTERM, did just that. Held from the
    engine's first line, honoured once the trainer listens (engine.lifecycle.StopRequested): the run
    starts, stops at its first step with a checkpoint, and can be resumed. A second stop, later,
    ends the process at once."""
    _started_at[:] = [time.time()]
    for sig in EARLY_STOP_SIGNALS:
        previous = signal.signal(sig, _held)
        if previous is not _held:
            _before_hold[sig] = previous


def _held(signum, frame) -> None:  # noqa: ARG001
    now = time.monotonic()
    if _early_stops and now - _early_stops[0][1] > SAME_STOP_S:
        raise KeyboardInterrupt
    _early_stops.append((signum, now))


def handler_before_hold(sig: int, handler):
    """What `handler` stands for once the trainer listens: the hold's place is the handler it replaced."""
    return _before_hold.get(sig, handler) if handler is _held else handler


def early_stop_held() -> bool:
    """hold_early_stops has run in this process."""
    return bool(_started_at)


def process_started_at() -> float | None:
    """When hold_early_stops ran in this process (its engine began), or None."""
    return _started_at[0] if _started_at else None


def early_stop() -> bool:
    """A stop came while the engine started."""
    return bool(_early_stops)


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

    def __init__(self, run_dir: Path, poll_s: float = 1.0, keep_since: float | None = None):
        self.path = request_path(run_dir)
        self.run_dir = Path(run_dir)
        self.poll_s = poll_s
        self.keep_since = keep_since  # unix seconds: a request written since then is this life's (clear keeps it)
        self._checked = float("-inf")
        self._seen = False

    def clear(self) -> None:
        """Remove a request left from an earlier life of the run; one written since `keep_since`
        (the engine process began: a stop while it started) is for this life and stays."""
        request = read_request(self.run_dir)
        if request is None or (self.keep_since is not None and isinstance(request.get("t"), (int, float))
                               and request["t"] + 0.001 >= self.keep_since):  # t is written to the ms
            return
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
