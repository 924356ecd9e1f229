"""`cifar-tui bench --workspace N`: how the TUI and the CLI cope with a workspace of N runs.

The workspace is N copies of one real run directory: a tiny engine run on synthetic data, made for
the purpose (or `--template RUN_DIR`). Each copy gets a new run id and a start time one minute
apart, written into its events; its config.yaml and stdout.log are copied as they are. Checkpoints
and TensorBoard files are not copied: nothing measured here reads them. Then, per N:

- store rebuild: `rebuild_store` from the N run directories into an empty database (in this
  process; the files were just written, so they are in the page cache);
- `cifar-tui runs` and `cifar-tui leaderboard`: wall time of fresh processes with the store
  built (warm), output to /dev/null (not a terminal: Rich renders without colour, 80 columns);
- the TUI's first screen: a fresh `cifar-tui` in a new tmux window, from the start of the process
  until a row of the experiments table is on screen (capture-pane every 10 ms);
- the TUI's idle CPU: that process's CPU time (user + system, /proc) over a window in which
  nothing happens, with the Experiments tab in front, then with the Runs tab in front (all N rows
  listed), and how long the Runs tab takes to show its first row after the key `2`.

Without tmux the TUI figures come from `App.run_test()` in a fresh process (headless: no terminal
output, so its CPU figure is a lower bound), and the output says so.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.record.events import read_events
from engine.record.paths import events_path

from .common import Tmux, _Progress, cli_command, cpu_seconds, loadavg, median, rounded, time_command

TEMPLATE_CONFIG = "resnet18_baseline"
TEMPLATE_OVERRIDES = ["data.source=synthetic", "data.train_limit=256", "data.test_limit=128", "train.batch_size=64",
                      "train.device=cpu", "train.epochs=2"]
COPIED_FILES = ("config.yaml", "stdout.log")


@dataclass(frozen=True)
class WorkspacePlan:
    """Repeats and windows of one run of the section (quick, full, or tiny for tests)."""

    cmd_repeats: int = 5       # `cifar-tui runs` / `leaderboard`, after one warm-up
    tui_repeats: int = 3       # fresh TUI processes (first screen); the last one also idles
    settle_s: float = 3.0      # after the first screen, before waiting for the TUI to go quiet
    window_s: float = 30.0     # each idle CPU window

    @classmethod
    def quick(cls) -> "WorkspacePlan":
        return cls(cmd_repeats=3, tui_repeats=2, settle_s=2.0, window_s=10.0)

    @classmethod
    def tiny(cls) -> "WorkspacePlan":
        return cls(cmd_repeats=1, tui_repeats=1, settle_s=0.2, window_s=0.5)

# (key, label, goal at the largest N, unit)
GOALS = [
    ("tui_idle_cores", "TUI idle CPU, Experiments tab (share of one core)", 0.01, "cores"),
    ("tui_first_screen_s", "TUI first screen", 1.5, "s"),
    ("runs_cmd_s", "`cifar-tui runs`, warm store", 1.0, "s"),
    ("leaderboard_cmd_s", "`cifar-tui leaderboard`, warm store", 1.0, "s"),
    ("rebuild_s", "store rebuild from the run directories", 30.0, "s"),
]
EXTRA = [
    ("tui_idle_cores_runs_tab", "TUI idle CPU, Runs tab in front (all rows listed)", "cores"),
    ("tui_runs_tab_s", "Runs tab: key `2` until the first run row is on screen", "s"),
    ("tui_runs_tab_quiet_s", "Runs tab: key `2` until the TUI is idle again, every row listed (1 s steps)", "s"),
]


def make_template(workdir: Path) -> Path:
    """A real run directory: the engine trains resnet18 for 2 epochs on 256 synthetic images."""
    from ..launch import LaunchRequest, launch
    from ..workspace import Workspace

    ws = Workspace(home=workdir / "template", data_root=workdir / "data")
    launched = launch(ws, LaunchRequest(TEMPLATE_CONFIG, list(TEMPLATE_OVERRIDES)))
    code = launched.process.wait(timeout=900)
    if code != 0:
        log = (launched.run_dir / "stdout.log").read_text(errors="replace")[-400:]
        raise RuntimeError(f"the template run failed (exit {code}): {log}")
    return launched.run_dir


def copy_runs(template: Path, home: Path, n: int) -> list[str]:
    """N copies of `template` under `home`, each with its own run id and start time (one minute
    apart, older than the template) in its events."""
    events = read_events(events_path(template))
    start = next(e for e in events if e.get("type") == "start")
    name = start.get("config_name") or TEMPLATE_CONFIG
    files = {f: (template / f).read_bytes() for f in COPIED_FILES if (template / f).is_file()}
    t0 = float(start["t"])
    home.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        shift = -60.0 * (i + 1)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t0 + shift))
        run_id = f"{name}-{stamp}-{i % 65536:04x}"
        run_dir = home / run_id
        run_dir.mkdir()
        for fname, data in files.items():
            (run_dir / fname).write_bytes(data)
        lines = []
        for e in events:
            e = dict(e, run_id=run_id)
            if isinstance(e.get("t"), (int, float)):
                e["t"] = round(e["t"] + shift, 3)
            lines.append(json.dumps(e, separators=(",", ":")))
        events_path(run_dir).write_text("\n".join(lines) + "\n")
        ids.append(run_id)
    return ids


def _rebuild(home: Path) -> tuple[float, int]:
    from engine.record.rebuild import rebuild_store
    from engine.record.store import Store

    for suffix in ("", "-wal", "-shm"):
        (home / f"cifar_tui.db{suffix}").unlink(missing_ok=True)
    t0 = time.perf_counter()
    store = Store(home)
    try:
        count = rebuild_store(store)
    finally:
        store.close()
    return time.perf_counter() - t0, count


# ---------------------------------------------------------------------------------------- the TUI


def _tui_tmux(tmux_bin: str, env: dict, cwd: Path, marker: str, run_marker: str, repeats: int, settle_s: float,
              window_s: float) -> dict:
    """Fresh `cifar-tui` processes in tmux windows: first screen (`marker` on screen) each time;
    on the last one the idle CPU with the Experiments tab in front, then the Runs tab (shown when
    `run_marker` is on screen)."""
    tmux = Tmux(tmux_bin)
    q = shlex.quote
    envs = " ".join(f"{k}={q(env[k])}" for k in ("CIFAR_TUI_HOME", "CIFAR_TUI_DATA", "PATH", "PYTHONPATH",
                                                  "OMP_WAIT_POLICY") if k in env)
    cmd = f"cd {q(str(cwd))} && exec env {envs} {' '.join(q(c) for c in cli_command())}"
    out: dict[str, Any] = {"first_screens": []}
    tmux("new-session", "-d", "-s", "wsbench", "-x", "160", "-y", "48", "sleep 3600")
    try:
        for i in range(repeats):
            target = f"wsbench:w{i}"
            t0 = time.perf_counter()
            tmux("new-window", "-t", "wsbench", "-n", f"w{i}", cmd)
            _wait_screen(tmux, target, marker, t0 + 60)
            out["first_screens"].append(time.perf_counter() - t0)
            if i == repeats - 1:
                pid = int(tmux("display-message", "-p", "-t", target, "#{pane_pid}").strip())
                _until_quiet(pid, settle_s)  # experiments load, first refresh, gc.freeze
                out["idle_experiments"] = _cpu_share(pid, window_s)
                t1 = time.perf_counter()
                tmux("send-keys", "-t", target, "2")
                _wait_screen(tmux, target, run_marker, t1 + 60)
                out["runs_tab_s"] = time.perf_counter() - t1
                _until_quiet(pid, 0.0)  # the rows go in by chunks, a frame apart
                out["runs_tab_quiet_s"] = time.perf_counter() - t1
                out["idle_runs_tab"] = _cpu_share(pid, window_s)
            tmux("kill-window", "-t", target)
            time.sleep(0.3)
    finally:
        try:
            tmux("kill-server")
        except (subprocess.SubprocessError, OSError):
            pass
    return out


def _wait_screen(tmux: Tmux, target: str, text: str, deadline: float) -> str:
    while True:
        screen = tmux("capture-pane", "-p", "-t", target)
        if text in screen:
            return screen
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{text!r} not on the TUI's screen within 60 s:\n{screen[-600:]}")
        time.sleep(0.01)


def _until_quiet(pid: int, settle_s: float, quiet: float = 0.02, timeout: float = 120.0) -> float:
    """Wait `settle_s`, then until the process uses less than `quiet` of a core over a second;
    returns the seconds waited."""
    t0 = time.perf_counter()
    time.sleep(settle_s)
    while time.perf_counter() - t0 < timeout:
        share = _cpu_share(pid, 1.0)
        if share is None or share < quiet:
            break
    return time.perf_counter() - t0


def _cpu_share(pid: int, window_s: float) -> Optional[float]:
    """CPU time of the process over `window_s` of wall time, in cores."""
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    time.sleep(window_s)
    c1, t1 = cpu_seconds(pid), time.perf_counter()
    return None if c0 is None or c1 is None else (c1 - c0) / (t1 - t0)


_HEADLESS = r"""
import asyncio, sys, time
from pathlib import Path
from cifar_tui.tui.app import CifarTUI
from cifar_tui.workspace import Workspace

