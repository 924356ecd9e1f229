"""Watching runs in the TUI (issue 14), in process on fake workspaces: the run view's telemetry from
heartbeat events (GPU utilisation and memory over time, an idle GPU flagged, CPU and RSS without a
GPU), the header's GPUs through a fake NVML with the store's lease holders, notifications (and the
bell) when a run ends or stalls, stalled runs shown and stoppable; and the Classes panel (issue 12)
from a result the store keeps."""
from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import DataTable, Static
from textual.widgets._toast import Toast

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.telemetry import IDLE_BEATS, MAX_POINTS, TelemetrySeries
from cifar_tui.tui.widgets.telemetry import sparkline, telemetry_text
from engine import telemetry as engine_telemetry
from engine.leases import Leases

from tests.support.fake_nvml import FakeNvml
from tests.support.tui import fake_workspace, footer_keys, until_loaded

SIZE = (160, 48)


async def wait_for(pilot, cond, what: str, timeout: float = 60.0) -> None:  # a bound for a stuck app, not a speed
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert cond(), f"timed out waiting for {what}"


def heartbeat(t: float, *, gpus: list[tuple[float, float]] | None = None, cpu: float = 95.0, rss: float = 1800.0,
              run_id: str = "r") -> dict:
    tele = {"cpu_percent": cpu, "rss_mb": rss,
            "gpus": None if gpus is None else [{"index": i, "name": "H100", "util": u, "mem_used_mb": m,
                                                "mem_total_mb": 81920.0, "temp_c": 60, "power_w": 400.0}
                                               for i, (u, m) in enumerate(gpus)]}
    return {"v": 1, "t": t, "type": "heartbeat", "run_id": run_id, "progress_t": t, "telemetry": tele}


def live_run(ws, rid: str, events: list[dict], *, progress_at: float | None = None) -> Path:
    """A run whose process is alive (this test's own pid: never signalled here), with these events."""
    run_dir = ws.home / rid
    run_dir.mkdir(parents=True)
    start = {"v": 1, "t": time.time() - 60, "type": "start", "run_id": rid, "config_name": "resnet18_baseline",
             "config": {"name": "resnet18_baseline", "train": {"epochs": 5, "batch_size": 64},
                        "data": {"source": "synthetic"}},
             "device": "cuda:0", "data_source": "synthetic", "pid": os.getpid(), "steps_per_epoch": 10}
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [start, *events]))
    store = ws.store()
    store.run_started(rid, config=start["config"], device="cuda:0", pid=os.getpid(), run_dir=str(run_dir),
                      epochs_total=5, params=1, flops=None)
    if progress_at is not None:
        store.heartbeat(rid, progress_at=progress_at)
    store.close()
    return run_dir


