"""The SQLite store (runs/cifar_tui.db): runs, epochs, the launch queue, GPU leases, studies
and batch jobs.

Engine processes write it in short transactions (WAL, busy timeout); the UI and the
CLI read it; launchers (cifar_tui.supervisor) queue and lease through it. The run
directories are the durable record: engine/record/rebuild.py recreates every run and evaluation
row from them. Leases are engine/record/leases.py's; the engine only keeps its
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

from .status import COMPLETED, ITEM_CANCELLED, ITEM_QUEUED, ITEM_REFUSED, ITEM_REFUSED_BEFORE, ITEM_STARTED, RUNNING
from .status import effective_status, stall_after_default

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
    lr REAL, epoch_s REAL, t REAL, test_top5 REAL,
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
CREATE TABLE IF NOT EXISTS studies (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,        -- sweep | tune | seed
    config      TEXT,                 -- the config (or configs, comma-separated) it runs
    spec_json   TEXT NOT NULL DEFAULT '{}',  -- what it was asked to run (sets, seeds, params, trials, ...)
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    command     TEXT
);
CREATE TABLE IF NOT EXISTS jobs (     -- runs submitted through submitit (SLURM, or its local executor)
    run_id        TEXT PRIMARY KEY,
    launcher      TEXT NOT NULL,      -- slurm | local-submitit
    job_id        TEXT NOT NULL,
    folder        TEXT NOT NULL,      -- submitit's folder: the job's pickles and logs
    submitted_at  REAL NOT NULL,
    state         TEXT NOT NULL DEFAULT 'submitted',  -- submitted | cancelled | lost (ended, its engine never started)
    state_at      REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS leases_run ON leases(run_id);
CREATE TABLE IF NOT EXISTS evals (
    key         TEXT NOT NULL,       -- the run id, or ensemble-<hash> of several runs
    ckpt        TEXT NOT NULL,       -- best | last | epoch number
    tta         TEXT NOT NULL,       -- none | flip
    members     TEXT NOT NULL,       -- JSON list of run ids
    data_source TEXT,
    n           INTEGER,
    top1        REAL,
    top5        REAL,
    loss        REAL,
    result_json TEXT NOT NULL,       -- the whole result: per class, confused pairs, file paths
    t           REAL NOT NULL,
    PRIMARY KEY (key, ckpt, tta)
);
"""

EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_s", "test_top5")


def db_path(home: Path) -> Path:
    return Path(home) / DB_NAME


def connect(home: Path, readonly: bool = False) -> sqlite3.Connection:
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path(home), timeout=60.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=60000")
    if not readonly:
        _use_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        _add_missing_columns(conn)
    return conn


def _use_wal(conn: sqlite3.Connection, patience_s: float = 60.0) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without its busy handler, when
    processes open a new store together (two CLIs started at once): wait for the other one here."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# columns added after the first release: (table, column, definition); older stores get them on open
_REFUSED_STATES = f"('{ITEM_REFUSED}', '{ITEM_REFUSED_BEFORE}')"  # a store written before the rename says 'failed'

