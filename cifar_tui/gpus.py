"""GPU scheduling: which GPUs there are, and which run gets which.

One run per visible GPU (pinned with CUDA_VISIBLE_DEVICES), or several GPUs for one DDP run
(`--nproc N` takes N GPUs). Without GPUs, runs go to the CPU one at a time (`max_parallel`).
The CLI (`cifar-tui run A B C --parallel`) uses it; so can the TUI's queue. No torch import
here: the device list comes from the environment or nvidia-smi.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from engine.config import ConfigError


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs runs may use, as CUDA_VISIBLE_DEVICES entries.

    CIFAR_TUI_GPUS (comma list; tests and simulation) when set, else CUDA_VISIBLE_DEVICES
    when set (an empty value or -1 hides every GPU), else the indices nvidia-smi lists,
    else none (CPU only)."""
    env = os.environ if env is None else env
    for var in ("CIFAR_TUI_GPUS", "CUDA_VISIBLE_DEVICES"):
        if var in env:
            gpus = []
            for entry in (e.strip() for e in env[var].split(",")):
                if not entry or entry.startswith("-"):  # CUDA stops at the first invalid entry
                    break
                gpus.append(entry)
            return gpus
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, env=dict(env))
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


@dataclass(frozen=True)
class Slot:
    """What one run was given: GPU ids (empty: the CPU)."""

    gpus: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        """Environment for launch(..., env=...): the run sees only its GPUs, numbered as nvidia-smi does."""
        if not self.gpus:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    @property
    def label(self) -> str:
        if not self.gpus:
            return "CPU"
        return ("GPU " if len(self.gpus) == 1 else "GPUs ") + ",".join(self.gpus)


class GpuScheduler:
    """Hands out slots: a run of `n` processes gets `n` free GPUs, at most `max_parallel` runs
    at a time (default: as many as there are GPUs). Without GPUs every slot is the CPU and
    `max_parallel` defaults to 1. Thread-safe; allocate() never blocks (None: wait)."""

    def __init__(self, gpus: Sequence[str], max_parallel: int | None = None):
        if max_parallel is not None and max_parallel < 1:
            raise ConfigError(f"--max-parallel: must be at least 1, got {max_parallel}")
        self.gpus = list(gpus)
        self.max_parallel = max_parallel or max(1, len(self.gpus))
        self._free = list(self.gpus)
        self._running = 0
        self._lock = threading.Lock()

    def check(self, n: int) -> None:
        """ConfigError when a run of `n` processes could never get its GPUs."""
        if self.gpus and n > len(self.gpus):
            raise ConfigError(f"--nproc {n}: a run needs {n} GPUs but {len(self.gpus)} are visible ({','.join(self.gpus)})")

    def allocate(self, n: int = 1) -> Slot | None:
        self.check(n)
        with self._lock:
            if self._running >= self.max_parallel or (self.gpus and len(self._free) < n):
                return None
            taken = self._free[:n] if self.gpus else []
            self._free = [g for g in self._free if g not in taken]
            self._running += 1
            return Slot(tuple(taken))

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._running -= 1
            self._free = [g for g in self.gpus if g in self._free or g in slot.gpus]

    @property
    def running(self) -> int:
        return self._running


def run_parallel(ws, jobs: Sequence[tuple], *, nproc: int = 1, torchrun_args: list[str] | None = None,
                 max_parallel: int | None = None, scheduler: GpuScheduler | None = None, json_mode: bool = False,
                 console=None, finish: Callable[..., int] | None = None, poll_s: float = 0.2) -> int:
    """Run `jobs` ([(LaunchRequest, config)]) side by side, each pinned to the GPUs of its slot.

    Prints when each run starts and where, its epochs (prefixed with its run id) or, with
    json_mode, every event as a JSON line. `finish(launched, code, end_event) -> code` reports
    a finished run (the CLI's summary line). Ctrl-C stops every running run gracefully and
    starts no new one. Returns 0 when all completed, else the first non-zero code (130 on Ctrl-C);
    bad input (2) or Ctrl-C start no further runs."""
    from engine.events import EventTail

    from .follow import _epoch_row
    from .launch import launch

    scheduler = scheduler or GpuScheduler(visible_gpus(), max_parallel)
    scheduler.check(nproc)
    say = console.print if console is not None and not json_mode else (lambda *a, **k: None)
    pending = list(jobs)
    active: dict[str, tuple] = {}  # run_id -> (launched, slot, tail, end event)
    final, interrupted = 0, False

    def on_sigint(signum, frame):  # noqa: ARG001
        nonlocal interrupted
        interrupted = True
        for launched, *_ in active.values():
            if launched.process.poll() is None:
                launched.process.send_signal(signal.SIGINT)  # a second Ctrl-C: they stop at once

    def may_start() -> bool:
        return bool(pending) and not interrupted and final not in (2, 130)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        while active or may_start():
            while may_start():
                slot = scheduler.allocate(nproc)
                if slot is None:
                    break
                request, cfg = pending.pop(0)
                try:
                    launched = launch(ws, request, cfg=cfg, nproc=nproc, torchrun_args=torchrun_args, env=slot.env())
                except BaseException:
                    scheduler.release(slot)
                    raise
                active[launched.run_id] = (launched, slot, EventTail(launched.events_path), None)
                say(f"run [bold]{launched.run_id}[/] on {slot.label} -> {launched.run_dir}")
            for run_id, (launched, slot, tail, end) in list(active.items()):
                done = launched.process.poll() is not None
                for e in tail.poll():
                    if json_mode:
                        sys.stdout.write(json.dumps(e) + "\n")
                    elif e.get("type") == "start":
                        say(f"{run_id}: {e.get('config_name')} on {e.get('device')}, data {e.get('data_source')}")
                    elif e.get("type") == "epoch":
                        say(f"{run_id}: {_epoch_row(e)}")
                    if e.get("type") == "end":
                        end = e
                active[run_id] = (launched, slot, tail, end)
                if json_mode:
                    sys.stdout.flush()
                if done:
                    code = launched.process.wait()
                    if interrupted and code == 0:
                        code = 130
                    scheduler.release(slot)
                    del active[run_id]
                    if finish is not None:
                        code = finish(launched, code, end)
                    final = final or code
            time.sleep(poll_s)
    finally:
        signal.signal(signal.SIGINT, previous)
    return 130 if interrupted and final == 0 else final
