"""The engine's heartbeat: every few seconds a `heartbeat` event with telemetry and the time of
the last step, and the same freshness in the store (the run's row and its GPU lease).

The training loop only stores a float when it makes a step (`progress_at`); this thread reads
it, so a loop that is stuck (a hung DataLoader worker, GPU or NCCL collective) while the process
lives shows as a growing gap between the beat and the last progress: `stalled` (engine/record/status.py).
Reading the timestamp costs the loop no host-device sync.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .telemetry import GpuSampler, ProcessSampler, nvml_indices_from_env

HEARTBEAT_INTERVAL_S = 5.0
GPU_SAMPLE_INTERVAL_S = 1.0  # utilisation is averaged over these samples between beats (cheap NVML calls)


class Heartbeat(threading.Thread):
    """emit(type, **fields) writes an event; open_store() gives a store whose writes never raise
    (the trainer's SafeStore); progress_at() the unix time of the last step or evaluation batch."""

    def __init__(self, emit: Callable[..., Any], open_store: Callable[[], Any], run_id: str,
                 wall_clock: Callable[[], float], *, progress_at: Callable[[], float | None] = lambda: None,
                 gpus: list | None = None, interval_s: float = HEARTBEAT_INTERVAL_S):
        super().__init__(daemon=True, name="heartbeat")
        self.emit, self.open_store, self.run_id, self.wall_clock = emit, open_store, run_id, wall_clock
        self.progress_at = progress_at
        self.interval_s = interval_s
        self.gpu_devices = list(gpus or [])
        self.stop_event = threading.Event()

    def _sampler(self) -> ProcessSampler | None:
        try:
            return ProcessSampler(GpuSampler(self.gpu_devices) if self.gpu_devices else None)
        except Exception:  # noqa: BLE001 - telemetry is a nicety: never a reason to lose the heartbeat
            return None

    def run(self) -> None:
        store = self.open_store()
        sampler = self._sampler()
        gpus = sampler.gpus if sampler is not None and sampler.gpus is not None and sampler.gpus.active else None
        tick = min(GPU_SAMPLE_INTERVAL_S, self.interval_s) if gpus else self.interval_s
        next_beat = time.monotonic() + self.interval_s
        while not self.stop_event.wait(max(0.0, min(tick, next_beat - time.monotonic()))):
            if gpus is not None:
                gpus.sample_util()
            if time.monotonic() < next_beat:
                continue
            next_beat += self.interval_s
            progress = self.progress_at()
            fields: dict[str, Any] = {"progress_t": None if progress is None else round(progress, 3)}
            if sampler is not None:
                try:
                    fields["telemetry"] = sampler.sample()
                except Exception:  # noqa: BLE001
                    sampler = None
            self.emit("heartbeat", **fields)
            store.heartbeat(self.run_id, self.wall_clock(), progress_at=progress)
        store.close()


def run_gpu_devices(device: Any, local_processes: int = 1) -> list:
    """The GPUs of a run on this node, as NVML names to try (torch's UUID, then the index that
    CUDA_VISIBLE_DEVICES gives): the device of a single-process run, or the first `local_processes`
    visible devices of a DDP run."""
    if getattr(device, "type", None) != "cuda":
        return []
    import torch

    first = device.index if device.index is not None else torch.cuda.current_device()
    indices = list(range(local_processes)) if local_processes > 1 else [first]
    fallback = nvml_indices_from_env(max(indices) + 1)
    out: list = []
    for i in indices:
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        by_env = fallback[i] if i < len(fallback) else i
        out.append((str(uuid), by_env) if uuid else (by_env,))
    return out


def reset_peak_memory(device: Any) -> None:
    """Start a new peak of torch.cuda memory (each epoch's `peak_mem_mb`)."""
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: Any) -> dict:
    """{"peak_mem_mb": ...} since the last reset on a GPU; {} elsewhere (for the `epoch` event)."""
    if getattr(device, "type", None) != "cuda":
        return {}
    import torch

    return {"peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / (1024 * 1024), 1)}
