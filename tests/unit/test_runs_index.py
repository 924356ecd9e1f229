"""The TUI's view of the store (cifar_tui.tui.runs_index): reads nothing while nothing changed,
then only the rows that changed; liveness only for running rows. A second Store object plays the
engine (another connection, as a run's own process is)."""
from __future__ import annotations

import os

import pytest

from cifar_tui.tui.runs_index import RunsIndex
from engine.record.store import Store

from tests.support.tui import DEAD_PID, fake_workspace


@pytest.fixture
def stores(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    ui, engine = Store(ws.home), Store(ws.home)
    yield ui, engine, ids
    ui.close()
    engine.close()


def statements(store: Store) -> list[str]:
    """Start recording the SQL the store's connection runs; returns the (live) list."""
    seen: list[str] = []
    store.conn.set_trace_callback(lambda sql: seen.append(" ".join(sql.split())))
    return seen


def test_data_version_moves_on_other_connections_commits_only(stores):
    ui, engine, ids = stores
    v0 = ui.data_version()
    ui.enqueue("resnet18_baseline", [])
    assert ui.data_version() == v0  # its own commit
    engine.heartbeat(ids["s_base"])
    assert ui.data_version() != v0


def test_nothing_changed_reads_nothing(stores):
    ui, _engine, ids = stores
    index = RunsIndex(ui)
    first = index.refresh()
    assert first.added == set(ids.values()) and index.rows_read == len(ids)
    sql = statements(ui)
    for _ in range(3):
        assert not index.refresh()
    assert sql == ["PRAGMA data_version"] * 3
    assert index.rows_read == len(ids)


def test_only_changed_rows_are_read(stores):
    ui, engine, ids = stores
    index = RunsIndex(ui)
    index.refresh()
    rid = ids["s_base"]
    engine.heartbeat(rid, wall_s=999.0)
    changes = index.refresh()
    assert changes.changed == {rid} and not changes.added and not changes.removed
    assert index.rows_read == len(ids) + 1  # that row only
    assert index.runs[rid]["wall_s"] == 999.0
    engine.epoch_done(rid, {"epoch": 7, "test_acc": 50.0, "best_acc": 50.0, "best_epoch": 7}, wall_s=1000.0)
    changes = index.refresh()
    assert changes.changed == {rid} and index.runs[rid]["best_acc"] == 50.0 and index.runs[rid]["epochs_done"] == 7


def test_rows_added_with_old_timestamps_and_removed_rows_are_seen(stores):
    ui, engine, ids = stores
    index = RunsIndex(ui)
    index.refresh()
    # a rebuild writes the start time of the events: older than anything the index has read
    engine.conn.execute("INSERT INTO runs (run_id, config_name, status, started_at, heartbeat_at) "
                        "VALUES ('copied-in', 'resnet18_baseline', 'completed', 1.0, 2.0)")
    changes = index.refresh()
    assert changes.added == {"copied-in"} and index.runs["copied-in"]["status"] == "completed"
    assert index.newest_first()[-1] == "copied-in"
    engine.delete_run(ids["c_pre"])
    changes = index.refresh()
    assert changes.removed == {ids["c_pre"]} and ids["c_pre"] not in index.runs
    assert [r["run_id"] for r in index.leaderboard()] == [r["run_id"] for r in ui.leaderboard()]


def test_own_writes_need_a_forced_read(stores):
    ui, _engine, ids = stores
    index = RunsIndex(ui)
    index.refresh()
    ui.enqueue("resnet18_baseline", ["data.source=synthetic"])
    ui.delete_run(ids["s_stop"])
    assert not index.refresh()  # our own commits do not move our data_version
    changes = index.refresh(force=True)
    assert changes.queue and [q["config"] for q in index.queue] == ["resnet18_baseline"]
    assert changes.removed == {ids["s_stop"]}


def test_liveness_is_checked_for_running_rows_only(stores, monkeypatch):
    ui, engine, ids = stores
    engine.run_started("alive", config={"name": "resnet18_baseline", "data": {"source": "synthetic"}}, device="cpu",
                       pid=os.getpid(), run_dir="x", epochs_total=3, params=None, flops=None)
    engine.run_started("dead", config={"name": "resnet18_baseline", "data": {"source": "synthetic"}}, device="cpu",
                       pid=DEAD_PID, run_dir="y", epochs_total=3, params=None, flops=None)
    index = RunsIndex(ui)
    index.refresh()
    assert index.running() == {"alive"} and index.runs["dead"]["status"] == "crashed"
    checked: list[int] = []
    import engine.record.status as store_module

    real = store_module.pid_alive
    alive = {"value": True}
    monkeypatch.setattr(store_module, "pid_alive",
                        lambda pid: checked.append(pid) or (alive["value"] if pid == os.getpid() else real(pid)))
    assert not index.refresh()
    assert sorted(checked) == sorted([os.getpid(), DEAD_PID])  # the two running rows, not the others
    alive["value"] = False  # the process of "alive" dies: seen without reading the store
    sql = statements(ui)
    changes = index.refresh()
    assert changes.changed == {"alive"} and index.runs["alive"]["status"] == "crashed" and index.running() == set()
    assert sql == ["PRAGMA data_version"]



def test_top5_is_the_best_epochs_and_read_again_only_when_the_best_epoch_moves(stores):
    ui, engine, ids = stores
    index = RunsIndex(ui)
    index.refresh()
    rid = ids["s_stop"]  # stopped after epoch 3 of 6
    expected = {r: ui.conn.execute("SELECT e.test_top5 FROM epochs e JOIN runs r ON r.run_id = e.run_id "
                                   "AND e.epoch = r.best_epoch WHERE r.run_id=?", (r,)).fetchone()[0]
                for r in ids.values()}
    assert all(v is not None for v in expected.values())
    assert index.best_top5(list(ids.values())) == expected
    sql = statements(ui)
    assert index.best_top5(list(ids.values())) == expected and sql == []  # nothing moved: no query
    # the run goes on: epoch 4 is its new best, with its own top-5
    engine.epoch_done(rid, {"epoch": 4, "test_acc": 60.0, "test_top5": 91.5, "best_acc": 60.0, "best_epoch": 4},
                      wall_s=40.0)
    index.refresh()
    sql.clear()
    top5 = index.best_top5(list(ids.values()))
    assert top5[rid] == 91.5 and {k: v for k, v in top5.items() if k != rid} == {
        k: v for k, v in expected.items() if k != rid}
    assert len([s for s in sql if "test_top5" in s]) == 1 and rid in " ".join(sql)
    assert all(other not in " ".join(sql) for other in ids.values() if other != rid)
    # a worse epoch 5: the best stays epoch 4, and so does its top-5
    engine.epoch_done(rid, {"epoch": 5, "test_acc": 50.0, "test_top5": 80.0, "best_acc": 60.0, "best_epoch": 4},
                      wall_s=48.0)
    index.refresh()
    assert index.best_top5([rid]) == {rid: 91.5}


def test_group_rows_give_the_cli_groups(stores):
    """A run that recorded no group (started before studies) gets the group `leaderboard --by
    group` gives it; its config is read once."""
    from cifar_tui.studies import group_stats, leaderboard_groups

    ui, _engine, ids = stores
    index = RunsIndex(ui)
    index.refresh()
    assert all(not r.get("group_key") for r in index.runs.values())
    assert group_stats(index.group_rows()) == leaderboard_groups(ui)
    sql = statements(ui)
    assert group_stats(index.group_rows()) == leaderboard_groups(ui)
    assert not [s for s in sql if "config_json" in s and "SELECT run_id, config_name" in s]  # cached
