"""Telemetry: a process's CPU and memory (psutil) and GPUs' utilisation, memory, temperature and
power (NVML through nvidia-ml-py). No torch here: the TUI imports it for its header.

The engine puts ``ProcessSampler.sample()`` into every `heartbeat` event as ``telemetry``::

    {"cpu_percent": 97.5, "rss_mb": 1834.2,
     "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "util": 98.0, "mem_used_mb": 31021.0,
               "mem_total_mb": 81559.0, "temp_c": 61, "power_w": 402.3}]}

`gpus` is null where the run uses no GPU or NVML cannot be loaded; a field a GPU does not report
(NVML_ERROR_NOT_SUPPORTED: power on some boards) is null. `util` is the mean of the samples taken
since the last heartbeat (the engine samples once a second: one NVML reading is a coarse 1/6 to 1 s
window, and an idle GPU under a running run is the thing to see). `index` is the NVML (nvidia-smi)
index, whatever CUDA_VISIBLE_DEVICES renumbered.

``machine_gpus()`` gives every GPU of the host in the same form (the TUI's header); [] without NVML.

Tests replace NVML with a fake module through ``set_nvml_module`` (the seam).
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterable, Sequence

_MB = 1024 * 1024

_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {"module": None, "ready": None}  # ready: None untried, False failed, True ok


def set_nvml_module(module: Any | None) -> None:
    """Use `module` (pynvml's API) instead of importing pynvml; None: back to pynvml. For tests."""
    with _nvml_lock:
        _nvml_state["module"], _nvml_state["ready"] = module, None


def nvml() -> Any | None:
    """The initialised NVML module, or None where there is no driver (tried once per process)."""
    with _nvml_lock:
        if _nvml_state["ready"] is None:
            module = _nvml_state["module"]
            try:
                if module is None:
                    import pynvml as module  # nvidia-ml-py
                module.nvmlInit()
                _nvml_state["module"], _nvml_state["ready"] = module, True
            except Exception:  # noqa: BLE001 - no library, no driver, no device: no GPU telemetry
                _nvml_state["ready"] = False
        return _nvml_state["module"] if _nvml_state["ready"] else None


def _read(fn, *args) -> Any:
    """One NVML query; None when this GPU does not support it (or it fails)."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - pynvml.NVMLError and its subclasses
        return None


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def gpu_reading(nv: Any, handle: Any, index: int | None) -> dict:
    """One GPU's current figures (fields the GPU does not report are None)."""
    util = _read(nv.nvmlDeviceGetUtilizationRates, handle)
    mem = _read(nv.nvmlDeviceGetMemoryInfo, handle)
    temp = _read(nv.nvmlDeviceGetTemperature, handle, getattr(nv, "NVML_TEMPERATURE_GPU", 0))
    power_mw = _read(nv.nvmlDeviceGetPowerUsage, handle)
    return {
        "index": index,
        "name": _text(_read(nv.nvmlDeviceGetName, handle)),
        "util": None if util is None else float(util.gpu),
        "mem_used_mb": None if mem is None else round(mem.used / _MB, 1),
        "mem_total_mb": None if mem is None else round(mem.total / _MB, 1),
        "temp_c": temp,
        "power_w": None if power_mw is None else round(power_mw / 1000.0, 1),
    }


def _normal_uuid(uuid: Any) -> str:
    text = (_text(uuid) or "").strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def nvml_handles(nv: Any, devices: Sequence[Any]) -> list[tuple[int | None, Any]]:
    """(NVML index, handle) of each device: a UUID ('GPU-…' or torch's bare form), an NVML index, or
    a tuple of names to try in turn (a UUID, then an index); devices NVML does not know are left out."""
    out = []
    for dev in devices:
        for name in dev if isinstance(dev, tuple) else (dev,):
            if isinstance(name, int):
                index, handle = name, _read(nv.nvmlDeviceGetHandleByIndex, name)
            else:
                handle = _read(nv.nvmlDeviceGetHandleByUUID, f"GPU-{_normal_uuid(name)}")
                index = None if handle is None else _read(nv.nvmlDeviceGetIndex, handle)
            if handle is not None:
                out.append((index, handle))
                break
    return out


def nvml_indices_from_env(count: int, env: dict | None = None) -> list[Any]:
    """The first `count` CUDA devices as NVML names: CUDA_VISIBLE_DEVICES entries (indices or
    UUIDs), or 0..count-1 when it is unset. Used where torch cannot tell a device's UUID."""
    visible = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    out: list[Any] = []
    for item in (v.strip() for v in visible.split(",")):
        if not item:
            continue
        out.append(int(item) if item.isdigit() else item)
    return out[:count]


def machine_gpus() -> list[dict]:
    """Every GPU of this host, NVML order (the TUI's header); [] where there is none or no NVML."""
    nv = nvml()
    if nv is None:
        return []
    count = _read(nv.nvmlDeviceGetCount) or 0
    return [gpu_reading(nv, handle, index) for index, handle in nvml_handles(nv, list(range(count)))]


class GpuSampler:
    """The run's GPUs: readings on demand, utilisation averaged over the samples since the last read."""

    def __init__(self, devices: Iterable[Any]):
        self.nv = nvml()
        self.handles = nvml_handles(self.nv, list(devices)) if self.nv is not None else []
        self._util_sum = [0.0] * len(self.handles)
        self._util_n = [0] * len(self.handles)

    @property
    def active(self) -> bool:
        return bool(self.handles)

    def sample_util(self) -> None:
        """Add one utilisation sample per GPU (cheap: one NVML call each)."""
        for k, (_, handle) in enumerate(self.handles):
            util = _read(self.nv.nvmlDeviceGetUtilizationRates, handle)
            if util is not None:
                self._util_sum[k] += float(util.gpu)
                self._util_n[k] += 1

    def read(self) -> list[dict] | None:
        if not self.handles:
            return None
        out = []
        for k, (index, handle) in enumerate(self.handles):
            reading = gpu_reading(self.nv, handle, index)
            if self._util_n[k]:
                reading["util"] = round(self._util_sum[k] / self._util_n[k], 1)
            out.append(reading)
        self._util_sum = [0.0] * len(self.handles)
        self._util_n = [0] * len(self.handles)
        return out


class ProcessSampler:
    """This process's CPU use (percent of one core, since the previous sample; children such as
    DataLoader workers included) and resident memory, plus its GPUs."""

    def __init__(self, gpus: GpuSampler | None = None, pid: int | None = None):
        import psutil

        self.process = psutil.Process(pid)
        self.gpus = gpus
        self._children: dict[int, Any] = {}
        self.process.cpu_percent(None)  # the first call only starts the interval

    def _child_cpu(self) -> float:
        import psutil

        total = 0.0
        try:
            kids = self.process.children(recursive=True)
        except psutil.Error:
            return 0.0
        alive = {}
        for child in kids:
            known = self._children.get(child.pid, child)
            try:
                value = known.cpu_percent(None)  # 0.0 the first time a child is seen
            except psutil.Error:
                continue
            total += value
            alive[child.pid] = known
        self._children = alive
        return total

    def sample(self) -> dict:
        import psutil

        try:
            cpu = self.process.cpu_percent(None) + self._child_cpu()
            rss = self.process.memory_info().rss / _MB
        except psutil.Error:
            cpu, rss = None, None
        return {"cpu_percent": None if cpu is None else round(cpu, 1), "rss_mb": None if rss is None else round(rss, 1),
                "gpus": self.gpus.read() if self.gpus is not None else None}
