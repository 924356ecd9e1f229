"""Section 4: start-up wall time of ``cifar-tui --help``, ``cifar-tui list``, the plan of a 1,000-run
sweep (``run --dry-run``; fresh processes) and of the TUI's first screen: a fresh ``cifar-tui`` in tmux until the experiments table is on
screen (headless ``run_test()`` in a fresh process when tmux is missing)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import BenchContext, Section, Tmux, cli_command, median, rounded, time_command


_TUI_FIRST_SCREEN = r"""
import asyncio, sys
from pathlib import Path
from cifar_tui.tui.app import CifarTUI
from cifar_tui.workspace import Workspace

async def main():
    app = CifarTUI(Workspace(home=Path(sys.argv[1]), data_root=Path(sys.argv[2])))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one("#exp-table")
        while table.row_count == 0:
            await pilot.pause(0.01)
        await pilot.pause()
        print("READY", flush=True)

asyncio.run(main())
"""


def _tui_first_screen_headless(env: dict, home: Path, data_root: Path, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _TUI_FIRST_SCREEN, str(home), str(data_root)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        elapsed = time.perf_counter() - t0
        if "READY" not in line:
            raise RuntimeError(f"the TUI did not start: {(proc.stderr.read() if proc.stderr else '')[-300:]}")
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return elapsed


def _tui_first_screens_tmux(tmux_bin: str, repeats: int, env: dict, home: Path, data_root: Path, cwd: Path,
                            marker: str) -> list[float]:
    """A fresh `cifar-tui` in a new tmux window per repeat: process start until `marker`
    (a row of the experiments table) is on the screen (capture-pane every 10 ms)."""
    tmux = Tmux(tmux_bin)
    q = shlex.quote
    envs = " ".join(f"{k}={q(env[k])}" for k in ("CIFAR_TUI_HOME", "CIFAR_TUI_DATA", "PATH") if k in env)
    cmd = f"cd {q(str(cwd))} && env {envs} {' '.join(q(c) for c in cli_command())}; sleep 60"
    times = []
    tmux("new-session", "-d", "-s", "bench", "-x", "160", "-y", "48", "sleep 600")
    try:
        for i in range(repeats):
            t0 = time.perf_counter()
            tmux("new-window", "-t", "bench", "-n", f"w{i}", cmd)
            deadline = t0 + 60
            while True:
                screen = tmux("capture-pane", "-p", "-t", f"bench:w{i}")
                if marker in screen:
                    times.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the TUI's first screen did not show {marker!r} within 60 s:\n{screen[-500:]}")
                time.sleep(0.01)
            tmux("kill-window", "-t", f"bench:w{i}")
            time.sleep(0.3)  # let the killed app exit before the next start
    finally:
        try:
            tmux("kill-server")
        except (subprocess.SubprocessError, OSError):
            pass
    return times


def bench_startup(ctx: BenchContext) -> None:
    plan, out, prog, workdir = ctx.plan, ctx.out, ctx.prog, ctx.workdir
    home, data_root = workdir / "startup" / "runs", workdir / "startup" / "data"
    # the plan's own cost: its time estimate from history only (a probe is measured once per machine, cached)
    env = {**os.environ, "CIFAR_TUI_HOME": str(home), "CIFAR_TUI_DATA": str(data_root), "CIFAR_TUI_ESTIMATE_PROBE": "off"}
    for k in ("COLUMNS", "LINES"):
        env.pop(k, None)
    cwd = workdir
    cli = cli_command()
    out["cli_command"] = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cli))
    grid = [a for key in ("optim.lr", "optim.weight_decay", "loss.label_smoothing")
            for a in ("--set", f"{key}=" + ",".join(f"0.0{i}" for i in range(1, 10)) + ",0.099")]  # 10 x 10 x 10
    for key, args in (("help_s", ["--help"]), ("list_s", ["list"]),
                      ("sweep_plan_1000_s", ["run", "resnet18_baseline", *grid, "--dry-run"])):
        with prog.step(f"start-up: cifar-tui {' '.join(args[:1] + ['...'] if len(args) > 2 else args)}") as note:
            time_command(cli + args, env, cwd)  # warm the file cache
            times = [time_command(cli + args, env, cwd) for _ in range(plan.startup_repeats)]
            out[key] = rounded(median(times), 3)
            out["samples"][key] = [round(v, 3) for v in times]
            note(f"{out[key]:.3f} s")
    with prog.step("start-up: TUI first screen") as note:
        from engine.config import list_config_paths

        paths = list_config_paths()
        marker = paths[0].stem if paths else "experiments"
        tmux_bin = shutil.which("tmux")
        if tmux_bin:
            times = _tui_first_screens_tmux(tmux_bin, plan.tui_screen_repeats + 1, env, home, data_root, cwd, marker)[1:]
            out["tui_first_screen_method"] = "tmux: fresh `cifar-tui` process until the experiments table is on screen"
        else:
            _tui_first_screen_headless(env, home, data_root, cwd)
            times = [_tui_first_screen_headless(env, home, data_root, cwd) for _ in range(plan.tui_screen_repeats)]
            out["tui_first_screen_method"] = "headless run_test in a fresh process until the experiments table has rows"
        out["tui_first_screen_s"] = rounded(median(times), 3)
        out["samples"]["tui_first_screen_s"] = [round(v, 3) for v in times]
        note(f"{out['tui_first_screen_s']:.3f} s")


def run(ctx: BenchContext) -> None:
    with ctx.timed("startup"):
        bench_startup(ctx)


SECTION = Section("startup", run)
