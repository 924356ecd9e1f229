"""`cifar-tui bench --section study`: a study's tab at 1,000 runs (100 groups x 10 seeds, a few of
them live), in this process with the real Textual app, headless (App.run_test):

- the grid's data (tui.study_data.study_grid over the study's 1,000 rows), per computation;
- the tab's first showing: from opening it until every group's row is listed;
- a live change: one running run finishes an epoch (written by another store connection, as an
  engine writes it), then the app's store refresh and the tab's redraw, timed together;
- the app's CPU while nothing happens, with the study's tab in front (this process's CPU time over
  a window: headless, so no terminal output is drawn; a lower bound for a real terminal).
The store's rows are written directly (no engine runs; the finished runs ended an hour ago, as in
a study that has run a while): what is measured is the TUI's side.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from .common import BenchContext, DetailRow, Section, number, rounded

STUDY = "bench-study"
LIVE_EVERY = 50          # one run in this many is live (running, this process's pid)


def write_study(home: Path, runs: int, seeds: int = 10) -> list[str]:
    """A study of `runs` runs (groups of `seeds` seeds) in a new store; returns the live run ids."""
    from engine.record.store import Store

    store = Store(home)
    now = time.time()
    rows, live = [], []
    every = max(2, min(LIVE_EVERY, runs // 5))  # a few live runs in a small study too
    for i in range(runs):
        g, seed = divmod(i, seeds)
        rid = f"resnet18_baseline-bench-{i:05d}"
        running = i % every == every - 1
        lr = 1e-4 * (1 + g)
        acc = 40.0 + 5 * (g % 7) / 7 + 0.3 * ((seed * 7919) % 11) / 11
        group = f"resnet18_baseline data.source=synthetic optim.lr={lr!r} train.epochs=10"
        config = {"name": "resnet18_baseline", "data": {"source": "synthetic"}, "train": {"seed": seed, "epochs": 10},
                  "optim": {"lr": lr}}
        rows.append((rid, "resnet18_baseline", "running" if running else "completed", "synthetic", "cpu",
                     os.getpid() if running else None, socket.gethostname(), str(home / rid), now - 7200 - runs + i,
                     None if running else now - 3600, now if running else now - 3600, now if running else now - 3600,
                     10, 4 if running else 10, acc - (3 if running else 0),
                     4 if running else 9, 40.0 if running else 100.0, json.dumps(config), STUDY, group, seed))
        if running:
            live.append(rid)
    with store.conn:
        store.conn.executemany(
            "INSERT INTO runs (run_id, config_name, status, data_source, device, pid, host, run_dir, started_at, "
            "ended_at, heartbeat_at, progress_at, epochs_total, epochs_done, best_acc, best_epoch, wall_s, config_json, "
            "study, group_key, seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    store.save_study(STUDY, "sweep", "resnet18_baseline", {"seeds": seeds})
    store.close()
    return live


async def _measure(home: Path, runs: int, repeats: int, idle_s: float) -> dict[str, Any]:
    from engine.record.store import Store

    from ..workspace import Workspace
    from ..tui.app import CifarTUI
    from ..tui.study_data import study_grid

    live = write_study(home, runs)
    ws = Workspace(home=home, data_root=home.parent / "data", configs=None)
    app = CifarTUI(ws, max_parallel=4)
    out: dict[str, Any] = {}
    async with app.run_test(size=(160, 45)) as pilot:
        for _ in range(200):  # the app's first refresh
            if app.index is not None and app.index.runs:
                break
            await pilot.pause(0.05)
        rows = app.index.group_rows(STUDY)
        timings = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            grid = study_grid(STUDY, rows, baseline=rows[0]["group_key"])
            timings.append(time.perf_counter() - t0)
        out["study_grid_ms"] = rounded(1000 * statistics.median(timings), 1)
        out["study_groups"] = len(grid.groups)
        t0 = time.perf_counter()
        await app.study_tabs.open(STUDY, True)
        pane = app.study_tabs.views[STUDY]
        table = pane.table
        while table.row_count < len(grid.groups) or pane.sync.filling:
            await pilot.pause(0.01)
        out["study_tab_first_s"] = rounded(time.perf_counter() - t0, 3)
        pane.baseline = grid.groups[0]
        pane.redraw(force=True)
        writer = Store(home)
        timings = []
        for k in range(repeats):
            rid = live[k % len(live)]
            epoch = 5 + k
            writer.epoch_done(rid, {"epoch": epoch, "test_acc": 45.0 + k / 10, "best_acc": 45.0 + k / 10,
                                    "best_epoch": epoch}, 10.0 * epoch)
            t0 = time.perf_counter()
            app.refresh_store()  # what the app's once-a-second tick does: read the change, redraw the tab
            timings.append(time.perf_counter() - t0)
            await pilot.pause(0.05)
        writer.close()
        out["study_tab_redraw_s"] = rounded(statistics.median(timings), 4)
        out["study_tab_redraws"] = pane.redraws
        await pilot.pause(1.0)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await pilot.pause(idle_s)
        out["study_tab_idle_cores"] = rounded((time.process_time() - cpu0) / (time.perf_counter() - t0), 4)
    return out


def bench_study(ctx: BenchContext) -> None:
    plan = ctx.plan
    with ctx.prog.step(f"a study's tab at {plan.study_runs:,} runs (headless app)") as note:
        home = ctx.workdir / "study-bench" / "runs"
        home.mkdir(parents=True)
        result = asyncio.run(_measure(home, plan.study_runs, plan.study_repeats, plan.study_idle_s))
        ctx.out.update(result)
        ctx.out["study_runs"] = plan.study_runs
        note(f"first showing {result['study_tab_first_s']:.2f} s, a change {1000 * result['study_tab_redraw_s']:.0f} ms, "
             f"idle {result['study_tab_idle_cores']:.3f} cores")


def study_details(results: dict) -> list[DetailRow]:
    if results.get("study_tab_first_s") is None:
        return []
    n = number(results, "study_runs", ",.0f")
    return [(f"study tab at {n} runs: first showing (s)", number(results, "study_tab_first_s", ".2f"), "-"),
            (f"study tab at {n} runs: a run's epoch read and redrawn (s)", number(results, "study_tab_redraw_s", ".4f"),
             "-"),
            (f"study tab at {n} runs: the grid's figures (ms)", number(results, "study_grid_ms", ".1f"), "-"),
            (f"study tab at {n} runs: idle CPU, headless (cores)", number(results, "study_tab_idle_cores", ".3f"), "-")]


def run(ctx: BenchContext) -> None:
    with ctx.timed("study"):
        bench_study(ctx)


SECTION = Section("study", run, study_details)
