"""A damaged workspace still opens: the database, copied-in run dirs, unreadable events."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

from cifar_tui.workspace import Workspace
from engine.record.rebuild import open_store

from tests.support.tui import fake_run


def _ws(tmp_path) -> Workspace:
    return Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")


def _age(path, seconds: float = 60) -> None:
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_a_database_that_is_not_one_is_moved_aside_and_rebuilt_from_the_run_dirs(tmp_path):
    ws = _ws(tmp_path)
    ws.home.mkdir(parents=True)
    a = fake_run(ws.home, "resnet18_baseline", "00a1")
    b = fake_run(ws.home, "resnet18_baseline", "00b2", status="stopped", done=3)
    junk = os.urandom(5000)
    (ws.home / "cifar_tui.db").write_bytes(junk)
    store = ws.store()
    assert {r["run_id"]: r["status"] for r in store.runs()} == {a: "completed", b: "stopped"}
    assert [e["epoch"] for e in store.epochs(b)] == [1, 2, 3]
    store.close()
    (warning,) = ws.take_warnings()
    assert "cifar_tui.db is not a readable database" in warning and "rebuilding it from the run directories" in warning
    (aside,) = ws.home.glob("cifar_tui.db.damaged-*")
    assert aside.read_bytes() == junk  # kept, for whoever wants to look at it
    store = ws.store()  # the next open is quiet
    store.close()
    assert ws.take_warnings() == []


def test_a_copied_in_run_is_listed_under_its_directory_name_and_flagged(tmp_path):
    ws = _ws(tmp_path)
    ws.home.mkdir(parents=True)
    original = fake_run(ws.home, "resnet18_baseline", "00a1")
    store = ws.store()
    assert [r["run_id"] for r in store.runs()] == [original]
    store.close()
    copy = ws.home / "resnet18_baseline-copy"  # another run's directory, copied in under a new name
    shutil.copytree(ws.home / original, copy)
    hostile = ws.home / "hostile-run"
    hostile.mkdir()
    events = [json.loads(line) for line in (copy / "events.jsonl").read_text().splitlines()]
    (hostile / "events.jsonl").write_text("".join(json.dumps({**e, "run_id": "../../etc"}) + "\n" for e in events))
    store = ws.store()  # a store that has rows takes the new directories in too
    rows = {r["run_id"]: r for r in store.runs()}
    assert set(rows) == {original, copy.name, hostile.name}
    assert rows[original]["flag"] is None
    assert rows[copy.name]["flag"].startswith(f"its events name run id {original!r}")
    assert "'../../etc'" in rows[hostile.name]["flag"] and rows[hostile.name]["run_dir"] == str(hostile)
    assert len(store.epochs(copy.name)) == len(store.epochs(original)) == 6
    assert store.conn.execute("SELECT count(*) FROM runs WHERE run_id LIKE '%..%'").fetchone()[0] == 0
    store.close()


def test_an_unreadable_events_file_is_named_and_everything_else_listed(tmp_path):
    ws = _ws(tmp_path)
    ws.home.mkdir(parents=True)
    good = fake_run(ws.home, "resnet18_baseline", "00a1")
    bad = fake_run(ws.home, "resnet18_baseline", "00b2")
    (ws.home / bad / "events.jsonl").write_bytes(os.urandom(3000))
    _age(ws.home / bad / "events.jsonl")
    (ws.home / "not a run id").mkdir()
    (ws.home / "not a run id" / "events.jsonl").write_text((ws.home / good / "events.jsonl").read_text())
    starting = ws.home / "resnet18_baseline-starting"  # an engine writing its first line right now
    starting.mkdir()
    (starting / "events.jsonl").write_text('{"v": 1, "t": 1, "type": "sta')
    store = ws.store()
    assert [r["run_id"] for r in store.runs()] == [good]
    store.close()
    warnings = ws.take_warnings()
    assert len(warnings) == 2, warnings
    assert any(w.startswith(f"{ws.home / bad / 'events.jsonl'}: no readable `start` event") for w in warnings)
    assert any(w.startswith(f"{ws.home / 'not a run id'}: not a plain run id") for w in warnings)


def test_a_locked_or_unopenable_database_is_not_mistaken_for_a_damaged_one(tmp_path):
    home = tmp_path / "runs"
    (home / "cifar_tui.db").mkdir(parents=True)  # a directory where the file should be
    warnings = []
    try:
        open_store(home, warnings.append)
    except sqlite3.OperationalError:
        pass
    else:
        raise AssertionError("opened a directory as a database")
    assert warnings == [] and (home / "cifar_tui.db").is_dir()
