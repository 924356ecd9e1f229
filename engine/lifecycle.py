"""A run's life around the training loop: exit codes, graceful stop on signals, store writes that
never kill a run, and one readable line for each kind of failure."""
from __future__ import annotations

import errno
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from .config import ExperimentConfig
from .guard import TrainingDiverged
from .dataloader_failure import dataloader_failure
from .stop_request import early_stop, handler_before_hold
from .record.store import Store


EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 130


def failure_message(exc: BaseException, cfg: ExperimentConfig) -> str:
    if isinstance(exc, TrainingDiverged):  # the guard's message names the step and a lower lr
        return str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return (f"out of memory with train.batch_size={cfg.train.batch_size}; try a smaller batch, "
                f"e.g. --set train.batch_size={max(1, cfg.train.batch_size // 2)}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # EFBIG: ulimit -f
        return (f"disk full while writing {getattr(exc, 'filename', None) or 'the run directory'} ({exc.strerror}): "
                f"free space, then `cifar-tui resume`")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write {getattr(exc, 'filename', None) or 'the run directory'} ({exc.strerror}); fix permissions, then `cifar-tui resume`"
    if (dead_worker := dataloader_failure(exc)) is not None:
        return dead_worker
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]


class StopRequested:
    """SIGINT/SIGTERM (and SIGUSR2, SLURM's warning before a job's time limit) ask for a graceful
    stop; a second signal stops at once. The same stop delivered twice within SAME_STOP_S counts
    once: SLURM signals every process of a job step, and the job's launcher (engine.record.job, the
    torchrun agent) passes the signal on as well."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    SAME_STOP_S = 1.0

    def __init__(self) -> None:
        self.flag = False
        self._at = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = handler_before_hold(sig, signal.signal(sig, self._handle))
        if early_stop():  # a stop (SLURM's warning, a SIGTERM) came while the engine started
            self.flag, self._at = True, time.monotonic()

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        now = time.monotonic()
        if self.flag and now - self._at > self.SAME_STOP_S:
            raise KeyboardInterrupt
        if not self.flag:
            self.flag, self._at = True, now

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class SafeStore:
    """Store writes never kill a run: the events file is the durable record."""

    def __init__(self, home: Path):
        self.store: Store | None = None
        try:
            self.store = Store(home)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: store unavailable ({exc}); events are still written", file=sys.stderr)

    def __getattr__(self, name: str):
        method = getattr(self.store, name, None) if self.store else None

        def call(*args, **kwargs):
            if method is None:
                return None
            try:
                return method(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                print(f"warning: store write {name} failed: {exc}", file=sys.stderr)
                return None

        return call

