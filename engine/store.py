"""The SQLite store (runs/cifar_tui.db): runs, epochs, the launch queue and GPU leases.

Engine processes write it in short transactions (WAL, busy timeout); the UI and the
CLI read it; launchers (cifar_tui.supervisor) queue and lease through it. The run
directories are the durable record: `rebuild()` recreates every run row from them
(engine/rebuild.py). Leases are engine/leases.py's; the engine only keeps its
lease's heartbeat fresh (`heartbeat`).
"""
from __future__ import annotations

import json
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .status import COMPLETED, ITEM_CANCELLED, ITEM_QUEUED, ITEM_REFUSED, ITEM_STARTED, RUNNING
from .status import effective_status, pid_alive, stall_after_default  # noqa: F401 - pid_alive: re-exported

DB_NAME = "cifar_tui.db"

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
CREATE TABLE IF NOT EXISTS leases (
    slot          TEXT PRIMARY KEY,   -- 'gpu:<id>' (one per GPU) or 'cpu:<run_id>'
    run_id        TEXT NOT NULL,
    pid           INTEGER NOT NULL,   -- the holder: the launcher, then the engine process it spawned
    host          TEXT NOT NULL,
    pid_started   REAL,               -- the holder's process start time (a reused pid is not the holder)
    acquired_at   REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    slot         TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    pid          INTEGER,
    host         TEXT,
    acquired_at  REAL NOT NULL,
    released_at  REAL,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS leases_run ON leases(run_id);
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
ADDED_COLUMNS = (
    ("queue", "nproc", "INTEGER NOT NULL DEFAULT 1"),
    ("queue", "owner_pid", "INTEGER"),     # a launcher's own item (the CLI's); NULL: any launcher may start it
    ("queue", "owner_host", "TEXT"),
    ("queue", "resume_of", "TEXT"),        # the run this item resumes (config then holds its id)
    ("queue", "error", "TEXT"),            # why a refused item could not start
    ("runs", "progress_at", "REAL"),       # last epoch (or start): a live run without progress is stalled
    ("runs", "flag", "TEXT"),              # what is odd about a copied-in run (its events name another id)
)


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


def claim_item(conn: sqlite3.Connection, item_id: int, run_id: str) -> bool:
    """Inside a transaction: take a queued item for `run_id`; False when another launcher took it."""
    cur = conn.execute(f"UPDATE queue SET state='{ITEM_STARTED}', run_id=? WHERE id=? AND state='{ITEM_QUEUED}'",
                       (run_id, item_id))
    return cur.rowcount == 1


class Store:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.conn = connect(self.home)

    def close(self) -> None:
        self.conn.close()

    # -- engine side -----------------------------------------------------
    def run_started(self, run_id: str, *, config: dict, device: str, pid: int, run_dir: str,
                    epochs_total: int, params: int | None, flops: float | None, world_size: int = 1) -> None:
        now = time.time()
        with transaction(self.conn) as c:
            c.execute(
                f"""INSERT INTO runs (run_id, config_name, status, data_source, device, pid, host, run_dir,
                       started_at, heartbeat_at, progress_at, epochs_total, reference_acc, params, flops, world_size,
                       config_json)
                   VALUES (?, ?, '{RUNNING}', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET status='{RUNNING}', device=excluded.device, pid=excluded.pid,
                       host=excluded.host, heartbeat_at=excluded.heartbeat_at, progress_at=excluded.progress_at,
                       epochs_total=excluded.epochs_total, world_size=excluded.world_size, ended_at=NULL, error=NULL""",
                (run_id, config["name"], config["data"]["source"], device, pid, socket.gethostname(), run_dir,
                 now, now, now, epochs_total, (config.get("reference") or {}).get("accuracy"),
                 params, flops, world_size, json.dumps(config)),
            )
            c.execute("UPDATE leases SET heartbeat_at=? WHERE run_id=?", (now, run_id))

    def heartbeat(self, run_id: str, wall_s: float | None = None) -> None:
        """The run is alive: its row and the GPU lease its launcher handed it stay fresh."""
        now = time.time()
        with transaction(self.conn) as c:
            if wall_s is None:
                c.execute("UPDATE runs SET heartbeat_at=? WHERE run_id=?", (now, run_id))
            else:
                c.execute("UPDATE runs SET heartbeat_at=?, wall_s=? WHERE run_id=?", (now, wall_s, run_id))
            c.execute("UPDATE leases SET heartbeat_at=? WHERE run_id=?", (now, run_id))

    def epoch_done(self, run_id: str, epoch: dict, wall_s: float) -> None:
        now = time.time()
        with transaction(self.conn) as c:
            c.execute(
                f"""INSERT OR REPLACE INTO epochs (run_id, epoch, {', '.join(EPOCH_FIELDS)}, t)
                    VALUES (?, ?, {', '.join('?' * len(EPOCH_FIELDS))}, ?)""",
                (run_id, epoch["epoch"], *[epoch.get(k) for k in EPOCH_FIELDS], now),
            )
            c.execute(
                """UPDATE runs SET epochs_done=?, best_acc=?, best_epoch=?, wall_s=?, heartbeat_at=?, progress_at=?
                   WHERE run_id=?""",
                (epoch["epoch"], epoch.get("best_acc"), epoch.get("best_epoch"), wall_s, now, now, run_id),
            )

    def run_ended(self, run_id: str, status: str, error: str | None, wall_s: float) -> None:
        with transaction(self.conn) as c:
            c.execute("UPDATE runs SET status=?, error=?, ended_at=?, wall_s=? WHERE run_id=?",
                      (status, error, time.time(), wall_s, run_id))

    # -- readers ---------------------------------------------------------
    def runs(self, stall_after_s: float | None = None) -> list[dict]:
        """Every run, newest first, with its effective status (engine.status.effective_status)."""
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started_at DESC").fetchall()
        now, stall = time.time(), stall_after_s or stall_after_default()
        out = []
        for r in rows:
            d = dict(r)
            d["status"] = effective_status(r, now=now, stall_after_s=stall)
            out.append(d)
        return out

    def run(self, run_id: str, stall_after_s: float | None = None) -> dict | None:
        r = self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if r is None:
            return None
        d = dict(r)
        d["status"] = effective_status(r, stall_after_s=stall_after_s or stall_after_default())
        return d

    def run_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT run_id FROM runs")}

    def epochs(self, run_id: str) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))]

    def leaderboard(self) -> list[dict]:
        """Runs with a result, CIFAR-100 before synthetic, best accuracy first within each."""
        rows = [r for r in self.runs() if r["best_acc"] is not None]
        rows.sort(key=lambda r: (r["data_source"] != "cifar100", -(r["best_acc"] or 0)))
        return rows

    def latest_finished(self, config_name: str, data_source: str | None = None) -> dict | None:
        q = f"SELECT * FROM runs WHERE config_name=? AND status='{COMPLETED}'"
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
    def enqueue(self, config: str, overrides: list[str], nproc: int = 1, *, owner_pid: int | None = None,
                resume_of: str | None = None) -> int:
        """Queue a run of `config`; nproc > 1: a DDP run of that many processes (GPUs).

        owner_pid: the item belongs to that launcher (the CLI follows its own runs); None: any
        launcher serving the shared queue (a TUI) may start it. resume_of: continue that run."""
        with transaction(self.conn) as c:
            cur = c.execute(
                """INSERT INTO queue (config, overrides, created_at, nproc, owner_pid, owner_host, resume_of)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (config, json.dumps(overrides), time.time(), int(nproc), owner_pid,
                 socket.gethostname() if owner_pid else None, resume_of))
            return int(cur.lastrowid)

    def queued(self, include_owned: bool = False) -> list[dict]:
        """Items waiting to start, oldest first: the shared queue, and with include_owned the
        launchers' own items too."""
        where = "" if include_owned else " AND owner_pid IS NULL"
        rows = self.conn.execute(f"SELECT * FROM queue WHERE state='{ITEM_QUEUED}'{where} ORDER BY id").fetchall()
        return [dict(r, overrides=json.loads(r["overrides"])) for r in rows]

    def claim_queued(self, item_id: int, run_id: str) -> bool:
        with transaction(self.conn) as c:
            return claim_item(c, item_id, run_id)

    def set_queue_run_id(self, item_id: int, run_id: str) -> None:
        """Record which run a claimed queue item became."""
        with transaction(self.conn) as c:
            c.execute("UPDATE queue SET run_id=? WHERE id=?", (run_id, item_id))

    def fail_queued(self, item_id: int, error: str | None = None) -> None:
        """A claimed item whose launch was refused (its config no longer validates): not retried."""
        with transaction(self.conn) as c:
            c.execute(f"UPDATE queue SET state='{ITEM_REFUSED}', error=? WHERE id=?", (error, item_id))

    def cancel_queued(self, item_id: int) -> bool:
        with transaction(self.conn) as c:
            cur = c.execute(f"UPDATE queue SET state='{ITEM_CANCELLED}' WHERE id=? AND state='{ITEM_QUEUED}'",
                            (item_id,))
            return cur.rowcount == 1

    # -- recovery --------------------------------------------------------
    def rebuild(self) -> int:
        """Re-create run and epoch rows from the run directories (the durable record)."""
        from .rebuild import ingest_run_dirs

        return ingest_run_dirs(self, replace=True).added
