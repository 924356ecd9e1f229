"""The SQLite store (runs/cifar_tui.db): runs, epochs and the launch queue.

Engine processes write it in short transactions (WAL, busy timeout); the UI and the
CLI read it. The run directories are the durable record: `rebuild()` recreates
every row from them.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .events import read_events, summarize

DB_NAME = "cifar_tui.db"
HEARTBEAT_STALE_S = 90.0  # a live engine beats every few seconds

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    config_name   TEXT NOT NULL,
    status        TEXT NOT NULL,
    data_source   TEXT,
    device        TEXT,
    pid           INTEGER,
    host          TEXT,
    run_dir       TEXT,
    started_at    REAL,
    ended_at      REAL,
    heartbeat_at  REAL,
    epochs_total  INTEGER,
    epochs_done   INTEGER DEFAULT 0,
    best_acc      REAL,
    best_epoch    INTEGER,
    wall_s        REAL DEFAULT 0,
    reference_acc REAL,
    params        INTEGER,
    flops         REAL,
    world_size    INTEGER DEFAULT 1,
    error         TEXT,
    config_json   TEXT
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, test_loss REAL, test_acc REAL,
    lr REAL, epoch_s REAL, t REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    config      TEXT NOT NULL,
    overrides   TEXT NOT NULL DEFAULT '[]',
    created_at  REAL NOT NULL,
    state       TEXT NOT NULL DEFAULT 'queued',
    run_id      TEXT,
    nproc       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""

EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_s")


def db_path(home: Path) -> Path:
    return Path(home) / DB_NAME


def connect(home: Path, readonly: bool = False) -> sqlite3.Connection:
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path(home), timeout=60.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=60000")
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        _add_missing_columns(conn)
    return conn


# columns added after the first release: (table, column, definition); older stores get them on open
ADDED_COLUMNS = (("queue", "nproc", "INTEGER NOT NULL DEFAULT 1"),)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, definition in ADDED_COLUMNS:
        if column in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it just now
                raise


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers wait on
    # the busy timeout instead of failing with "database is locked" on upgrade.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purpose.
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def effective_status(row: sqlite3.Row | dict, now: float | None = None) -> str:
    """`running` rows whose process is gone (or silent too long) are `crashed`."""
    status = row["status"]
    if status != "running":
        return status
    now = now or time.time()
    same_host = not row["host"] or row["host"] == socket.gethostname()
    if same_host and not pid_alive(row["pid"]):
        return "crashed"
    beat = row["heartbeat_at"] or row["started_at"] or 0
    if now - beat > HEARTBEAT_STALE_S:
        return "crashed"
    return "running"


class Store:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.conn = connect(self.home)

    def close(self) -> None:
        self.conn.close()

    # -- engine side -----------------------------------------------------
    def run_started(self, run_id: str, *, config: dict, device: str, pid: int, run_dir: str,
                    epochs_total: int, params: int | None, flops: float | None, world_size: int = 1) -> None:
        with transaction(self.conn) as c:
            c.execute(
                """INSERT INTO runs (run_id, config_name, status, data_source, device, pid, host, run_dir,
                       started_at, heartbeat_at, epochs_total, reference_acc, params, flops, world_size, config_json)
                   VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET status='running', device=excluded.device, pid=excluded.pid,
                       host=excluded.host, heartbeat_at=excluded.heartbeat_at, epochs_total=excluded.epochs_total,
                       world_size=excluded.world_size, ended_at=NULL, error=NULL""",
                (run_id, config["name"], config["data"]["source"], device, pid, socket.gethostname(), run_dir,
                 time.time(), time.time(), epochs_total, (config.get("reference") or {}).get("accuracy"),
                 params, flops, world_size, json.dumps(config)),
            )

    def heartbeat(self, run_id: str, wall_s: float | None = None) -> None:
        with transaction(self.conn) as c:
            if wall_s is None:
                c.execute("UPDATE runs SET heartbeat_at=? WHERE run_id=?", (time.time(), run_id))
            else:
                c.execute("UPDATE runs SET heartbeat_at=?, wall_s=? WHERE run_id=?", (time.time(), wall_s, run_id))

    def epoch_done(self, run_id: str, epoch: dict, wall_s: float) -> None:
        with transaction(self.conn) as c:
            c.execute(
                f"""INSERT OR REPLACE INTO epochs (run_id, epoch, {', '.join(EPOCH_FIELDS)}, t)
                    VALUES (?, ?, {', '.join('?' * len(EPOCH_FIELDS))}, ?)""",
                (run_id, epoch["epoch"], *[epoch.get(k) for k in EPOCH_FIELDS], time.time()),
            )
            c.execute(
                """UPDATE runs SET epochs_done=?, best_acc=?, best_epoch=?, wall_s=?, heartbeat_at=? WHERE run_id=?""",
                (epoch["epoch"], epoch.get("best_acc"), epoch.get("best_epoch"), wall_s, time.time(), run_id),
            )

    def run_ended(self, run_id: str, status: str, error: str | None, wall_s: float) -> None:
        with transaction(self.conn) as c:
            c.execute("UPDATE runs SET status=?, error=?, ended_at=?, wall_s=? WHERE run_id=?",
                      (status, error, time.time(), wall_s, run_id))

    # -- readers ---------------------------------------------------------
    def runs(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started_at DESC").fetchall()
        now = time.time()
        out = []
        for r in rows:
            d = dict(r)
            d["status"] = effective_status(r, now)
            out.append(d)
        return out

    def run(self, run_id: str) -> dict | None:
        r = self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if r is None:
            return None
        d = dict(r)
        d["status"] = effective_status(r)
        return d

    def epochs(self, run_id: str) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))]

    def leaderboard(self) -> list[dict]:
        """Runs with a result, CIFAR-100 before synthetic, best accuracy first within each."""
        rows = [r for r in self.runs() if r["best_acc"] is not None]
        rows.sort(key=lambda r: (r["data_source"] != "cifar100", -(r["best_acc"] or 0)))
        return rows

    def latest_finished(self, config_name: str, data_source: str | None = None) -> dict | None:
        q = "SELECT * FROM runs WHERE config_name=? AND status='completed'"
        args: list[Any] = [config_name]
        if data_source:
            q += " AND data_source=?"
            args.append(data_source)
        r = self.conn.execute(q + " ORDER BY best_acc DESC, ended_at DESC LIMIT 1", args).fetchone()
        return dict(r) if r else None

    def delete_run(self, run_id: str) -> None:
        with transaction(self.conn) as c:
            c.execute("DELETE FROM epochs WHERE run_id=?", (run_id,))
            c.execute("DELETE FROM runs WHERE run_id=?", (run_id,))

    # -- queue -----------------------------------------------------------
    def enqueue(self, config: str, overrides: list[str], nproc: int = 1) -> int:
        """Queue a run of `config`; nproc > 1: a DDP run of that many processes (GPUs)."""
        with transaction(self.conn) as c:
            cur = c.execute("INSERT INTO queue (config, overrides, created_at, nproc) VALUES (?, ?, ?, ?)",
                            (config, json.dumps(overrides), time.time(), int(nproc)))
            return int(cur.lastrowid)

    def queued(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM queue WHERE state='queued' ORDER BY id").fetchall()
        return [dict(r, overrides=json.loads(r["overrides"])) for r in rows]

    def claim_queued(self, item_id: int, run_id: str) -> bool:
        with transaction(self.conn) as c:
            cur = c.execute("UPDATE queue SET state='started', run_id=? WHERE id=? AND state='queued'", (run_id, item_id))
            return cur.rowcount == 1

    def set_queue_run_id(self, item_id: int, run_id: str) -> None:
        """Record which run a claimed queue item became."""
        with transaction(self.conn) as c:
            c.execute("UPDATE queue SET run_id=? WHERE id=?", (run_id, item_id))

    def fail_queued(self, item_id: int) -> None:
        """A claimed item whose launch was refused (its config no longer validates): not retried."""
        with transaction(self.conn) as c:
            c.execute("UPDATE queue SET state='failed' WHERE id=?", (item_id,))

    def cancel_queued(self, item_id: int) -> None:
        with transaction(self.conn) as c:
            c.execute("UPDATE queue SET state='cancelled' WHERE id=? AND state='queued'", (item_id,))

    # -- recovery --------------------------------------------------------
    def rebuild(self) -> int:
        """Re-create run and epoch rows from the run directories (the durable record)."""
        count = 0
        for events_file in sorted(self.home.glob("*/events.jsonl")):
            events = read_events(events_file)
            state = summarize(events)
            start = state.get("start")
            if not start:
                continue
            run_id = start["run_id"]
            cfg = start.get("config") or {}
            end = state.get("end") or {}
            last_t = state.get("last_t") or start["t"]
            epochs = state["epochs"]
            wall = sum((e.get("epoch_s") or 0) for e in epochs.values())
            with transaction(self.conn) as c:
                c.execute(
                    """INSERT OR REPLACE INTO runs (run_id, config_name, status, data_source, device, pid, host, run_dir,
                           started_at, ended_at, heartbeat_at, epochs_total, epochs_done, best_acc, best_epoch, wall_s,
                           reference_acc, params, flops, world_size, error, config_json)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (run_id, cfg.get("name", start.get("config_name")), state["status"],
                     start.get("data_source"), start.get("device"), start.get("pid"), start.get("host"),
                     str(events_file.parent), state.get("started_at"), end.get("t"), last_t,
                     (cfg.get("train") or {}).get("epochs"), max(epochs) if epochs else 0,
                     state["best_acc"], state["best_epoch"], wall,
                     (cfg.get("reference") or {}).get("accuracy"), start.get("params"), start.get("flops"),
                     start.get("world_size", 1), end.get("error"), json.dumps(cfg)),
                )
                for e in epochs.values():
                    c.execute(
                        f"""INSERT OR REPLACE INTO epochs (run_id, epoch, {', '.join(EPOCH_FIELDS)}, t)
                            VALUES (?, ?, {', '.join('?' * len(EPOCH_FIELDS))}, ?)""",
                        (run_id, e["epoch"], *[e.get(k) for k in EPOCH_FIELDS], e.get("t")),
                    )
            count += 1
        return count

    # -- change signal
    def data_version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]