ADDED_COLUMNS = (
    ("queue", "nproc", "INTEGER NOT NULL DEFAULT 1"),
    ("queue", "owner_pid", "INTEGER"),     # a launcher's own item (the CLI's); NULL: any launcher may start it
    ("queue", "owner_host", "TEXT"),
    ("queue", "resume_of", "TEXT"),        # the run this item resumes (config then holds its id)
    ("queue", "error", "TEXT"),            # why a refused item could not start
    ("runs", "progress_at", "REAL"),       # last step (or start): a live run beating without progress is stalled
    ("runs", "flag", "TEXT"),              # what is odd about a copied-in run (its events name another id)
    ("epochs", "test_top5", "REAL"),
    ("runs", "study", "TEXT"),             # the study the run belongs to (start.study)
    ("runs", "group_key", "TEXT"),         # its group: config + overrides, seed left out (start.group)
    ("queue", "study", "TEXT"),
    ("queue", "group_key", "TEXT"),
    ("runs", "seed", "INTEGER"),           # train.seed (a study pairs its groups' runs by seed)
    ("runs", "reference_kind", "TEXT"),    # reference.kind: seed | paper | estimate | goal
)
# what an added column holds in the rows written before it existed (from their resolved config)
BACKFILL = {("runs", "seed"): "json_extract(config_json, '$.train.seed')",
            ("runs", "reference_kind"): "json_extract(config_json, '$.reference.kind')"}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, definition in ADDED_COLUMNS:
        if column in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it just now
                raise
            continue
        if (table, column) in BACKFILL:
            try:
                conn.execute(f"UPDATE {table} SET {column} = {BACKFILL[table, column]} WHERE json_valid(config_json)")
            except sqlite3.OperationalError:  # locked by a writer for longer than the busy timeout: left NULL
                pass


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
                    epochs_total: int, params: int | None, flops: float | None, world_size: int = 1,
                    study: str | None = None, group: str | None = None) -> None:
        now = time.time()
        with transaction(self.conn) as c:
            c.execute(
                f"""INSERT INTO runs (run_id, config_name, status, data_source, device, pid, host, run_dir,
                       started_at, heartbeat_at, progress_at, epochs_total, reference_acc, params, flops, world_size,
                       config_json, study, group_key, seed, reference_kind)
                   VALUES (?, ?, '{RUNNING}', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET status='{RUNNING}', device=excluded.device, pid=excluded.pid,
                       host=excluded.host, heartbeat_at=excluded.heartbeat_at, progress_at=excluded.progress_at,
                       epochs_total=excluded.epochs_total, world_size=excluded.world_size, ended_at=NULL, error=NULL,
                       study=COALESCE(excluded.study, runs.study), group_key=COALESCE(excluded.group_key, runs.group_key)""",
                (run_id, config["name"], config["data"]["source"], device, pid, socket.gethostname(), run_dir,
                 now, now, now, epochs_total, (config.get("reference") or {}).get("accuracy"),
                 params, flops, world_size, json.dumps(config), study, group, (config.get("train") or {}).get("seed"),
                 (config.get("reference") or {}).get("kind")),
            )
            c.execute("UPDATE leases SET heartbeat_at=? WHERE run_id=?", (now, run_id))

    def heartbeat(self, run_id: str, wall_s: float | None = None, progress_at: float | None = None) -> None:
        """The run is alive: its row and the GPU lease its launcher handed it stay fresh.
        progress_at: when it last made a step (a stalled run beats on without progress)."""
        now = time.time()
        with transaction(self.conn) as c:
            c.execute("UPDATE runs SET heartbeat_at=?, wall_s=COALESCE(?, wall_s), progress_at=COALESCE(?, progress_at) "
                      "WHERE run_id=?", (now, wall_s, progress_at, run_id))
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
        """Every run, newest first, with its effective status (engine.record.status.effective_status)."""
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started_at DESC").fetchall()
        now, stall = time.time(), self.stall_threshold(stall_after_s)
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
        d["status"] = effective_status(r, stall_after_s=self.stall_threshold(stall_after_s))
        return d

    def stall_threshold(self, stall_after_s: float | None = None) -> float | None:
        """stall_after_s as given (0: never stalled), or the workspace's setting when None."""
        if stall_after_s is None:
            return stall_after_default(self.home)
        return stall_after_s or None

    def run_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT run_id FROM runs")}

    def epochs(self, run_id: str) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))]

    def best_top5(self, run_ids: list[str]) -> dict[str, float | None]:
        """run id -> the test top-5 accuracy of its best epoch (None: no such epoch row, or an
        epoch written before top-5 was reported). One indexed lookup per run."""
        out: dict[str, float | None] = {}
        for i in range(0, len(run_ids), 500):  # at most 999 parameters in old SQLite builds
            batch = run_ids[i:i + 500]
            rows = self.conn.execute(
                f"""SELECT r.run_id, e.test_top5 FROM runs r LEFT JOIN epochs e
                    ON e.run_id = r.run_id AND e.epoch = r.best_epoch
                    WHERE r.run_id IN ({','.join('?' * len(batch))})""", batch)
            out.update((row[0], row[1]) for row in rows)
        return out

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
            c.execute("DELETE FROM evals WHERE key=?", (run_id,))
            c.execute("DELETE FROM jobs WHERE run_id=?", (run_id,))

    # -- queue -----------------------------------------------------------
    def enqueue(self, config: str, overrides: list[str], nproc: int = 1, *, owner_pid: int | None = None,
                resume_of: str | None = None, study: str | None = None, group: str | None = None) -> int:
        """Queue a run of `config`; nproc > 1: a DDP run of that many processes (GPUs).

        owner_pid: the item belongs to that launcher (the CLI follows its own runs); None: any
        launcher serving the shared queue (a TUI) may start it. resume_of: continue that run.
        study, group: what the run will record (None: no study; the group computed at launch)."""
        with transaction(self.conn) as c:
            cur = c.execute(
                """INSERT INTO queue (config, overrides, created_at, nproc, owner_pid, owner_host, resume_of, study,
                                      group_key)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (config, json.dumps(overrides), time.time(), int(nproc), owner_pid,
                 socket.gethostname() if owner_pid else None, resume_of, study, group))
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

    def refused(self) -> list[dict]:
        """Shared-queue items whose launch was refused (bad config, the engine refused its input
        before it started), oldest first, until dismissed: a TUI lists them with the reason."""
        rows = self.conn.execute(f"SELECT * FROM queue WHERE state IN {_REFUSED_STATES} AND owner_pid IS NULL "
                                 "ORDER BY id").fetchall()
        return [dict(r, overrides=json.loads(r["overrides"])) for r in rows]

    def dismiss_refused(self, item_id: int) -> bool:
        """A refused item read and put away (it is no longer listed)."""
        with transaction(self.conn) as c:
            cur = c.execute(f"UPDATE queue SET state='{ITEM_CANCELLED}' WHERE id=? AND state IN {_REFUSED_STATES}",
                            (item_id,))
            return cur.rowcount == 1

    def cancel_queued(self, item_id: int) -> bool:
        with transaction(self.conn) as c:
            cur = c.execute(f"UPDATE queue SET state='{ITEM_CANCELLED}' WHERE id=? AND state='{ITEM_QUEUED}'",
                            (item_id,))
            return cur.rowcount == 1

    def forget_queued(self, item_ids: list[int]) -> None:
        """Remove items from the queue altogether (a submission the scheduler refused: as if never made)."""
        with transaction(self.conn) as c:
            c.executemany("DELETE FROM queue WHERE id=?", [(i,) for i in item_ids])

    # -- studies and batch jobs --------------------------------------------
    def save_study(self, name: str, kind: str, config: str | None, spec: dict, command: str | None = None) -> None:
        """Create a study, or update the spec of an existing one (a study continued with more runs)."""
        now = time.time()
        with transaction(self.conn) as c:
            c.execute("""INSERT INTO studies (name, kind, config, spec_json, created_at, updated_at, command)
                         VALUES (?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT(name) DO UPDATE SET spec_json=excluded.spec_json, updated_at=excluded.updated_at,
                             config=excluded.config, command=excluded.command""",
                      (name, kind, config, json.dumps(spec), now, now, command))

    def delete_study(self, name: str) -> None:
        """Remove a study's record (its runs, if any, keep their rows)."""
        with transaction(self.conn) as c:
            c.execute("DELETE FROM studies WHERE name=?", (name,))

    def study(self, name: str) -> dict | None:
        r = self.conn.execute("SELECT * FROM studies WHERE name=?", (name,)).fetchone()
        return None if r is None else dict(r, spec=json.loads(r["spec_json"] or "{}"))

    def studies(self) -> list[dict]:
        """Every recorded study, newest first."""
        rows = self.conn.execute("SELECT * FROM studies ORDER BY created_at DESC").fetchall()
        return [dict(r, spec=json.loads(r["spec_json"] or "{}")) for r in rows]

    def study_queue(self, study: str) -> list[dict]:
        """A study's queue items, waiting (queued) or claimed (started), oldest first: its new runs,
        and the resumes of its runs (their items name the run in `resume_of`)."""
        rows = self.conn.execute(
            f"""SELECT * FROM queue WHERE state IN ('{ITEM_QUEUED}', '{ITEM_STARTED}')
                AND (study=? OR resume_of IN (SELECT run_id FROM runs WHERE study=?)) ORDER BY id""",
            (study, study)).fetchall()
        return [dict(r, overrides=json.loads(r["overrides"])) for r in rows]

    def study_runs(self, study: str, stall_after_s: float | None = None) -> list[dict]:
        """The runs of a study, oldest first, with effective statuses."""
        rows = self.conn.execute("SELECT * FROM runs WHERE study=? ORDER BY started_at", (study,)).fetchall()
        stall = stall_after_s or stall_after_default()
        return [dict(r, status=effective_status(r, stall_after_s=stall)) for r in rows]

    def add_job(self, run_id: str, launcher: str, job_id: str, folder: str) -> None:
        with transaction(self.conn) as c:
            c.execute("INSERT OR REPLACE INTO jobs (run_id, launcher, job_id, folder, submitted_at) VALUES (?, ?, ?, ?, ?)",
                      (run_id, launcher, job_id, folder, time.time()))

    def job(self, run_id: str) -> dict | None:
        r = self.conn.execute("SELECT * FROM jobs WHERE run_id=?", (run_id,)).fetchone()
        return None if r is None else dict(r)

    def jobs(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM jobs ORDER BY submitted_at")]

    def set_job_state(self, run_id: str, state: str) -> None:
        with transaction(self.conn) as c:
            c.execute("UPDATE jobs SET state=?, state_at=? WHERE run_id=?", (state, time.time(), run_id))

    _PENDING = """SELECT jobs.*, runs.run_id IS NOT NULL AS resumes FROM jobs LEFT JOIN runs USING (run_id)
                  WHERE jobs.state='submitted' AND (runs.run_id IS NULL OR MAX(COALESCE(runs.started_at, 0),
                        COALESCE(runs.heartbeat_at, 0), COALESCE(runs.ended_at, 0)) < jobs.submitted_at)"""

    def pending_jobs(self) -> list[dict]:
        """Submitted jobs whose engine has not started, oldest first: a new run's (no run row yet, `resumes`
        False) and a resume's (`resumes` True: its run's row is older than the job)."""
        return [dict(r) for r in self.conn.execute(self._PENDING + " ORDER BY jobs.submitted_at")]

    def pending_job(self, run_id: str) -> dict | None:
        """run_id's job if it is one of `pending_jobs`."""
        r = self.conn.execute(self._PENDING + " AND jobs.run_id=?", (run_id,)).fetchone()
        return None if r is None else dict(r)

    # -- evaluations (cifar-tui eval; engine/after/evaluate.py) ------------------
    def eval_recorded(self, key: str, members: list[str], result: dict) -> None:
        """Keep an evaluation result (the latest per run or ensemble, checkpoint and TTA)."""
        with transaction(self.conn) as c:
            c.execute(
                """INSERT OR REPLACE INTO evals (key, ckpt, tta, members, data_source, n, top1, top5, loss, result_json, t)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (key, str(result.get("ckpt", "best")), str(result.get("tta", "none")), json.dumps(members),
                 result.get("data_source"), result.get("n"), result.get("top1"), result.get("top5"), result.get("loss"),
                 json.dumps(result), result.get("t") or time.time()),
            )

    def evals(self, run_id: str | None = None) -> list[dict]:
        """Evaluation rows, newest first: all, or those of `run_id` (its own and the ensembles it is in)."""
        rows = [dict(r, members=json.loads(r["members"]))
                for r in self.conn.execute("SELECT * FROM evals ORDER BY t DESC")]
        return [r for r in rows if run_id is None or r["key"] == run_id or run_id in r["members"]]

    def eval_result(self, key: str, ckpt: str = "best", tta: str = "none") -> dict | None:
        r = self.conn.execute("SELECT result_json FROM evals WHERE key=? AND ckpt=? AND tta=?", (key, ckpt, tta)).fetchone()
        return json.loads(r["result_json"]) if r else None

    # -- change signal
    def data_version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]