def append(run_dir: Path, *events: dict) -> None:
    with open(run_dir / "events.jsonl", "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)


def as_text(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def toasts(app) -> list[str]:
    return [str(t.render()) for t in app.screen.query(Toast)]


# ---------------------------------------------------------------- telemetry, folded and drawn


def test_heartbeats_fold_into_series_per_gpu_and_an_idle_gpu_is_found():
    tele = TelemetrySeries()
    tele.add({"type": "heartbeat", "t": 1.0})  # no telemetry (an older engine): skipped
    assert not tele
    tele.add(heartbeat(5.0, gpus=[(97.0, 30000.0)]))
    for k in range(IDLE_BEATS):
        tele.add(heartbeat(10.0 + 5 * k, gpus=[(2.0, 30000.0), (80.0, 1000.0)]))  # GPU 1 appears late
    assert [g.index for g in tele.gpus.values()] == [0, 1]
    assert tele.gpus[0].util == [97.0, 2.0, 2.0, 2.0]
    assert tele.gpus[1].util == [None, 80.0, 80.0, 80.0]  # aligned with the heartbeats
    assert [g.index for g in tele.idle_gpus()] == [0]
    tele.add(heartbeat(30.0, gpus=[(50.0, 30000.0), (80.0, 1000.0)]))
    assert tele.idle_gpus() == []  # one busy reading ends it
    cpu_only = TelemetrySeries()
    cpu_only.add(heartbeat(1.0, cpu=150.0, rss=2048.0))
    assert not cpu_only.has_gpus and cpu_only.cpu_percent == [150.0]


def test_a_long_run_keeps_a_bounded_history_with_the_newest_reading():
    tele = TelemetrySeries()
    for k in range(3 * MAX_POINTS):
        tele.add(heartbeat(float(k), gpus=[(float(k % 100), 1.0)]))
    assert len(tele.t) <= MAX_POINTS and tele.t[-1] == 3 * MAX_POINTS - 1
    assert len(tele.gpus[0].util) == len(tele.t)


def test_the_strip_draws_sparklines_and_says_when_the_gpu_idles():
    assert sparkline([0.0, 50.0, 100.0, None], 10, 100.0) == "▁▅█ "
    assert sparkline(list(range(100)), 4, 100.0) == sparkline([96, 97, 98, 99], 4, 100.0)  # the latest
    tele = TelemetrySeries()
    for k in range(IDLE_BEATS):
        tele.add(heartbeat(float(k), gpus=[(1.0, 2048.0)]))
    text = telemetry_text(tele, 160, live=True).plain
    assert text.startswith("GPU 0") and "1%" in text and "2.0/80.0 GB" in text and "GPU idle" in text
    assert "GPU idle" not in telemetry_text(tele, 160, live=False).plain  # a finished run's GPU may rest
    cpu = TelemetrySeries()
    cpu.add(heartbeat(1.0, cpu=180.0, rss=3072.0))
    assert telemetry_text(cpu, 160, live=True).plain.startswith("CPU") and "180%" in telemetry_text(cpu, 160, True).plain


# ---------------------------------------------------------------- the run view


def test_run_view_shows_the_runs_gpu_over_time_and_flags_it_idle(tmp_path):
    ws, _ = fake_workspace(tmp_path)
    now = time.time()
    rid = "resnet18_baseline-20260101T120000Z-9a9a"
    run_dir = live_run(ws, rid, [heartbeat(now - 20, gpus=[(96.0, 30000.0)], run_id=rid)])

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await wait_for(pilot, lambda: rid in app.views and app.views[rid].loaded, "the re-attached tab")
            view = app.views[rid]
            await app.open_run(rid, True)
            strip = view.query_one("#run-telemetry")
            await wait_for(pilot, lambda: strip.display, "the telemetry strip")
            assert "96%" in str(strip.render()) and "29.3/80.0 GB" in str(strip.render()) and not strip.idle
            append(run_dir, *[heartbeat(now - 15 + 5 * k, gpus=[(0.0, 30000.0)], run_id=rid) for k in range(IDLE_BEATS)])
            await wait_for(pilot, lambda: strip.idle, "the idle GPU to be flagged")
            assert "GPU idle" in str(strip.render()) and view.status == "running"
            append(run_dir, heartbeat(now, gpus=[(88.0, 30000.0)], run_id=rid))
            await wait_for(pilot, lambda: not strip.idle, "the flag to go when the GPU works again")

    asyncio.run(scenario())


def test_run_view_without_a_gpu_shows_cpu_and_memory(tmp_path):
    ws, _ = fake_workspace(tmp_path)
    rid = "resnet18_baseline-20260101T120000Z-c0c0"
    live_run(ws, rid, [heartbeat(time.time() - 5 * k, cpu=130.0, rss=2560.0, run_id=rid) for k in (2, 1)])

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await wait_for(pilot, lambda: rid in app.views and app.views[rid].loaded, "the re-attached tab")
            strip = app.views[rid].query_one("#run-telemetry")
            await wait_for(pilot, lambda: strip.display, "the telemetry strip")
            shown = str(strip.render())
            assert shown.startswith("CPU") and "130%" in shown and "2.5 GB" in shown and "GPU" not in shown

    asyncio.run(scenario())


# ---------------------------------------------------------------- the header's GPUs


def test_header_shows_each_gpu_of_the_machine_and_the_run_holding_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_GPUS", "0,1")
    ws, _ = fake_workspace(tmp_path)
    holder = "resnet18_baseline-20260101T120000Z-beef"
    store = ws.store()
    grant = Leases(store.conn).acquire(holder, gpus=["0", "1"], n=1, max_parallel=None)  # held by this process
    store.close()
    assert grant.gpus == ("0",)
    nv = FakeNvml(gpus=2)
    nv.util[0], nv.used_mb[0] = 87.0, 31 * 1024.0
    engine_telemetry.set_nvml_module(nv)

    async def scenario():
        app = CifarTUI(ws)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            bar = app.gpu_bar
            await wait_for(pilot, lambda: bar.samples >= 1 and bar.holders, "a reading and the lease holders")
            shown = str(bar.render())
            gpu0, gpu1 = shown.split("   GPU 1")
            assert gpu0.startswith("GPU 0") and "87%" in gpu0 and "31/80G" in gpu0 and "resnet18_baseline·beef" in gpu0
            assert "0%" in gpu1 and "free" in gpu1
            assert "2 at a time on 2 GPUs" in str(app.query_one("#counts", Static).render())
            # a held GPU that idles for several readings is flagged
            nv.util[0] = 1.0
            for _ in range(3):
                before = bar.samples
                bar.sample()
                await wait_for(pilot, lambda: bar.samples > before, "a reading")
            assert bar.idle_held() == ["0"] and "idle" in str(bar.render()).split("   GPU 1")[0]

    try:
        asyncio.run(scenario())
    finally:
        engine_telemetry.set_nvml_module(None)


def test_header_without_gpus_says_cpu_and_shows_no_gpu_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_GPUS", "")
    ws, _ = fake_workspace(tmp_path)
    engine_telemetry.set_nvml_module(FakeNvml(gpus=0))

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await wait_for(pilot, lambda: app.gpu_bar.samples >= 1, "a reading")
            assert not app.gpu_bar.display and "1 at a time on CPU" in str(app.query_one("#counts", Static).render())

    try:
        asyncio.run(scenario())
    finally:
        engine_telemetry.set_nvml_module(None)


# ---------------------------------------------------------------- notifications, stalled runs


def test_a_run_that_ends_while_watched_notifies_and_rings_the_bell(tmp_path, monkeypatch):
    ws, _ = fake_workspace(tmp_path)
    rid = "resnet18_baseline-20260101T120000Z-e0e0"
    run_dir = live_run(ws, rid, [])

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        bells = []
        monkeypatch.setattr(app, "bell", lambda: bells.append(1))
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until_loaded(pilot, app)
            await wait_for(pilot, lambda: rid in app.views and app.views[rid].loaded, "the re-attached tab")
            assert app.notices.shown == [] and bells == []  # runs that ended before are history, not news
            append(run_dir, {"v": 1, "t": time.time(), "type": "end", "run_id": rid, "status": "failed",
                             "error": "RuntimeError: CUDA out of memory", "best_acc": 12.5, "epochs_done": 2})
            await wait_for(pilot, lambda: app.notices.shown, "the notice")
            (notice,) = app.notices.shown
            assert (notice.run_id, notice.status, notice.severity) == (rid, "failed", "error")
            assert bells == [1]
            await wait_for(pilot, lambda: any("resnet18_baseline failed" in t and "CUDA out of memory" in t
                                              for t in toasts(app)), "the toast")
            await pilot.pause(1.2)  # another store tick: the same end is not told twice
            assert len(app.notices.shown) == 1 and bells == [1]

    asyncio.run(scenario())


def test_a_stalled_run_is_shown_stalled_notifies_once_and_can_be_stopped(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_STALL_AFTER_S", "60")
    ws, _ = fake_workspace(tmp_path)
    rid = "resnet18_baseline-20260101T120000Z-5a11"
    live_run(ws, rid, [], progress_at=time.time() - 600)  # alive, beating, no step for 10 minutes

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        bells = []
        monkeypatch.setattr(app, "bell", lambda: bells.append(1))
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await wait_for(pilot, lambda: app.notices.shown, "the stalled notice")
            assert [(n.run_id, n.status) for n in app.notices.shown] == [(rid, "stalled")] and bells == [1]
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: rid in {k.value for k in runs.rows}, "the runs row")
            assert runs.get_row(rid)[0].plain == "⧗ stalled"
            runs.move_cursor(row=runs.get_row_index(rid), animate=False)
            await pilot.pause()
            assert footer_keys(app)["s"] is True  # a stalled run can be stopped (tested with a real process in
            view = app.views[rid]                 # tests/integration/test_tui_watch.py)
            await wait_for(pilot, lambda: view.status == "stalled", "the run view to say stalled")
            assert "stalled" in str(view.query_one("#run-status", Static).render())
            await pilot.pause(1.2)
            assert len(app.notices.shown) == 1 and bells == [1]  # told once

    asyncio.run(scenario())


# ---------------------------------------------------------------- the Classes panel (issue 12)

RESULT = {"run_id": None, "ckpt": "best", "tta": "none", "n": 400, "top1": 41.25, "top5": 70.5, "loss": 2.1,
          "per_class": [{"index": i, "name": f"class_{i}", "count": 100, "accuracy": a}
                        for i, a in enumerate([55.0, 12.0, 80.0, 3.0])],
          "confused": [{"true": "class_3", "predicted": "class_1", "count": 40, "share": 40.0},
                       {"true": "class_1", "predicted": "class_3", "count": 22, "share": 22.0}]}


def test_classes_panel_shows_a_stored_evaluation_and_e_recomputes(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    rid, other = ids["c_base"], ids["c_pre"]
    store = ws.store()
    store.eval_recorded(rid, [rid], {**RESULT, "run_id": rid})
    store.close()

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            view = await app.open_run(rid, True)
            panel = view.classes_panel
            await wait_for(pilot, lambda: panel.display and panel.result is not None, "the stored result")
            body = as_text(panel.query_one("#classes-body").content, 48)
            lines = [line.split() for line in body.splitlines()]
            assert ["class_3", "3.0%", "100"] in lines and ["class_1", "12.0%", "100"] in lines
            assert [w["name"] for w in panel.worst] == ["class_3", "class_1", "class_0", "class_2"]  # eval's order
            assert "class_3 → class_1" in body and "top-1 41.25%" in body
            # a run without an evaluation: no panel until e; e evaluates, and a run without weights says why
            view2 = await app.open_run(other, True)
            await wait_for(pilot, lambda: view2.finished, "the second view")
            assert not view2.classes_panel.display and footer_keys(app)["e"] is True
            await pilot.press("e")
            await wait_for(pilot, lambda: not view2.classes_panel.busy and view2.classes_panel.note, "the evaluation")
            assert view2.classes_panel.display and "best.pt" in view2.classes_panel.note
            assert view2.classes_panel.result is None

    asyncio.run(scenario())


def test_a_stored_evaluation_shows_when_the_supervisor_says_finished_before_the_events_are_read(tmp_path,
                                                                                              monkeypatch):
    """The order a busy machine gives: the supervisor's `completed` reaches the run view before
    its catch-up read of the events is done; the panel still shows the stored evaluation."""
    from cifar_tui.tui.panes.run_view import RunView

    ws, ids = fake_workspace(tmp_path)
    rid = ids["c_base"]
    store = ws.store()
    store.eval_recorded(rid, [rid], {**RESULT, "run_id": rid})
    store.close()
    gate = threading.Event()
    catch_up = RunView._catch_up

    def held(self) -> None:  # the catch-up thread waits until the supervisor has spoken
        gate.wait(300)
        catch_up(self)

    monkeypatch.setattr(RunView, "_catch_up", held)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            view = await app.open_run(rid, True)
            await wait_for(pilot, lambda: view._ready, "the view")
            try:
                view.set_supervised("completed")
                assert not view.loaded
            finally:
                gate.set()
            await wait_for(pilot, lambda: view.loaded and view.classes_panel.result is not None, "the stored result")
            assert view.classes_panel.display

    asyncio.run(scenario())


@pytest.mark.parametrize("width", [100])
def test_a_narrow_run_view_shows_the_classes_panel_instead_of_the_charts(tmp_path, width):
    ws, ids = fake_workspace(tmp_path)
    rid = ids["c_base"]
    store = ws.store()
    store.eval_recorded(rid, [rid], {**RESULT, "run_id": rid})
    store.close()

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=(width, 40)) as pilot:
            await until_loaded(pilot, app)
            view = await app.open_run(rid, True)
            await wait_for(pilot, lambda: view.classes_panel.display, "the panel")
            await pilot.pause()
            assert view.has_class("-narrow") and not view.query_one(".charts").display
            assert view.classes_panel.region.width > 40 and view.query_one("#epochs").region.width >= 30

    asyncio.run(scenario())
