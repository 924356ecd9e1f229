"""The header's GPU line: every GPU of the machine with its utilisation and memory (NVML, through
engine.telemetry.machine_gpus, read in a worker thread every few seconds: a hung driver never
blocks the UI) and the run holding it (the store's GPU leases, which every TUI and CLI on the
machine shares). Hidden on a machine without GPUs; without NVML (or with GPUs simulated by
CIFAR_TUI_GPUS) it shows the holders only."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.telemetry import machine_gpus, nvml

from ..support import short_run
from ..telemetry import IDLE_UTIL
from .text import show

SAMPLE_S = 3.0      # NVML readings this often
IDLE_SAMPLES = 3    # a held GPU under IDLE_UTIL in this many readings in a row is flagged
BAR = 5             # cells of the utilisation bar


def util_bar(util: float) -> str:
    filled = int(round(min(max(util, 0.0), 100.0) / 100.0 * BAR))
    return "▮" * filled + "▯" * (BAR - filled)


class GpuBar(Static):
    def __init__(self, gpus: list[str], **kw):
        super().__init__(**kw)
        self.gpus = list(gpus)               # the GPU ids runs may use (the supervisor's)
        self.readings: list[dict] = []       # machine_gpus()'s latest
        self.holders: dict[str, str] = {}    # GPU id -> run id holding its lease
        self.samples = 0                     # readings taken so far (tests wait on it)
        self._recent: dict[str, list[float | None]] = {}  # GPU id -> its latest utilisations
        self._sampling = False
        self._timer = None

    def on_mount(self) -> None:
        self._timer = self.set_interval(SAMPLE_S, self.sample, name="gpu telemetry")
        self.sample()
        self._draw()

    def sample(self) -> None:
        if self._sampling:  # the last read has not come back (a slow driver): no pile-up of threads
            return
        self._sampling = True
        self.run_worker(self._read, thread=True, name="machine_gpus", group="gpu-telemetry", exit_on_error=False)

    def _read(self) -> None:
        try:
            readings = machine_gpus()
            available = nvml() is not None
        except Exception:  # noqa: BLE001 - telemetry is a nicety: never a crash of the app
            readings, available = [], False
        try:
            self.app.call_from_thread(self._got, readings, available)
        except RuntimeError:  # the app is shutting down
            pass

    def _got(self, readings: list[dict], available: bool = True) -> None:
        self._sampling = False
        if not available and self._timer is not None:  # no NVML in this process: it will not come
            self._timer.stop()
        self.samples += 1
        self.readings = readings
        for r in readings:
            recent = self._recent.setdefault(str(r.get("index")), [])
            recent.append(r.get("util"))
            del recent[:-IDLE_SAMPLES]
        self._draw()

    def set_holders(self, holders: dict[str, str]) -> None:
        if holders != self.holders:
            self.holders = dict(holders)
            self._draw()

    def idle_held(self) -> list[str]:
        """GPUs held by a run whose utilisation stayed under IDLE_UTIL for IDLE_SAMPLES readings."""
        return [gid for gid, recent in self._recent.items() if gid in self.holders and len(recent) == IDLE_SAMPLES
                and all(u is not None and u < IDLE_UTIL for u in recent)]

    # ------------------------------------------------------------------ drawing
    def entries(self, compact: bool) -> list[Text]:
        out = []
        seen = set()
        idle = set(self.idle_held())
        for r in self.readings:
            gid = str(r.get("index"))
            seen.add(gid)
            text = Text(f"GPU {gid} ", style="bold red" if gid in idle else "bold")
            util, used, total = r.get("util"), r.get("mem_used_mb"), r.get("mem_total_mb")
            if util is not None:
                if not compact:
                    text.append(util_bar(util), style="red" if gid in idle else "green")
                    text.append(" ")
                text.append(f"{util:.0f}%")
            if used is not None:
                text.append(f" {used / 1024:.0f}/{(total or 0) / 1024:.0f}G", style="cyan")
            text.append_text(self._holder(gid, compact))
            if gid in idle:
                text.append(" ⚠ idle", style="bold reverse red")
            out.append(text)
        for gid in self.gpus:  # simulated, or no NVML: who holds it is all there is to say
            if gid not in seen:
                out.append(Text(f"GPU {gid}", style="bold") + self._holder(gid, compact))
        return out

    def _holder(self, gid: str, compact: bool) -> Text:
        run = self.holders.get(gid)
        if run is None:
            return Text(" free", style="dim")
        name = short_run(run)
        return Text(f" ▶ {name.rsplit('·', 1)[-1] if compact else name}", style="cyan")

    def _draw(self) -> None:
        width = self.size.width or 160
        entries = self.entries(compact=False)
        if sum(e.cell_len + 3 for e in entries) > width:
            entries = self.entries(compact=True)
        self.set_class(bool(entries), "-shown")
        show(self, Text("   ").join(entries))

    def on_resize(self) -> None:
        self._draw()
