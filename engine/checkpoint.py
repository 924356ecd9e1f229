"""Checkpoints: written atomically (temp file, fsync, rename), loaded with weights_only=True.

A crash at any moment leaves the previous checkpoint in place: the new one is only
renamed over it once it is complete and on disk. Temp files a killed process left
behind are removed by the next save.

Test hooks (fault tests only; unset in normal use; engine/fault_hooks.py):
``CIFAR_TUI_TEST_PAUSE_IN_CHECKPOINT_WRITE`` pauses while the temp file is half written,
``CIFAR_TUI_TEST_SLOW_CHECKPOINT`` after it is written and fsynced, before the rename, so that
a test can SIGKILL the engine at either moment of a checkpoint write.
"""
from __future__ import annotations

import os
import pickle
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from . import fault_hooks
from .config import ConfigError

CHECKPOINT_FORMAT = "cifar-tui-checkpoint"
CHECKPOINT_VERSION = 1
TEST_SLOW_ENV = fault_hooks.SLOW_CHECKPOINT
TEST_PAUSE_IN_WRITE_ENV = fault_hooks.PAUSE_IN_CHECKPOINT_WRITE


class CheckpointError(ConfigError):
    """A checkpoint that is missing, not ours, or unreadable."""


class _WriteRecorder:
    """The file object torch.save writes through. torch turns a failed write into a
    RuntimeError without errno ("unexpected pos ..."); this keeps the real OSError
    (ENOSPC, EFBIG, EDQUOT, ...) so the caller can say "disk full"."""

    def __init__(self, f: Any, pause_in_write: "fault_hooks.Pause | None" = None):
        self._f = f
        self.error: OSError | None = None
        self.written = 0
        self._pause = pause_in_write  # test hook: pause once, part-way through the file

    def write(self, data: Any) -> int:
        try:
            n = self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.written += n
        if self._pause is not None and self.written >= fault_hooks.PAUSE_AFTER_BYTES:
            self._f.flush()
            print(f"{fault_hooks.MID_WRITE_MARKER} {self._f.name} ({self.written} bytes)", file=sys.stderr, flush=True)
            time.sleep(self._pause.seconds)
            self._pause = None
        return n

    def flush(self) -> None:
        self._f.flush()


def _tmp_name(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.tmp-{pid}")


def _remove_stale_temps(path: Path) -> None:
    """Temp files of `path` left by a process that died mid-write (SIGKILL, power loss)."""
    from .record.status import pid_alive

    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp-(\d+)$")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
                entry.unlink()
            except OSError:
                pass


def _test_pause(path: Path, var: str) -> "fault_hooks.Pause | None":
    spec = fault_hooks.pause(var)
    return spec if spec is not None and spec.applies_to(path) else None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically. An OSError names `path` (and keeps its errno)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = _tmp_name(path, os.getpid())
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    try:
        try:
            with open(tmp, "wb") as f:
                out = _WriteRecorder(f, _test_pause(path, TEST_PAUSE_IN_WRITE_ENV))
                try:
                    torch.save(payload, out)
                except RuntimeError:
                    if out.error is not None:
                        raise out.error from None
                    raise
                f.flush()
                os.fsync(f.fileno())
            slow = _test_pause(path, TEST_SLOW_ENV)
            if slow is not None:
                print(f"{fault_hooks.BEFORE_RENAME_MARKER} {tmp}", file=sys.stderr, flush=True)
                time.sleep(slow.seconds)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        if exc.errno is not None and exc.filename in (None, str(tmp)):
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one of our checkpoints. Anything else (a foreign file, a pickle that would
    build Python objects, a damaged file) is a CheckpointError; nothing in it is executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _weights_only_reason(str(exc))
        if "GLOBAL" in reason:
            reason = reason.rstrip(".") + "; the file names Python code to run"
        raise CheckpointError(f"{path}: refused: not a cifar-tui checkpoint (weights-only loading stopped at: {reason})") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means "damaged / not a checkpoint"
        raise CheckpointError(f"{path}: not a readable cifar-tui checkpoint (damaged or truncated: "
                              f"{_first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cifar-tui checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')} is not supported (expected {CHECKPOINT_VERSION})")
    return state


def _weights_only_reason(text: str) -> str:
    """The informative line of torch's weights-only refusal (the rest is boilerplate)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")
    for line in text.splitlines():
        line = " ".join(line.split())
        if line and not line.startswith(boilerplate):
            return line[:160]
    return "content other than tensors and plain data"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split())[:160] if text else type(exc).__name__


def repair_best(best: Path, last_state: dict[str, Any]) -> bool:
    """Make best.pt hold the best epoch that last.pt records, when last.pt itself is it.

    The trainer writes last.pt, then best.pt. A crash between the two leaves a last.pt
    whose best epoch is its own epoch and a best.pt that is older (or missing). On
    resume, last.pt's model (or its EMA, when that was the better one) is exactly that best
    model: write it to best.pt. Returns
    True when best.pt was (re)written."""
    epoch, best_epoch = last_state.get("epoch"), last_state.get("best_epoch")
    if best_epoch is None or best_epoch != epoch or last_state.get("step_in_epoch", 0) != 0:
        return False
    try:
        if load_checkpoint(best).get("epoch") == best_epoch:
            return False
    except CheckpointError:
        pass  # missing or damaged: rewrite it
    best_model = last_state.get("best_model", "model")
    weights = last_state["ema"]["module"] if best_model == "ema" else last_state["model"]
    try:
        save_checkpoint({"run_id": last_state.get("run_id"), "config": last_state.get("config"), "model": weights,
                         "epoch": epoch, "best_acc": last_state.get("best_acc"), "best_model": best_model}, best)
    except OSError as exc:  # best effort: the run itself can go on from last.pt
        print(f"warning: could not repair {best}: {exc}", file=sys.stderr)
        return False
    return True
