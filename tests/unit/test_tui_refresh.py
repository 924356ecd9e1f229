"""Incremental refresh in the real app (Pilot, in process, no engine): a change in the store
redraws only the cells that changed, reads only the rows that changed, a table in the back is
redrawn when it comes to the front, and a large table fills in chunks. A second Store object
plays the engine (another connection, as a run's own process is)."""
from __future__ import annotations

import asyncio
import time

import pytest
from textual.widgets import DataTable

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.widgets.table_sync import CHUNK
from engine.store import Store, transaction

from tests.support.tui import fake_workspace, until_loaded

SIZE = (160, 48)


class TableSpy:
    """Records the DataTable calls that change what a table shows."""

    def __init__(self, table: DataTable, monkeypatch):
        self.calls: list[tuple] = []
        for name in ("update_cell", "add_row", "remove_row", "clear", "sort"):
            real = getattr(table, name)

            def spy(*args, _name=name, _real=real, **kw):
                self.calls.append((_name, *args[:2]) if _name == "update_cell" else (_name,))
                return _real(*args, **kw)

            monkeypatch.setattr(table, name, spy)


class RefreshCounter:
    def __init__(self, app: CifarTUI, monkeypatch):
        self.n = 0
        real = app.index.refresh

        def counted(*args, **kw):
            self.n += 1
            return real(*args, **kw)

        monkeypatch.setattr(app.index, "refresh", counted)


async def wait_for(pilot, cond, what: str, timeout: float = 60.0) -> None:  # a bound for a stuck app, not a speed
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert cond(), f"timed out waiting for {what}"


@pytest.fixture
def ws_engine(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    engine = Store(ws.home)
    yield ws, ids, engine
    engine.close()


def test_a_store_change_redraws_only_its_cells_and_reads_only_its_row(ws_engine, monkeypatch):
    ws, ids, engine = ws_engine
    rid = ids["s_base"]

    async def scenario():
        app = CifarTUI(ws, max_parallel=1, store_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            assert runs.row_count == len(ids)
            spy, refreshes = TableSpy(runs, monkeypatch), RefreshCounter(app, monkeypatch)
            read = app.index.rows_read
            engine.heartbeat(rid, wall_s=999.0)
            await wait_for(pilot, lambda: str(runs.get_cell(rid, "wall")) == "16m39s", "the new wall time")
            assert spy.calls == [("update_cell", rid, "wall")]
            assert app.index.rows_read == read + 1
            # nothing changes for a few refreshes: nothing is read, nothing is redrawn
            seen = refreshes.n
            await wait_for(pilot, lambda: refreshes.n >= seen + 3, "three more refreshes")
            assert spy.calls == [("update_cell", rid, "wall")] and app.index.rows_read == read + 1

    asyncio.run(scenario())


def test_tables_in_the_back_are_redrawn_when_shown(ws_engine, monkeypatch):
    ws, ids, engine = ws_engine
    rid = ids["s_stop"]  # synthetic, ranked S2 between S1 and S3: a better result keeps its place

    async def scenario():
        app = CifarTUI(ws, max_parallel=1, store_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3", "2", "1")  # both tables drawn once, then the Experiments tab in front
            runs, lb = app.query_one("#runs-table", DataTable), app.query_one("#lb-table", DataTable)
            order = [r.key.value for r in lb.ordered_rows]
            runs_spy, lb_spy = TableSpy(runs, monkeypatch), TableSpy(lb, monkeypatch)
            between = (app.index.runs[ids["s_base"]]["best_acc"] + app.index.runs[rid]["best_acc"]) / 2
            engine.epoch_done(rid, {"epoch": 4, "test_acc": between, "test_top5": 88.5, "best_acc": between,
                                    "best_epoch": 4}, wall_s=40.0)
            await wait_for(pilot, lambda: app.index.runs[rid]["epochs_done"] == 4, "the store change")
            exp = app.query_one("#exp-table", DataTable)
            assert str(exp.get_cell("resnet18_baseline_lbsmooth", "best")) == f"{between:.2f} syn"  # in front
            assert runs_spy.calls == [] and lb_spy.calls == []  # in the back: not redrawn
            await pilot.press("2")
            assert sorted(c[2] for c in runs_spy.calls) == ["best", "epochs", "wall"]
            assert {c[:2] for c in runs_spy.calls} == {("update_cell", rid)}
            await pilot.press("3")
            assert sorted(c[2] for c in lb_spy.calls) == ["best_acc", "best_epoch", "epochs", "top5", "wall_s"]
            assert {c[:2] for c in lb_spy.calls} == {("update_cell", rid)}
            assert str(lb.get_cell(rid, "top5")) == "88.50"  # the new best epoch's top-5
            assert [r.key.value for r in lb.ordered_rows] == order
            assert str(lb.get_cell(rid, "epochs")) == "4/6"

    asyncio.run(scenario())


def test_a_large_table_fills_in_chunks_and_keeps_its_order(ws_engine, monkeypatch):
    ws, ids, engine = ws_engine
    n = 2 * CHUNK + 100
    with transaction(engine.conn) as c:
        c.executemany("INSERT INTO runs (run_id, config_name, status, data_source, started_at, heartbeat_at, "
                      "ended_at, epochs_total, epochs_done, best_acc) VALUES (?, 'resnet18_baseline', 'completed', "
                      "'synthetic', ?, ?, ?, 2, 2, 10.0)",
                      [(f"bulk-{i:05d}", 1000.0 + i, 1001.0 + i, 1002.0 + i) for i in range(n)])

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            runs = app.query_one("#runs-table", DataTable)
            sync = app.runs_pane.sync
            listed_after_each_chunk: list[int] = []
            add_chunk = sync._add_chunk

            def recorded() -> None:
                add_chunk()
                listed_after_each_chunk.append(runs.row_count)

            monkeypatch.setattr(sync, "_add_chunk", recorded)
            await pilot.press("2")
            await wait_for(pilot, lambda: not sync.filling, "the rest of the rows")
            total = n + len(ids)
            assert listed_after_each_chunk == [CHUNK, 2 * CHUNK, total]  # a frame apart, the first at once
            listed = [r.key.value for r in runs.ordered_rows]
            assert listed == app.index.newest_first() and len(listed) == total
            assert listed[:len(ids)] == [ids[k] for k in ("s_crash", "s_stop", "s_base", "c_pre", "c_base")]
            assert listed[-1] == "bulk-00000"
            # a run started now goes to the top, without a refill
            engine.run_started("fresh-run", config={"name": "resnet18_baseline", "data": {"source": "synthetic"}},
                               device="cpu", pid=1, run_dir="x", epochs_total=2, params=None, flops=None)
            await wait_for(pilot, lambda: runs.row_count == total + 1, "the new run's row")
            assert runs.ordered_rows[0].key.value == "fresh-run"

    asyncio.run(scenario())
