"""Plain logic behind the Textual app (no textual import): run state folding,
filters, config diffs, formats, how statuses are drawn.

Kept apart from the widgets so it can be unit-tested and reused by the CLI.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.record.events import LineTail
from engine.record.status import (COMPLETED, CRASHED, FAILED, PRUNED, QUEUED, RUNNING, STALLED, STARTING, STOPPED,
                                  STOPPING, UNKNOWN)

from .telemetry import TelemetrySeries

# The statuses are engine.record.status's; these say how the TUI draws them.
STATUS_ICON = {
    RUNNING: "▶", STARTING: "…", QUEUED: "◷", COMPLETED: "✔", STOPPED: "■", FAILED: "✖", CRASHED: "✖",
    STOPPING: "■", STALLED: "⧗", PRUNED: "⊘", UNKNOWN: "?",
}

# Rich styles (not Textual variables) for Text objects rendered in tables.
STATUS_RICH = {
    RUNNING: "bold cyan", STARTING: "italic grey62", QUEUED: "bold magenta", COMPLETED: "bold green",
    STOPPED: "bold yellow", FAILED: "bold red", CRASHED: "bold red", STOPPING: "bold yellow",
    STALLED: "bold dark_orange", PRUNED: "bold grey62", UNKNOWN: "grey62",
}

MAX_STEP_POINTS = 3000


def short_run(run_id: str) -> str:
    """`resnet18_baseline-20260101T000000Z-1a2b` -> `resnet18_baseline·1a2b`."""
    m = re.match(r"^(.*)-(\d{8}T\d{6}Z)-([0-9a-f]{4})$", run_id)
    return f"{m.group(1)}·{m.group(3)}" if m else run_id


def pane_id_for(run_id: str) -> str:
    return "run-" + re.sub(r"[^A-Za-z0-9_-]", "_", run_id)


def matches_filter(query: str, *fields: object) -> bool:
    """Every whitespace-separated word of the query appears in one of the fields (case-insensitive)."""
    words = query.lower().split()
    if not words:
        return True
    hay = " ".join(str(f) for f in fields if f is not None).lower()
    return all(w in hay for w in words)


def parse_override_text(text: str) -> list[str]:
    """Free-form `a.b=v c.d=w` (or `--set a.b=v`) into override items."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"overrides: {exc}") from None
    out = []
    for tok in tokens:
        if tok == "--set":
            continue
        if tok.startswith("--set="):
            tok = tok[len("--set="):]
        out.append(tok)
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = d
    return out


_MISSING = object()


