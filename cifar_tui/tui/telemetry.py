"""A run's telemetry over time, folded from its `heartbeat` events (no textual import).

Each heartbeat carries ``telemetry`` (engine/telemetry.py): the process's CPU % and resident
memory, and per GPU its utilisation and memory. The run view draws the series and flags an
idle GPU under a running run: the GPU waits for data (a slow input pipeline, a stuck worker).
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_POINTS = 720      # heartbeats kept (one per 5 s: an hour); older ones are thinned, not dropped
IDLE_UTIL = 10.0      # a GPU below this utilisation (%) ...
IDLE_BEATS = 3        # ... in this many heartbeats in a row (15 s) is idle


@dataclass
class GpuSeries:
    index: int | None
    name: str | None = None
    util: list[float | None] = field(default_factory=list)
    mem_used_mb: list[float | None] = field(default_factory=list)
    mem_total_mb: float | None = None
    temp_c: float | None = None
    power_w: float | None = None

    @property
    def label(self) -> str:
        return f"GPU {self.index}" if self.index is not None else "GPU"

    def idle(self) -> bool:
        """Below IDLE_UTIL in each of the last IDLE_BEATS readings."""
        last = self.util[-IDLE_BEATS:]
        return len(last) == IDLE_BEATS and all(u is not None and u < IDLE_UTIL for u in last)


@dataclass
class TelemetrySeries:
    """Heartbeat readings of one run: CPU % and RSS, and one GpuSeries per GPU (by NVML index)."""

    t: list[float] = field(default_factory=list)
    cpu_percent: list[float | None] = field(default_factory=list)
    rss_mb: list[float | None] = field(default_factory=list)
    gpus: dict[int | None, GpuSeries] = field(default_factory=dict)
    dirty: bool = False

    def __bool__(self) -> bool:
        return bool(self.t)

    def add(self, event: dict) -> None:
        """Take one `heartbeat` event in (one without telemetry is skipped)."""
        tele = event.get("telemetry")
        if not isinstance(tele, dict):
            return
        self.t.append(float(event.get("t") or 0.0))
        self.cpu_percent.append(_num(tele.get("cpu_percent")))
        self.rss_mb.append(_num(tele.get("rss_mb")))
        n = len(self.t)
        readings = tele.get("gpus") if isinstance(tele.get("gpus"), list) else []
        seen = set()
        for reading in readings:
            if not isinstance(reading, dict):
                continue
            index = reading.get("index")
            series = self.gpus.get(index)
            if series is None:  # a GPU seen first now: no readings before
                series = self.gpus[index] = GpuSeries(index, util=[None] * (n - 1), mem_used_mb=[None] * (n - 1))
            series.name = reading.get("name") or series.name
            series.util.append(_num(reading.get("util")))
            series.mem_used_mb.append(_num(reading.get("mem_used_mb")))
            series.mem_total_mb = _num(reading.get("mem_total_mb")) or series.mem_total_mb
            series.temp_c = _num(reading.get("temp_c"))
            series.power_w = _num(reading.get("power_w"))
            seen.add(index)
        for index, series in self.gpus.items():
            if index not in seen:
                series.util.append(None)
                series.mem_used_mb.append(None)
        if n > MAX_POINTS:
            self._thin()
        self.dirty = True

    def _thin(self) -> None:
        """Halve the history (every other point), keeping the newest: bounded memory, the same shape."""
        keep = slice((len(self.t) - 1) % 2, None, 2)
        self.t, self.cpu_percent, self.rss_mb = self.t[keep], self.cpu_percent[keep], self.rss_mb[keep]
        for series in self.gpus.values():
            series.util, series.mem_used_mb = series.util[keep], series.mem_used_mb[keep]

    # -- what the view shows ----------------------------------------------
    @property
    def has_gpus(self) -> bool:
        return bool(self.gpus)

    def idle_gpus(self) -> list[GpuSeries]:
        return [g for g in self.gpus.values() if g.idle()]


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
