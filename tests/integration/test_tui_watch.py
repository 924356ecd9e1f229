"""The TUI on the run supervisor, with real processes: beside two `cifar-tui run A B --parallel`
commands sharing one simulated GPU it agrees on who holds the GPU and never starts a third engine on
it (issue 10); a stalled run is shown stalled and stopped with `s` (issue 14); the Classes panel of
a trained run has `cifar-tui eval`'s numbers (issue 12). The TUI runs in process (Pilot)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from cifar_tui.workspace import Workspace
from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.support import short_run
from engine.record.events import read_events
from engine.record.status import pid_alive
from engine.record.store import Store

from tests.conftest import CLI, ROOT, cli, set_args, tiny_overrides
from tests.support.tui import until_loaded

SIZE = (160, 48)
ONE_EPOCH = tiny_overrides(data__train_limit=64, data__test_limit=64, train__batch_size=32, train__epochs=1)


async def wait_for(pilot, cond, what: str, timeout: float, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await pilot.pause(step)
    assert cond(), f"timed out after {timeout}s waiting for {what}"


def kill_live_runs(home: Path) -> None:
    if not (home / "cifar_tui.db").exists():
        return
    store = Store(home)
    pids = [pid for (pid,) in store.conn.execute("SELECT pid FROM runs") if pid and pid_alive(pid)]
    store.close()
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def gpu_lease_log(home: Path) -> list[tuple[float, float | None, str, int]]:
    conn = sqlite3.connect(home / "cifar_tui.db")
    rows = conn.execute("SELECT acquired_at, released_at, run_id, pid FROM lease_log WHERE slot='gpu:0' "
                        "ORDER BY acquired_at").fetchall()
    conn.close()
    return rows


def gpu_holder(home: Path) -> str | None:
    if not (home / "cifar_tui.db").exists():
        return None
    conn = sqlite3.connect(home / "cifar_tui.db", timeout=30)
    try:
        row = conn.execute("SELECT run_id FROM leases WHERE slot='gpu:0'").fetchone()
    except sqlite3.OperationalError:  # the tables are not there yet
        row = None
    conn.close()
    return row[0] if row else None


@pytest.mark.timeout(900)
def test_tui_beside_two_parallel_clis_agrees_on_the_one_gpu(workspace, monkeypatch):
    """Two `cifar-tui run A B --parallel` and a TUI with a queued run, one simulated GPU: the TUI
    shows a CLI's run holding GPU 0 and its own item waiting for it, and never two engines run at once."""
    monkeypatch.setenv("CIFAR_TUI_GPUS", "0")
    monkeypatch.delenv("CIFAR_TUI_MAX_PARALLEL", raising=False)
    # Each CLI run holds the GPU 4 s longer (its last.pt written slowly): under load a one-epoch run
    # had ended, and the TUI's item started, before the Runs tab was looked at (no queued row to see).
    env = {**workspace["env"], "CIFAR_TUI_GPUS": "0", "OMP_NUM_THREADS": "1",
           "CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:4"}
    home = workspace["home"]
    args = [*CLI, "run", "resnet18_baseline", "resnet18_baseline", "--parallel", *set_args(ONE_EPOCH)]
    shells = [subprocess.Popen(args, env=env, cwd=workspace["tmp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while gpu_holder(home) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gpu_holder(home), "a CLI's run took GPU 0"
        store = Store(home)
        item = store.enqueue("resnet18_baseline", ONE_EPOCH)  # the TUI's queue (persisted, as after a restart)
        store.close()
        ws = Workspace(home=home, data_root=workspace["data"])
        seen: dict = {}

        async def scenario():
            app = CifarTUI(ws)
            async with app.run_test(size=SIZE) as pilot:
                await until_loaded(pilot, app)
                assert app.sup.gpus == ["0"] and app.sup.max_parallel == 1
                # a CLI's run holds the GPU: the header says which, the Runs tab says the queue waits for it
                await wait_for(pilot, lambda: app.gpu_bar.holders.get("0") and not app.sup.children
                               and app.runs_pane.blocked, "the GPU's holder and the waiting queue", 60, 0.05)
                holder = app.gpu_bar.holders["0"]
                seen["cli_holder"] = holder
                assert holder not in app.sup.children  # not ours
                assert f"GPU 0 ▶ {short_run(holder)}" in str(app.gpu_bar.render())
                assert "GPU 0 held by" in app.runs_pane.blocked
                await pilot.press("2")
                runs = app.query_one("#runs-table", DataTable)
                await wait_for(pilot, lambda: f"queue:{item}" in {k.value for k in runs.rows} or not app.store.queued(),
                               "the queue row", 60)
                assert app.store.queued(), f"the TUI's item started before its queued row was seen: {list(runs.rows)}"
                assert runs.get_row(f"queue:{item}")[0].plain == "◷ queued"
                assert "the queue waits: needs 1 GPU, 0 free: GPU 0 held by" in str(
                    app.query_one("#runs-hint").render())
                # its turn comes when the GPU frees; it never starts beside another engine
                await wait_for(pilot, lambda: app.store.queued() == [], "the TUI's run to start", 600, 0.1)
                (mine,) = [q["run_id"] for q in app.store.conn.execute("SELECT run_id FROM queue WHERE id=?", (item,))]
                seen["mine"] = mine
                await wait_for(pilot, lambda: (app.store.run(mine) or {}).get("status") == "completed",
                               "the TUI's run to complete", 600)
                await wait_for(pilot, lambda: not app.sup.children, "the TUI to reap its engine (lease released)", 60)
                await wait_for(pilot, lambda: all(s.poll() is not None for s in shells), "the CLIs to finish", 600)

        asyncio.run(scenario())
        outputs = [s.communicate(timeout=60)[0] for s in shells]
        assert [s.returncode for s in shells] == [0, 0], outputs
    finally:
        for shell in shells:
            if shell.poll() is None:
                os.killpg(shell.pid, signal.SIGKILL)
        kill_live_runs(home)
    spans = []
    for events_file in home.glob("*/events.jsonl"):
        events = read_events(events_file)
        start = next(e for e in events if e["type"] == "start")
        end = next(e for e in events if e["type"] == "end")
        assert (start["visible_devices"], end["status"]) == ("0", "completed"), events_file
        spans.append((start["t"], end["t"], events_file.parent.name))
    spans.sort()
    assert len(spans) == 5 and seen["mine"] in {s[2] for s in spans} and seen["cli_holder"] != seen["mine"]
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        assert start >= end, (a, b, spans)  # one engine on GPU 0 at a time, whoever started it
    leases = gpu_lease_log(home)
    assert len(leases) == 5 and all(released for _, released, _, _ in leases), leases
    for (_, released, *_), (acquired, *_) in zip(leases, leases[1:]):
        assert acquired >= released, leases


STALLED_ENGINE = textwrap.dedent("""
    # A run whose loop is stuck: alive, beating, no step since `progress_at`; SIGTERM ends it as an
    # engine does (an `end` event, the store row stopped).
    import json, signal, sys, time
    from engine.record.store import Store
    home, run_id, progress_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = Store(home)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    while not stop:
        store.heartbeat(run_id, progress_at=progress_at)
        time.sleep(0.5)
    with open(f"{home}/{run_id}/events.jsonl", "a") as f:
        f.write(json.dumps({"v": 1, "t": time.time(), "type": "end", "run_id": run_id, "status": "stopped"}) + "\\n")
    store.run_ended(run_id, "stopped", None, 1.0)
""")


@pytest.mark.timeout(300)
def test_a_stalled_run_shows_stalled_and_s_stops_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_STALL_AFTER_S", "30")
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    rid = "resnet18_baseline-20260101T120000Z-57a1"
    run_dir = ws.home / rid
    run_dir.mkdir(parents=True)
    progress_at = time.time() - 300
    cfg = {"name": "resnet18_baseline", "train": {"epochs": 5, "batch_size": 64}, "data": {"source": "synthetic"}}
    proc = subprocess.Popen([sys.executable, "-c", STALLED_ENGINE, str(ws.home), rid, str(progress_at)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    start = {"v": 1, "t": time.time(), "type": "start", "run_id": rid, "config_name": "resnet18_baseline",
             "config": cfg, "device": "cpu", "data_source": "synthetic", "pid": proc.pid, "steps_per_epoch": 10}
    (run_dir / "events.jsonl").write_text(json.dumps(start) + "\n")
    store = ws.store()
    store.run_started(rid, config=cfg, device="cpu", pid=proc.pid, run_dir=str(run_dir), epochs_total=5, params=1,
                      flops=None)
    store.close()

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: rid in {k.value for k in runs.rows}
                           and runs.get_row(rid)[0].plain == "⧗ stalled", "the stalled row", 30)
            assert [(n.run_id, n.status) for n in app.notices.shown] == [(rid, "stalled")]
            runs.move_cursor(row=runs.get_row_index(rid), animate=False)
            await pilot.press("s")
            await wait_for(pilot, lambda: runs.get_row(rid)[0].plain == "■ stopped", "the stopped row", 30)
            view = app.views[rid]
            await wait_for(pilot, lambda: view.status == "stopped", "the run view to say stopped", 60)

    try:
        asyncio.run(scenario())
        assert proc.wait(10) == 0  # it got the graceful stop and ended by itself
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.timeout(600)
def test_classes_panel_of_a_trained_run_has_cifar_tui_evals_numbers(workspace):
    res = cli(workspace, "run", "resnet18_baseline", *set_args(tiny_overrides(data__test_limit=256)))
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = [d for d in workspace["home"].iterdir() if d.is_dir()]
    rid = run_dir.name
    ws = Workspace(home=workspace["home"], data_root=workspace["data"])
    shown: dict = {}

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            view = await app.open_run(rid, True)
            await wait_for(pilot, lambda: view.finished, "the run view", 60)
            panel = view.classes_panel
            assert not panel.display  # nothing evaluated yet
            await pilot.press("e")
            # 256 tiny images: with torch already imported the worker may be done before press() returns
            assert (panel.busy and "evaluating" in panel.note) or panel.result is not None, panel.note
            await pilot.press("2", "3")  # the UI answers while the worker evaluates
            assert app.active_tab == "leaderboard"
            await wait_for(pilot, lambda: panel.result is not None, "the evaluation", 300)
            shown.update(result=panel.result, worst=panel.worst)

    asyncio.run(scenario())
    res = cli(workspace, "eval", rid, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    evaluated = json.loads(res.stdout)
    assert shown["result"]["top1"] == evaluated["top1"] == pytest.approx(read_events(run_dir / "events.jsonl")[-1]["best_acc"])
    assert shown["result"]["confused"] == evaluated["confused"]
    rated = sorted((c for c in evaluated["per_class"] if c["accuracy"] is not None),
                   key=lambda c: (c["accuracy"], c["index"]))
    assert [w["name"] for w in shown["worst"]] == [c["name"] for c in rated[:len(shown["worst"])]]
    store = Store(workspace["home"])
    assert store.eval_result(rid)["top1"] == evaluated["top1"]  # the panel's evaluation was kept, as eval keeps it
    store.close()
