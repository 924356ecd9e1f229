"""Which GPUs there are, and how a run is pinned to its GPUs.

Which run gets which GPU is decided by cifar_tui.supervisor through the store's GPU leases
(engine/record/leases.py), shared by every launcher on the machine. No torch import here: the
device list comes from the environment or nvidia-smi.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Mapping, Sequence


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
