"""What the TUI knows of the store: the run rows and the queue, kept current from cheap signals.

The app asks `refresh()` once a second. When no other connection has committed since the last
read (SQLite's `PRAGMA data_version` did not move) it reads nothing; otherwise it reads only the
rows that changed:

- rows stamped since the last read: every engine write to a run row stamps `heartbeat_at`
  (start, heartbeat, epoch) or `ended_at` (end). The window starts `SLACK_S` before the last
  read, because a writer stamps its row before it gets the write lock (busy timeout: 60 s);
- rows inserted since the last read (`rowid` above the highest seen): a rebuild writes old
  timestamps, and INSERT OR REPLACE gives a row a new rowid;
- rows deleted: the row count says when to compare the ids (a covering index scan).

A writer that changes a run row without stamping it (none does today) is seen only when the
count of rows changes; `refresh(force=True)` reads every row. The app's own writes (queue,
delete) do not move its own connection's data_version: it forces a read after them.

Liveness (is the pid alive, is the heartbeat fresh) is checked only for the rows the store says
are running, on every refresh, with the store's own `effective_status`.

Runs submitted to a batch scheduler (SLURM) whose engine has not started (`Store.pending_jobs`,
read with the queue) are listed as `queued` with their job: a new run as a row of its own until
its engine writes the real one, a resumed run as its row with the status `queued`.

No textual import: unit-tested on a plain Store.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from engine.record.status import LIVE, QUEUED, RUNNING, effective_status, stall_after_default
from engine.record.store import Store

LEFT_OUT = ("config_json",)  # the bulk of a row: read on demand (compare screen)
SLACK_S = 120.0       # > the store's busy timeout: a row stamped at t may commit up to 60 s later
ID_BATCH = 500        # ids per `IN (...)` query (SQLite allows 999 parameters in old builds)


@dataclass
class Changes:
    """What one refresh found: run ids added, changed (stored values or shown status), removed."""

    added: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    queue: bool = False

    @property
    def runs(self) -> set[str]:
        """Ids whose row is new or different (not the removed ones)."""
        return self.added | self.changed

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.queue)


class RunsIndex:
    """The run rows (`runs`: run id -> row, status = effective status), the queued items and the
    refused ones (`refused`: their launch failed before the run started; listed until dismissed)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time, stall_after_s: float | None = None):
        self.store = store
        # seconds without a step before a live run shows as stalled: the workspace's setting by default
        self.stall_after_s = stall_after_default(store.home) if stall_after_s is None else stall_after_s
        self.runs: dict[str, dict] = {}
        self.queue: list[dict] = []
        self.refused: list[dict] = []    # launches refused before they started, until dismissed
        self.rows_read = 0            # run rows fetched from the store so far (tests, bench)
        self._stored: dict[str, dict] = {}  # rows as stored (status as written)
        self._running: set[str] = set()     # ids the store says are running
        self._version: int | None = None
        self._since: float | None = None    # rows stamped at or after this are re-read
        self._max_rowid = 0
        self._clock = clock
        self._top5: dict[str, tuple[tuple, float | None]] = {}  # run id -> ((best_epoch, epochs_done), top-5)
        self._fallback_group: dict[str, str] = {}  # run id -> its group, for runs that recorded none
        self._jobs: dict[str, dict] = {}    # run id -> its pending batch job (what the rows show)
        self._columns = [r[1] for r in store.conn.execute("PRAGMA table_info(runs)") if r[1] not in LEFT_OUT]
        self._select = f"SELECT rowid, {', '.join(self._columns)} FROM runs"

    # ------------------------------------------------------------------ reading
    def refresh(self, force: bool = False) -> Changes:
        changes = Changes()
        version = self.store.data_version()  # before reading: a commit during the read moves it again
        if force or version != self._version:
            self._version = version
            self._read(changes, everything=force or self._since is None)
        self._check_liveness(changes)
        return changes

    def _read(self, changes: Changes, everything: bool) -> None:
        now = self._clock()
        conn = self.store.conn
        select = self._select
        if everything:
            gone = set(self._stored) - self._absorb(self._fetch(select), changes)
        else:
            self._absorb(self._fetch(f"{select} WHERE rowid > ? OR heartbeat_at >= ? OR ended_at >= ?",
                                     (self._max_rowid, self._since, self._since)), changes)
            gone = set()
        if not everything and conn.execute("SELECT count(*) FROM runs").fetchone()[0] != len(self._stored):
            ids = {r[0] for r in conn.execute("SELECT run_id FROM runs")}
            gone = set(self._stored) - ids
            missing = sorted(ids - set(self._stored))
            for i in range(0, len(missing), ID_BATCH):
                batch = missing[i:i + ID_BATCH]
                self._absorb(self._fetch(f"{select} WHERE run_id IN ({','.join('?' * len(batch))})", batch), changes)
        for rid in gone:
            self._top5.pop(rid, None)
            self._fallback_group.pop(rid, None)
            self._stored.pop(rid, None)
            self.runs.pop(rid, None)
            self._running.discard(rid)
            changes.removed.add(rid)
        queue, refused = self.store.queued(), self.store.refused()
        if queue != self.queue or refused != self.refused or everything:  # a full read tells every reader everything
            self.queue, self.refused = queue, refused
            changes.queue = True
        self._read_jobs(changes)
        self._since = now - SLACK_S

    def _read_jobs(self, changes: Changes) -> None:
        """Runs waiting in a batch scheduler's queue: shown `queued`, with their job."""
        jobs = {j["run_id"]: j for j in self.store.pending_jobs()}
        for rid in set(self._jobs) | set(jobs):
            job = jobs.get(rid)
            if job == self._jobs.get(rid) and not changes.runs & {rid}:
                continue
            stored = self._stored.get(rid)
            if job is None:  # started (its row is there) or gone from the scheduler
                if stored is None:
                    self.runs.pop(rid, None)
                    changes.removed.add(rid)
                else:
                    self.runs[rid] = stored if rid not in self._running else self.runs[rid]
                    changes.changed.add(rid)
                continue
            shown = {"job_id": job["job_id"], "launcher": job["launcher"], "status": QUEUED,
                     "device": f"{job['launcher']} job {job['job_id']}"}
            if stored is None:
                row = dict.fromkeys(self._columns)
                row.update(run_id=rid, config_name=rid.rsplit("-", 2)[0], **shown)
                (changes.changed if rid in self.runs else changes.added).add(rid)
                self.runs[rid] = row
            elif self.runs[rid]["status"] not in LIVE:
                self.runs[rid] = dict(stored, **shown)
                changes.changed.add(rid)
        self._jobs = jobs

    def _fetch(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        cursor = self.store.conn.cursor()
        cursor.row_factory = None  # plain tuples: 10,000 rows are read at start-up
        return cursor.execute(sql, params).fetchall()

    def _absorb(self, rows: list[tuple], changes: Changes) -> set[str]:
        """Take rows (rowid, columns...) in; returns their run ids."""
        self.rows_read += len(rows)
        columns, stored, seen = self._columns, self._stored, set()
        for values in rows:
            self._max_rowid = max(self._max_rowid, values[0])
            row = dict(zip(columns, values[1:]))
            rid = row["run_id"]
            seen.add(rid)
            before = stored.get(rid)
            if before == row:
                continue
            stored[rid] = row
            (changes.changed if before is not None else changes.added).add(rid)
            if row["status"] == RUNNING:
                self._running.add(rid)
                status = effective_status(row, stall_after_s=self.stall_after_s)
                self.runs[rid] = row if status == RUNNING else dict(row, status=status)  # never mutated
            else:
                self._running.discard(rid)
                self.runs[rid] = row
        return seen

    def _check_liveness(self, changes: Changes) -> None:
        now = self._clock()
        for rid in self._running:
            status = effective_status(self._stored[rid], now=now, stall_after_s=self.stall_after_s)
            if status != self.runs[rid]["status"]:
                self.runs[rid] = dict(self.runs[rid], status=status)
                if rid not in changes.added:
                    changes.changed.add(rid)

    # ------------------------------------------------------------------ views of the rows
    def running(self) -> set[str]:
        """Ids shown as live (running, or stalled: alive but making no progress)."""
        return {rid for rid in self._running if self.runs[rid]["status"] in LIVE}

    def newest_first(self) -> list[str]:
        """Run ids as `Store.runs()` orders them: latest start first, never-started last."""
        return sorted(self.runs, key=lambda rid: -(self.runs[rid]["started_at"] or float("-inf")))

    def leaderboard(self) -> list[dict]:
        """As `Store.leaderboard()`: runs with a result, CIFAR-100 first, best accuracy first."""
        rows = [self.runs[rid] for rid in self.newest_first() if self.runs[rid]["best_acc"] is not None]
        rows.sort(key=lambda r: (r["data_source"] != "cifar100", -(r["best_acc"] or 0)))
        return rows

    def best_top5(self, run_ids: list[str]) -> dict[str, float | None]:
        """run id -> test top-5 at its best epoch. Read from the store only for runs whose best
        epoch (or epoch count) moved since the last ask: a redraw costs no query when none did."""
        out, missing = {}, []
        for rid in run_ids:
            row = self.runs[rid]
            stamp = (row["best_epoch"], row["epochs_done"])
            cached = self._top5.get(rid)
            if cached is not None and cached[0] == stamp:
                out[rid] = cached[1]
            else:
                missing.append(rid)
        if missing:
            for rid, top5 in self.store.best_top5(missing).items():
                row = self.runs[rid]
                self._top5[rid] = ((row["best_epoch"], row["epochs_done"]), top5)
                out[rid] = top5
        return out

    def group_rows(self, study: str | None = None) -> list[dict]:
        """The run rows (of one study, or all) as `studies.group_stats` takes them: a run that
        recorded no group gets the one `studies.group_of` gives it (from its resolved config, read
        once per run), so the figures equal `cifar-tui leaderboard --by group`."""
        from ..studies import fallback_group

        rows = [r for r in self.runs.values() if study is None or r.get("study") == study]
        missing = [r["run_id"] for r in rows if not r.get("group_key") and r["run_id"] not in self._fallback_group]
        for i in range(0, len(missing), ID_BATCH):
            batch = missing[i:i + ID_BATCH]
            for rid, name, config_json in self.store.conn.execute(
                    f"SELECT run_id, config_name, config_json FROM runs WHERE run_id IN ({','.join('?' * len(batch))})",
                    batch):
                self._fallback_group[rid] = fallback_group({"config_name": name, "config_json": config_json})
        return [r if r.get("group_key") else dict(r, group_key=self._fallback_group.get(r["run_id"])) for r in rows]

    def studies(self) -> list[str]:
        """The names of the studies the listed runs belong to, sorted."""
        return sorted({r["study"] for r in self.runs.values() if r.get("study")})
