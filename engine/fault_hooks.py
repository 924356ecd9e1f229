"""Test-only fault hooks: environment variables with which the fault tests make the engine fail
or pause at a chosen moment (tests/integration/test_faults.py; docs/RELIABILITY.md lists them).

Unset in normal use. Every hook is named ``CIFAR_TUI_TEST_*``. A misset value (``x`` where a
step number belongs) or an unknown ``CIFAR_TUI_TEST_*`` name is one warning line on stderr and is
otherwise ignored: a hook never stops the engine from starting and never changes a run it was
not meant for.

``CIFAR_TUI_TEST_OOM_AT_STEP=N``
    raise ``torch.cuda.OutOfMemoryError`` right after global step N (N >= 1).
``CIFAR_TUI_TEST_SLOW_CHECKPOINT=[NAME:]SECONDS``
    sleep after a checkpoint's temp file is written and fsynced, before its rename
    (only for the file NAME, e.g. ``best.pt:30``); the engine says so on stderr (``BEFORE_RENAME_MARKER``).
``CIFAR_TUI_TEST_PAUSE_IN_CHECKPOINT_WRITE=[NAME:]SECONDS``
    sleep in the middle of writing a checkpoint's temp file: once the first
    ``PAUSE_AFTER_BYTES`` are written (and flushed), before the rest. The engine says so on
    stderr (``MID_WRITE_MARKER``), so a test knows when to kill it.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

PREFIX = "CIFAR_TUI_TEST_"
OOM_AT_STEP = "CIFAR_TUI_TEST_OOM_AT_STEP"
SLOW_CHECKPOINT = "CIFAR_TUI_TEST_SLOW_CHECKPOINT"
PAUSE_IN_CHECKPOINT_WRITE = "CIFAR_TUI_TEST_PAUSE_IN_CHECKPOINT_WRITE"
HOOKS = (OOM_AT_STEP, SLOW_CHECKPOINT, PAUSE_IN_CHECKPOINT_WRITE)

PAUSE_AFTER_BYTES = 64 * 1024
MID_WRITE_MARKER = "test hook: paused in the middle of writing"
BEFORE_RENAME_MARKER = "test hook: written and fsynced, paused before renaming"

_reported: set[str] = set()


def _ignored(var: str, value: str, expected: str) -> None:
    """One warning line per variable and process."""
    if var in _reported:
        return
    _reported.add(var)
    print(f"warning: {var}={value!r} ignored: expected {expected}", file=sys.stderr, flush=True)


def oom_at_step() -> int | None:
    """The global step after which to raise a CUDA out-of-memory error, or None."""
    raw = os.environ.get(OOM_AT_STEP, "").strip()
    if not raw:
        return None
    try:
        step = int(raw)
    except ValueError:
        step = 0
    if step < 1:
        _ignored(OOM_AT_STEP, raw, "a global step number >= 1")
        return None
    return step


@dataclass(frozen=True)
class Pause:
    file_name: str | None  # None: every checkpoint file
    seconds: float

    def applies_to(self, path: Path) -> bool:
        return self.file_name is None or self.file_name == Path(path).name


def pause(var: str) -> Pause | None:
    """A ``[NAME:]SECONDS`` pause hook (SLOW_CHECKPOINT, PAUSE_IN_CHECKPOINT_WRITE), or None."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    name, _, seconds = raw.rpartition(":")
    try:
        value = float(seconds)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0) or "/" in name:
        _ignored(var, raw, "[FILE:]SECONDS, e.g. best.pt:30")
        return None
    return Pause(name or None, value)


def check_environment(report: bool = True) -> None:
    """Validate every CIFAR_TUI_TEST_* variable once, at engine start: each misset or unknown one
    is named in one warning line (on rank 0 only under torchrun: `report` False elsewhere)."""
    if not report:
        _reported.update(v for v in os.environ if v.startswith(PREFIX))
        return
    for var in sorted(v for v in os.environ if v.startswith(PREFIX)):
        if var not in HOOKS:
            _ignored(var, os.environ[var], f"one of the test hooks {', '.join(HOOKS)} (docs/RELIABILITY.md)")
    oom_at_step()
    pause(SLOW_CHECKPOINT)
    pause(PAUSE_IN_CHECKPOINT_WRITE)