t_start = float(sys.argv[3]); settle, window = float(sys.argv[4]), float(sys.argv[5])

async def main():
    app = CifarTUI(Workspace(home=Path(sys.argv[1]), data_root=Path(sys.argv[2])))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one("#exp-table")
        while table.row_count == 0:
            await pilot.pause(0.01)
        await pilot.pause()
        first = time.time() - t_start
        await asyncio.sleep(settle)
        c0 = time.process_time(); w0 = time.perf_counter()
        await asyncio.sleep(window)
        idle = (time.process_time() - c0) / (time.perf_counter() - w0)
        t1 = time.perf_counter()
        await pilot.press("2")
        runs = app.query_one("#runs-table")
        while runs.row_count == 0 and app.index.runs:
            await pilot.pause(0.01)
        tab = time.perf_counter() - t1
        while app.runs_pane.sync.filling:
            await pilot.pause(0.05)
        filled = time.perf_counter() - t1
        await asyncio.sleep(settle)
        c0 = time.process_time(); w0 = time.perf_counter()
        await asyncio.sleep(window)
        idle_runs = (time.process_time() - c0) / (time.perf_counter() - w0)
        print("RESULT", first, idle, tab, idle_runs, filled, flush=True)

asyncio.run(main())
"""


def _tui_headless(env: dict, home: Path, data_root: Path, cwd: Path, repeats: int, settle_s: float,
                  window_s: float) -> dict:
    out: dict[str, Any] = {"first_screens": []}
    for i in range(repeats):
        proc = subprocess.run([sys.executable, "-c", _HEADLESS, str(home), str(data_root), repr(time.time()),
                               str(settle_s if i == repeats - 1 else 0), str(window_s if i == repeats - 1 else 0)],
                              env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
        if line is None:
            raise RuntimeError(f"the headless TUI failed: {proc.stderr[-400:]}")
        first, idle, tab, idle_runs, filled = map(float, line.split()[1:])
        out["first_screens"].append(first)
        if i == repeats - 1:
            out.update(idle_experiments=idle, runs_tab_s=tab, idle_runs_tab=idle_runs, runs_tab_quiet_s=filled)
    return out


# ---------------------------------------------------------------------------------------- the section


def bench_workspace(sizes: list[int], *, quick: bool = False, template: Optional[Path] = None,
                    progress: bool = True, plan: Optional[WorkspacePlan] = None) -> dict:
    """The figures for each workspace size in `sizes` (JSON-ready)."""
    from engine.config import list_config_paths

    plan = plan or (WorkspacePlan.quick() if quick else WorkspacePlan())
    cmd_repeats, tui_repeats, settle_s, window_s = plan.cmd_repeats, plan.tui_repeats, plan.settle_s, plan.window_s
    out: dict[str, Any] = {"quick": quick, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "cpu_count": os.cpu_count(), "loadavg_start": loadavg(), "sizes": {}}
    workdir = Path(tempfile.mkdtemp(prefix="cifar-tui-wsbench-"))
    t_start = time.perf_counter()
    try:
        with _Progress(progress) as prog:
            with prog.step("workspace: a real template run (engine, 2 epochs on 256 synthetic images)") as note:
                template = Path(template) if template else make_template(workdir)
                note(template.name)
            out["template"] = template.name
            paths = list_config_paths()
            marker = paths[0].stem if paths else "experiments"
            tmux_bin = shutil.which("tmux")
            out["tui_method"] = ("tmux: a fresh `cifar-tui` process in a 160x48 window" if tmux_bin else
                                 "headless App.run_test() in a fresh process (no tmux)")
            for n in sizes:
                fig: dict[str, Any] = {"runs": n}
                root = workdir / f"ws{n}"
                home, data_root = root / "runs", root / "data"
                with prog.step(f"{n:,} runs: copy the template") as note:
                    t0 = time.perf_counter()
                    ids = copy_runs(template, home, n)
                    note(f"{time.perf_counter() - t0:.1f} s")
                with prog.step(f"{n:,} runs: rebuild the store from the run directories") as note:
                    fig["rebuild_s"], count = _rebuild(home)
                    if count != n:
                        raise RuntimeError(f"the rebuild found {count} runs, not {n}")
                    note(f"{fig['rebuild_s']:.2f} s")
                env = {**os.environ, "CIFAR_TUI_HOME": str(home), "CIFAR_TUI_DATA": str(data_root)}
                for k in ("COLUMNS", "LINES"):
                    env.pop(k, None)
                for key, args in (("runs_cmd_s", ["runs"]), ("leaderboard_cmd_s", ["leaderboard"])):
                    with prog.step(f"{n:,} runs: cifar-tui {' '.join(args)}") as note:
                        time_command(cli_command() + args, env, root)  # warm the file cache
                        times = [time_command(cli_command() + args, env, root) for _ in range(cmd_repeats)]
                        fig[key] = median(times)
                        fig[f"{key}_samples"] = [round(t, 3) for t in times]
                        note(f"{fig[key]:.3f} s")
                with prog.step(f"{n:,} runs: the TUI (first screen, idle CPU over {window_s:g} s per tab)") as note:
                    run_marker = ids[0] if ids else "no runs yet"  # the newest run: the Runs tab's first row
                    if tmux_bin:
                        tui = _tui_tmux(tmux_bin, env, root, marker, run_marker, tui_repeats, settle_s, window_s)
                    else:
                        tui = _tui_headless(env, home, data_root, root, tui_repeats, settle_s, window_s)
                    fig["tui_first_screen_s"] = median(tui["first_screens"])
                    fig["tui_first_screen_samples"] = [round(t, 3) for t in tui["first_screens"]]
                    fig["tui_idle_cores"] = tui.get("idle_experiments")
                    fig["tui_idle_cores_runs_tab"] = tui.get("idle_runs_tab")
                    fig["tui_runs_tab_s"] = tui.get("runs_tab_s")
                    fig["tui_runs_tab_quiet_s"] = tui.get("runs_tab_quiet_s")
                    note(f"first screen {fig['tui_first_screen_s']:.2f} s, idle {fig['tui_idle_cores'] or 0:.4f} / "
                         f"{fig['tui_idle_cores_runs_tab'] or 0:.4f} cores")
                out["sizes"][str(n)] = {k: (rounded(v, 4) if isinstance(v, float) else v) for k, v in fig.items()}
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out["loadavg_end"] = loadavg()
    out["bench_s"] = round(time.perf_counter() - t_start, 1)
    return out


def render_workspace(results: dict, console: Any) -> None:
    """One column per workspace size; the goals apply to the largest."""
    from rich.table import Table

    sizes = list(results["sizes"])
    largest = sizes[-1] if sizes else None
    table = Table(title=f"cifar-tui bench --workspace ({results.get('tui_method')})", title_justify="left")
    table.add_column("figure")
    for n in sizes:
        table.add_column(f"{int(n):,} runs", justify="right")
    table.add_column(f"goal ({int(largest):,} runs)" if largest else "goal", justify="right")
    table.add_column("result", justify="center")

    def cell(value: Optional[float], unit: str) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if unit == "cores" else f"{value:.3f} s"

    for key, label, goal, unit in GOALS:
        values = [results["sizes"][n].get(key) for n in sizes]
        last = values[-1] if values else None
        verdict = "-" if last is None else ("[green]pass[/]" if last < goal else "[red]miss[/]")
        table.add_row(label, *[cell(v, unit) for v in values], f"< {goal:g}" + (" core" if unit == "cores" else " s"),
                      verdict)
    for key, label, unit in EXTRA:
        table.add_row(label, *[cell(results["sizes"][n].get(key), unit) for n in sizes], "", "")
    console.print(table)
    console.print(f"[dim]template {results.get('template')} · load average {results.get('loadavg_start')} -> "
                  f"{results.get('loadavg_end')} · {results.get('bench_s')} s · {results.get('date')}[/]")