def config_diff(configs: list[dict], ignore: Iterable[str] = ("description", "reference.source")) -> list[tuple[str, list[Any]]]:
    """Keys whose values differ between the configs: [(key, [value per config])], sorted by key."""
    flats = [flatten(c or {}) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    skip = set(ignore)
    rows = []
    for k in keys:
        if k in skip:
            continue
        values = [f.get(k, _MISSING) for f in flats]
        if any(json.dumps(v, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True, default=str)
               for v in values[1:]):
            rows.append((k, [None if v is _MISSING else v for v in values]))
    return rows


def fmt_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return str(v)


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def fmt_num(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        return format(v, fmt)
    except (TypeError, ValueError):
        return str(v)


# ---------------------------------------------------------------- run state


@dataclass
class RunState:
    """A run folded from its events, incrementally (what a run view shows)."""

    run_id: str
    status: str = STARTING            # from events: starting | running | an end status (engine.record.status.END_STATUSES)
    config_name: str | None = None
    config: dict = field(default_factory=dict)
    data_source: str | None = None
    device: str | None = None
    params: int | None = None
    pid: int | None = None
    host: str | None = None
    world_size: int = 1
    epochs_total: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    epochs: dict[int, dict] = field(default_factory=dict)
    step: dict | None = None
    step_points: list[tuple[float, float | None, float | None]] = field(default_factory=list)
    best_acc: float | None = None
    best_epoch: int | None = None
    error: str | None = None
    end: dict | None = None
    start: dict | None = None         # the latest `start` event (a resumed run has one per start)
    telemetry: TelemetrySeries = field(default_factory=TelemetrySeries)
    last_t: float | None = None
    starts: int = 0
    # what changed since the view last drew (the view clears these)
    new_epochs: list[int] = field(default_factory=list)
    progress_dirty: bool = False
    chart_dirty: bool = False
    status_dirty: bool = False
    _stride: int = 1
    _since_kept: int = 0

    def apply(self, events: list[dict]) -> None:
        for e in events:
            kind = e.get("type")
            if e.get("t") is not None:
                self.last_t = e["t"]
            if kind == "step":
                self.step = e
                self.progress_dirty = True
                self._add_step_point(e)
            elif kind == "epoch":
                self._on_epoch(e)
            elif kind == "heartbeat":
                self.telemetry.add(e)
            elif kind == "start":
                self._on_start(e)
            elif kind == "end":
                self.end = e
                self.status = e.get("status") or FAILED
                self.error = e.get("error")
                if e.get("best_acc") is not None:
                    self.best_acc = e["best_acc"]
                    self.best_epoch = e.get("best_epoch", self.best_epoch)
                self.status_dirty = self.progress_dirty = True

    def _on_start(self, e: dict) -> None:
        cfg = e.get("config") or {}
        self.starts += 1
        self.start = e
        self.config = cfg
        self.config_name = e.get("config_name") or cfg.get("name")
        self.data_source = e.get("data_source") or (cfg.get("data") or {}).get("source")
        self.device = e.get("device")
        self.params = e.get("params")
        self.pid = e.get("pid")
        self.host = e.get("host")
        self.world_size = e.get("world_size") or 1
        self.epochs_total = (cfg.get("train") or {}).get("epochs")
        self.batch_size = (cfg.get("train") or {}).get("batch_size")
        self.steps_per_epoch = e.get("steps_per_epoch") or self.steps_per_epoch
        self.status = RUNNING
        self.end = None
        self.error = None
        self.step = None
        self.status_dirty = self.progress_dirty = True

    def _on_epoch(self, e: dict) -> None:
        n = e.get("epoch")
        if not isinstance(n, int):
            return
        self.epochs[n] = e
        if n not in self.new_epochs:
            self.new_epochs.append(n)
        if e.get("best_acc") is not None:
            self.best_acc, self.best_epoch = e["best_acc"], e.get("best_epoch")
        if e.get("epochs"):
            self.epochs_total = e["epochs"]
        self.step = None
        self.chart_dirty = self.progress_dirty = True

    def _add_step_point(self, e: dict) -> None:
        spe = e.get("steps_per_epoch") or self.steps_per_epoch or 1
        self.steps_per_epoch = spe
        epoch = e.get("epoch") or 1
        x = (epoch - 1) + (e.get("step") or 0) / spe
        self._since_kept += 1
        if self._since_kept < self._stride:
            return
        self._since_kept = 0
        self.step_points.append((x, e.get("loss"), e.get("acc")))
        if len(self.step_points) > MAX_STEP_POINTS:
            # keep the curve's shape with bounded memory and drawing time
            self.step_points = self.step_points[::2]
            self._stride *= 2
        self.chart_dirty = True

    # -- derived ---------------------------------------------------------
    @property
    def epochs_done(self) -> int:
        return max(self.epochs) if self.epochs else 0

    @property
    def current_epoch(self) -> int:
        if self.step:
            return int(self.step.get("epoch") or self.epochs_done + 1)
        return self.epochs_done + 1

    def seconds_per_step(self) -> float | None:
        if not self.step or not self.step.get("img_per_s"):
            return None
        bs = self.batch_size or 0  # the global batch; img_per_s counts every rank too
        if not bs:
            return None
        return bs / float(self.step["img_per_s"])

    def eta(self) -> tuple[float | None, float | None]:
        """(seconds left in this epoch, seconds left in the run)."""
        spe = self.steps_per_epoch
        sps = self.seconds_per_step()
        if not spe:
            return None, None
        step = (self.step or {}).get("step") or 0
        epoch_left = (spe - step) * sps if sps else None
        total = self.epochs_total or self.current_epoch
        remaining_full = max(0, total - self.current_epoch)
        times = [e.get("epoch_s") for e in self.epochs.values() if e.get("epoch_s")]
        per_epoch = sum(times) / len(times) if times else (spe * sps if sps else None)
        if epoch_left is None and per_epoch is None:
            return None, None
        run_left = (epoch_left if epoch_left is not None else per_epoch) + remaining_full * (per_epoch or 0)
        return epoch_left, run_left


class LogTail(LineTail):
    """Last lines of runs/<id>/stdout.log: starts `initial_bytes` before the end, then follows."""

    def __init__(self, path: Path, initial_bytes: int = 8192):
        super().__init__(path, offset=None)
        self._initial = initial_bytes

    def poll(self, max_bytes: int = 65536) -> list[str]:
        started_mid_file = False
        if self._offset is None:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                return []
            self._offset = max(0, size - self._initial)
            started_mid_file = self._offset > 0
        parts = self.poll_lines(max_bytes)
        if started_mid_file and parts:
            parts = parts[1:]  # started mid-line
        # progress bars write \r-separated updates: keep the last state of each line
        return [p.decode("utf-8", errors="replace").rsplit("\r", 1)[-1].rstrip() for p in parts]


# ---------------------------------------------------------------- queue / store helpers


def best_by_config(runs: list[dict]) -> dict[str, dict]:
    """Per config name: best CIFAR-100 accuracy and best synthetic accuracy."""
    out: dict[str, dict] = {}
    for r in runs:
        acc = r.get("best_acc")
        if acc is None:
            continue
        d = out.setdefault(r["config_name"], {})
        key = "cifar100" if r.get("data_source") == "cifar100" else "synthetic"
        if d.get(key) is None or acc > d[key]:
            d[key] = acc
    return out

