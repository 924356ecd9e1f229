"""Which GPUs there are, and how a run is pinned to its GPUs.

Which run gets which GPU is decided by cifar_tui.supervisor through the store's GPU leases
(engine/leases.py), shared by every launcher on the machine. No torch import here: the
device list comes from the environment or nvidia-smi.
"""
from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

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


def default_max_parallel(gpus: Sequence[str]) -> int:
    """Runs at a time: CIFAR_TUI_MAX_PARALLEL, else one per visible GPU, else 1 (CPU)."""
    env = os.environ.get("CIFAR_TUI_MAX_PARALLEL")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return max(1, len(gpus))


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
    """COMPAT, to be removed when the TUI calls cifar_tui.supervisor.Supervisor: the TUI's
    in-process slot pool (it does not see other launchers; the supervisor's leases do).

    Hands out slots: a run of `n` processes gets `n` free GPUs, at most `max_parallel` runs
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
