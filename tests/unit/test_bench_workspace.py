"""The workspace of `cifar-tui bench --workspace N`: N real run directories (copies of one run
with their own ids and start times) that the store rebuilds into N distinct runs."""
from __future__ import annotations

from cifar_tui.bench.workspace import copy_runs
from engine.record.events import read_events
from engine.record.rebuild import rebuild_store
from engine.record.store import Store

from tests.support.tui import fake_run


def test_copies_are_distinct_runs_the_store_rebuilds(tmp_path):
    (tmp_path / "template").mkdir()
    template = fake_run(tmp_path / "template", "resnet18_baseline", "0001", epochs=3)
    ids = copy_runs(tmp_path / "template" / template, tmp_path / "runs", 70)
    assert len(set(ids)) == 70 and template not in ids
    store = Store(tmp_path / "runs")
    try:
        assert rebuild_store(store) == 70
        rows = {r["run_id"]: r for r in store.runs()}
        original = Store(tmp_path / "template")
        rebuild_store(original)
        source = original.run(template)
        original.close()
    finally:
        store.close()
    assert set(rows) == set(ids)
    starts = sorted(r["started_at"] for r in rows.values())
    assert all(b - a == 60.0 for a, b in zip(starts, starts[1:]))  # a minute apart, as the ids say
    for rid in ids:
        row = rows[rid]
        assert (row["status"], row["best_acc"], row["epochs_done"]) == (source["status"], source["best_acc"], 3)
        assert {e["run_id"] for e in read_events(tmp_path / "runs" / rid / "events.jsonl")} == {rid}
        assert (tmp_path / "runs" / rid / "config.yaml").read_bytes() == (tmp_path / "template" / template / "config.yaml").read_bytes()
