"""The run view's telemetry strip: per GPU its utilisation and memory over time (sparklines from the
run's heartbeats), or the process's CPU % and resident memory when the run has no GPU; an idle GPU
under a live run is flagged. Drawn as text: one line per GPU, redrawn once per heartbeat."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..telemetry import IDLE_BEATS, IDLE_UTIL, GpuSeries, TelemetrySeries
from .text import show

BLOCKS = "▁▂▃▄▅▆▇█"
HEARTBEAT_S = 5  # the engine's heartbeat period: what IDLE_BEATS readings span


def sparkline(values: list[float | None], width: int, top: float) -> str:
    """The last `width` values as block characters scaled to 0..top (a missing value is a space)."""
    values = values[-width:] if width > 0 else []
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            level = 0 if top <= 0 else int(round(min(max(v / top, 0.0), 1.0) * (len(BLOCKS) - 1)))
            out.append(BLOCKS[level])
    return "".join(out)


def _gb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb / 1024:.1f}"


WIDE = 120  # narrower than this: the short idle flag, no temperature and power


def _fit(fixed: int, width: int, sparks: int) -> int:
    """Cells for each of `sparks` sparklines once `fixed` cells of text are placed (3 at least, 40 at most)."""
    return max(3, min(40, (width - fixed - 1) // sparks))


def gpu_line(g: GpuSeries, width: int, flag_idle: bool) -> Text:
    util, used = _latest(g.util), _latest(g.mem_used_mb)
    idle = flag_idle and g.idle()
    pct = f" {'-' if util is None else f'{util:.0f}'}%".ljust(6)
    mem = f" {_gb(used)}/{_gb(g.mem_total_mb)} GB"
    extras = " ".join(e for e in (f"{g.temp_c:.0f}°C" if g.temp_c is not None else "",
                                  f"{g.power_w:.0f} W" if g.power_w is not None else "") if e)
    extras = f"  {extras}" if extras and width >= WIDE else ""
    flag = (f"  ⚠ GPU idle: under {IDLE_UTIL:.0f}% for {IDLE_BEATS * HEARTBEAT_S} s" if width >= WIDE else " ⚠ idle"
            ) if idle else ""
    spark = _fit(6 + 6 + len(pct) + 6 + len(mem) + len(extras) + len(flag), width, 2)
    text = Text(f"{g.label:<6}", style="bold red" if idle else "bold")
    text.append(" util ", style="dim")
    text.append(sparkline(g.util, spark, 100.0), style="red" if idle else "green")
    text.append(pct)
    text.append("  mem ", style="dim")
    text.append(sparkline(g.mem_used_mb, spark, g.mem_total_mb or max([m for m in g.mem_used_mb if m] or [1.0])),
                style="cyan")
    text.append(mem)
    text.append(extras, style="dim")
    text.append(flag, style="bold reverse red")
    return text


def cpu_line(tele: TelemetrySeries, width: int) -> Text:
    cpu, rss = _latest(tele.cpu_percent), _latest(tele.rss_mb)
    cpu_top = max([100.0] + [c for c in tele.cpu_percent if c is not None])  # several cores: above 100
    pct = f" {'-' if cpu is None else f'{cpu:.0f}'}%".ljust(7)
    mem = f" {_gb(rss)} GB"
    spark = _fit(6 + 5 + len(pct) + 6 + len(mem), width, 2)
    text = Text("CPU   ", style="bold")
    text.append(" cpu ", style="dim")
    text.append(sparkline(tele.cpu_percent, spark, cpu_top), style="green")
    text.append(pct)
    text.append("  rss ", style="dim")
    text.append(sparkline(tele.rss_mb, spark, max([r for r in tele.rss_mb if r] or [1.0])), style="cyan")
    text.append(mem)
    return text


def telemetry_text(tele: TelemetrySeries, width: int, live: bool) -> Text:
    """The strip's lines; `live`: the run is running (an idle GPU then matters)."""
    lines = [gpu_line(g, width, live) for g in tele.gpus.values()] if tele.has_gpus else [cpu_line(tele, width)]
    return Text("\n").join(lines)


def _latest(values: list[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


class RunTelemetry(Static):
    """Hidden until the run's first heartbeat with telemetry."""

    DEFAULT_CSS = """
    RunTelemetry { height: auto; display: none; }
    RunTelemetry.-shown { display: block; }
    """

    idle: list[GpuSeries] = []  # the GPUs flagged idle now

    def draw(self, tele: TelemetrySeries, live: bool) -> None:
        self.set_class(bool(tele), "-shown")
        self.idle = tele.idle_gpus() if live else []
        if tele:
            show(self, telemetry_text(tele, self.size.width or 120, live))
        tele.dirty = False
