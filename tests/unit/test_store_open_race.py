"""Processes that open a new store at the same moment (two CLIs started together) all get it:
SQLite's switch to WAL answers "database is locked" without waiting, so the store waits itself."""
from __future__ import annotations

import threading

from engine.record.store import Store


def test_a_new_store_opened_by_several_at_once_opens_for_all(tmp_path):
    errors: list[BaseException] = []
    for attempt in range(20):
        home = tmp_path / f"ws{attempt}"
        barrier = threading.Barrier(4)

        def open_it():
            barrier.wait()
            try:
                Store(home).close()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
