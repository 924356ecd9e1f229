"""Section 3: the same training with a live TUI attached vs headless.

A real CifarTUI in a separate process, headless through ``App.run_test()``, its run tab open and
tailing the events, vs no reader at all (events still written).  Phases alternate (ABBA), one
epoch of ``tui_steps`` steps each; neighbouring (H, T) phases form the pairs whose ratios are
reported, so a slow drift of the machine's load cancels in each.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .common import BenchContext, DetailRow, Section, cpu_seconds, median, number, rounded
from .training import bench_config, check_exit, make_trainer

# The only place the bench knows the TUI's insides: how to open a run's live view.
_TUI_ATTACH = r"""
import asyncio, sys
from pathlib import Path
from cifar_tui.tui.app import CifarTUI
from cifar_tui.workspace import Workspace
from cifar_tui.tui.support import pane_id_for

home, data, rid = sys.argv[1:4]

async def main():
    app = CifarTUI(Workspace(home=Path(home), data_root=Path(data)))
    async with app.run_test(size=(160, 48)) as pilot:
        while not (rid in app.views and app.views[rid].loaded):
            await pilot.pause(0.1)
        app.query_one("#tabs").active = pane_id_for(rid)  # the run's live view in front
        await pilot.pause(0.3)
        print("ATTACHED", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin

asyncio.run(main())
"""


class _AttachedTUI:
    """A real CifarTUI in its own process (headless run_test), tailing one run."""

    def __init__(self, home: Path, data_root: Path, run_id: str, timeout: float = 90.0):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _TUI_ATTACH, str(home), str(data_root), run_id],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        line: dict[str, str] = {}

        def read() -> None:
            line["text"] = self.proc.stdout.readline() if self.proc.stdout else ""

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if "ATTACHED" not in line.get("text", ""):
            self.close()
            err = self.proc.stderr.read()[-400:] if self.proc.stderr else ""
            raise RuntimeError(f"the TUI did not attach to {run_id} within {timeout:.0f}s: {err.strip()}")

    def cpu_seconds(self) -> Optional[float]:
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=10)


def bench_tui(ctx: BenchContext) -> None:
    """Phases of tui_steps steps each, headless (H) or with a live TUI attached (T)."""
    plan, out = ctx.plan, ctx.out
    with ctx.prog.step(f"training with a live TUI attached vs headless ({plan.tui_phases})") as note:
        batch = plan.train_batch
        phases = plan.tui_phases
        cfg = bench_config(plan, ctx.device, 32, batch, plan.tui_steps, epochs=len(phases) + 1)
        home = ctx.workdir / "tui"
        rates: dict[str, list[float]] = {"H": [], "T": []}
        sequence: list[tuple[str, float]] = []
        tui_cpu: list[float] = []
        state: dict[str, Any] = {"tui": None, "cpu0": None}

        def set_phase(trainer: Any, phase: str) -> None:
            tui = state["tui"]
            if phase == "T" and tui is None:
                state["tui"] = _AttachedTUI(home / "runs", home / "data", trainer.run_id)
                time.sleep(plan.tui_settle_s)  # past the TUI's start-up burst
            elif phase == "H" and tui is not None:
                tui.close()
                state["tui"] = None
            state["cpu0"] = state["tui"].cpu_seconds() if state["tui"] else None

        def on_epoch(trainer: Any, elapsed: float, seen: float) -> None:
            done = trainer.epoch - 1  # epoch 1 is the warm-up
            if done >= 1:
                phase = phases[done - 1]
                rates[phase].append(seen / elapsed)
                sequence.append((phase, seen / elapsed))
                if phase == "T" and state["cpu0"] is not None:
                    cpu1 = state["tui"].cpu_seconds()
                    if cpu1 is not None:
                        tui_cpu.append((cpu1 - state["cpu0"]) / elapsed)
            if done < len(phases):
                set_phase(trainer, phases[done])

        trainer = make_trainer(cfg, home, on_epoch)
        try:
            code = trainer.run()
        finally:
            if state["tui"] is not None:
                state["tui"].close()
        check_exit(code)
        h, t = median(rates["H"]), median(rates["T"])
        pairs = [dict(sequence[i:i + 2]) for i in range(0, len(sequence) - 1, 2)]
        pair_ratios = [p["T"] / p["H"] for p in pairs if set(p) == {"H", "T"}]
        ratio = median(pair_ratios) if pair_ratios else t / h
        out["tui_vs_headless"] = rounded(ratio, 3)
        out["tui_img_per_s"] = rounded(t, 1)
        out["headless_img_per_s"] = rounded(h, 1)
        out["tui_cpu_cores"] = rounded(median(tui_cpu), 3)  # CPU the TUI process used while attached
        out["tui_phase_steps"] = plan.tui_steps
        out["tui_batch"] = batch
        out["samples"]["tui_attached"] = [round(v, 1) for v in rates["T"]]
        out["samples"]["tui_cpu_cores"] = [round(v, 3) for v in tui_cpu]
        out["samples"]["tui_pair_ratios"] = [round(v, 3) for v in pair_ratios]
        out["samples"]["tui_headless"] = [round(v, 1) for v in rates["H"]]
        note(f"{ratio:.3f} ({t:,.1f} vs {h:,.1f} img/s; the TUI used {out['tui_cpu_cores'] or 0:.2f} cores)")


def tui_details(results: dict) -> list[DetailRow]:
    if results.get("tui_img_per_s") is None:
        return []
    return [(f"training img/s, TUI attached (reference: headless); TUI used {number(results, 'tui_cpu_cores', '.2f')} cores",
             number(results, "tui_img_per_s", ",.1f"), number(results, "headless_img_per_s", ",.1f"))]


def run(ctx: BenchContext) -> None:
    with ctx.timed("tui"):
        bench_tui(ctx)


SECTION = Section("tui", run, tui_details)
