"""A stand-in for pynvml (engine.telemetry.set_nvml_module), for a machine without a GPU: GPUs whose
utilisation and memory a test sets and changes."""
from __future__ import annotations

from types import SimpleNamespace

MB = 1024 * 1024


class FakeNvml:
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: int = 2, total_mb: float = 81920.0):
        self.util = {i: 0.0 for i in range(gpus)}
        self.used_mb = {i: 0.0 for i in range(gpus)}
        self.total_mb = total_mb

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.util)

    def nvmlDeviceGetHandleByIndex(self, i):
        if i not in self.util:
            raise RuntimeError("Invalid Argument")
        return SimpleNamespace(i=i)

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self.util[h.i], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.used_mb[h.i] * MB, total=self.total_mb * MB, free=0)

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 55

    def nvmlDeviceGetPowerUsage(self, h):
        return 300_000
