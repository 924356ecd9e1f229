"""The run's event stream (runs/<id>/events.jsonl, `paths.events_path`), one JSON object per
line: the one writer and the one reader.

Writers flush every line; readers ignore unknown fields and skip a torn last line
(a crash mid-write), so a reader never fails on a file a dead engine left behind.
`read_events` reads a whole file, `latest_event`/`latest_start` the last event of a type,
`EventTail` follows a live file, `summarize` folds events into a run's state.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from .paths import events_path
from .status import FAILED, RUNNING, UNKNOWN

EVENTS_VERSION = 1


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; a diverged loss must still produce a valid line.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class EventWriter:
    """Appends events; one write() + flush per line so readers see whole lines."""

    def __init__(self, path: Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        self._file = open(self.path, "a", encoding="utf-8")
        # A previous crash may have left a torn last line: start on a fresh line.
        if self._file.tell() > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._file.write("\n")
                    self._file.flush()

    def emit(self, type_: str, **fields: Any) -> dict:
        event = {"v": EVENTS_VERSION, "t": round(time.time(), 3), "type": type_, "run_id": self.run_id}
        event.update(_clean(fields))
        self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._file.flush()
        return event

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def parse_line(line: str) -> dict | None:
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or "type" not in event:
        return None
    return event


def read_events(path: Path) -> list[dict]:
    """All complete events of a file; a torn or garbled line is skipped."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return [e for e in (parse_line(line) for line in f) if e is not None]
    except FileNotFoundError:
        return []


def latest_event(run_dir: Path, kind: str) -> dict | None:
    """The run's last complete event of type `kind` (None: there is none). Only lines that
    mention `"kind"` are parsed: a long run's events file is mostly steps."""
    needle = json.dumps(kind).encode()
    found = None
    try:
        with open(events_path(run_dir), "rb") as f:
            for line in f:
                if needle in line:
                    event = parse_line(line.decode("utf-8", errors="replace"))
                    if event is not None and event.get("type") == kind:
                        found = event
    except OSError:  # missing or unreadable: no such event
        return None
    return found


def latest_start(run_dir: Path) -> dict | None:
    """The run's latest `start` event (a resumed run has one per start): its config, study, group,
    processes and provenance as of its last start."""
    return latest_event(run_dir, "start")


class LineTail:
    """Incremental reader of a file being appended to: poll_lines() returns the new complete lines.

    A partial last line (being written right now) is kept until its newline arrives.
    """

    def __init__(self, path: Path, offset: int | None = 0):
        self.path = Path(path)
        self._offset = offset
        self._partial = b""

    def poll_lines(self, max_bytes: int) -> list[bytes]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset or 0)
                chunk = f.read(max_bytes)
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset = (self._offset or 0) + len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended on a newline
        return lines


class EventTail(LineTail):
    """Incremental reader for a live events file: poll() returns new complete events."""

    def poll(self, max_bytes: int = 4 << 20) -> list[dict]:
        events = (parse_line(raw.decode("utf-8", errors="replace")) for raw in self.poll_lines(max_bytes))
        return [e for e in events if e is not None]


def summarize(events: list[dict]) -> dict:
    """Fold a run's events into its current state (used to rebuild the store and by readers)."""
    state: dict[str, Any] = {"status": UNKNOWN, "epochs": {}, "best_acc": None, "best_epoch": None, "starts": 0}
    for e in events:
        kind = e.get("type")
        if kind == "start":
            state["start"] = e  # the latest: a resumed run has one per start
            state["starts"] += 1
            state["status"] = RUNNING
            state.setdefault("started_at", e.get("t"))
            state["progress_t"] = e.get("t")
        elif kind in ("step", "epoch"):
            state["progress_t"] = e.get("t", state.get("progress_t"))
        elif kind == "heartbeat" and e.get("progress_t"):  # the last step or evaluation batch, as of this beat
            state["progress_t"] = max(e["progress_t"], state.get("progress_t") or 0)
        if kind == "epoch":
            state["epochs"][e.get("epoch")] = e
            state["best_acc"] = e.get("best_acc", state["best_acc"])
            state["best_epoch"] = e.get("best_epoch", state["best_epoch"])
        elif kind == "end":
            state["status"] = e.get("status", FAILED)
            state["end"] = e
            if e.get("best_acc") is not None:
                state["best_acc"] = e["best_acc"]
        if "t" in e:
            state["last_t"] = e["t"]
    return state
