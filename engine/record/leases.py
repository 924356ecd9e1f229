"""GPU leases across processes, kept in the store (the `leases` and `lease_log` tables).

Every launcher on the machine (any number of TUIs and CLIs) takes the slots a run needs
here, in one BEGIN IMMEDIATE transaction, so they all see the same free GPUs:

1. the launcher acquires the slots under its own pid (`acquire`), before it spawns;
2. it spawns the engine and hands the lease to the engine's process (`transfer`): from
   then on the lease lives as long as the engine does, whether the launcher stays or not
   (a run started by a TUI that quits keeps its GPU until the engine exits);
3. the engine keeps the lease's heartbeat fresh (`Store.heartbeat`, every few seconds);
4. the launcher releases it when it reaps the process (`release`). If nobody does (the
   launcher is gone too), the lease frees itself: a lease whose holder process is dead on
   this host, whose pid now belongs to another process, or whose heartbeat is older than
   `stale_s`, is dropped by the next acquisition, whoever makes it.

A run on GPUs takes one `gpu:<id>` slot per GPU; a run on the CPU takes a `cpu:<run_id>`
slot, so that `max_parallel` (runs at a time on this host) counts every launcher's runs.
`lease_log` keeps every lease's holder and interval (for `cifar-tui` diagnostics and tests).
No torch, no UI: the engine imports this module's table through the store only.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Sequence

from ..config import ConfigError
from .status import LIVE, RUNNING, effective_status, pid_alive, this_host
from .store import claim_item, transaction

LEASE_STALE_S = 300.0  # generous: covers an engine's start-up (data, model) while its launcher is gone


def gpu_slot(gpu: str) -> str:
    return f"gpu:{gpu}"


def cpu_slot(run_id: str) -> str:
    return f"cpu:{run_id}"


def process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch); None when it cannot be told."""
    try:
        import psutil

        return psutil.Process(int(pid)).create_time()
    except Exception:  # noqa: BLE001 - gone, or no permission: the pid check decides
        return None


@dataclass(frozen=True)
class Grant:
    """The slots a run got: its GPUs (empty: the CPU)."""

    run_id: str
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class Busy:
    """Nothing granted now: why (one line for the user)."""

    reason: str


class RunAlreadyLive(ConfigError):
    """The run holds a lease or runs already (two launchers resuming the same run)."""


class Leases:
    def __init__(self, conn: sqlite3.Connection, *, stale_s: float = LEASE_STALE_S):
        self.conn = conn
        self.stale_s = stale_s
        self.host = this_host()

    # -- liveness --------------------------------------------------------
    def holder_alive(self, lease: sqlite3.Row | dict, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if now - lease["heartbeat_at"] > self.stale_s:
            return False
        if lease["host"] != self.host:
            return True  # another host's process: its heartbeat is all we can see
        if not pid_alive(lease["pid"]):
            return False
        started = lease["pid_started"]
        if started is not None:
            actual = process_started(lease["pid"])
            if actual is not None and abs(actual - started) > 1.0:
                return False  # the pid was reused by another process
        return True

    def _sweep(self, c: sqlite3.Connection, now: float) -> list[sqlite3.Row]:
        """Inside a transaction: drop the leases of gone holders; the live ones."""
        live = []
        for lease in c.execute("SELECT * FROM leases ORDER BY slot").fetchall():
            if self.holder_alive(lease, now):
                live.append(lease)
                continue
            c.execute("DELETE FROM leases WHERE slot=?", (lease["slot"],))
            c.execute("UPDATE lease_log SET released_at=?, reason=? WHERE slot=? AND run_id=? AND released_at IS NULL",
                      (now, "holder gone", lease["slot"], lease["run_id"]))
        return live

    def _live_runs_here(self, c: sqlite3.Connection, now: float) -> set[str]:
        """Runs the store says are alive on this host (started by any launcher, or bare)."""
        rows = c.execute(f"SELECT * FROM runs WHERE status='{RUNNING}'").fetchall()
        return {r["run_id"] for r in rows
                if (r["host"] or self.host) == self.host and effective_status(r, now=now) in LIVE}

    # -- the launcher's side ---------------------------------------------
    def acquire(self, run_id: str, *, gpus: Sequence[str], n: int, max_parallel: int | None,
                pid: int | None = None, claim: int | None = None) -> Grant | Busy | None:
        """Take `n` of `gpus` (n=0 or no gpus: a CPU slot) for run_id, held by `pid` (default: us).

        Busy when too few GPUs are free or `max_parallel` runs are already alive on this host;
        None when `claim` (a queue item id, claimed in the same transaction) was taken by another
        launcher. Raises RunAlreadyLive when run_id already holds a lease or is running."""
        pid = pid or os.getpid()
        now = time.time()
        with transaction(self.conn) as c:
            live = self._sweep(c, now)
            holders = {lease["run_id"] for lease in live}
            running = self._live_runs_here(c, now)
            if run_id in holders or run_id in running:
                raise RunAlreadyLive(f"run {run_id} is already running or starting")
            taken: tuple[str, ...] = ()
            if gpus and n:
                held = {lease["slot"]: lease for lease in live}
                free = [g for g in gpus if gpu_slot(g) not in held]
                if len(free) < n:
                    busy = ", ".join(f"GPU {g} held by {held[gpu_slot(g)]['run_id']} (pid {held[gpu_slot(g)]['pid']})"
                                     for g in gpus if gpu_slot(g) in held)
                    return Busy(f"needs {n} GPU{'s' if n != 1 else ''}, {len(free)} free: {busy}")
                taken = tuple(free[:n])
            alive = holders | running
            if max_parallel and len(alive) >= max_parallel:
                return Busy(f"{len(alive)} run{'s' if len(alive) != 1 else ''} alive on this host, "
                            f"{max_parallel} at a time")
            if claim is not None and not claim_item(c, claim, run_id):
                return None
            started = process_started(pid)
            for slot in [gpu_slot(g) for g in taken] or [cpu_slot(run_id)]:
                c.execute("""INSERT INTO leases (slot, run_id, pid, host, pid_started, acquired_at, heartbeat_at)
                             VALUES (?, ?, ?, ?, ?, ?, ?)""", (slot, run_id, pid, self.host, started, now, now))
                c.execute("INSERT INTO lease_log (slot, run_id, pid, host, acquired_at) VALUES (?, ?, ?, ?, ?)",
                          (slot, run_id, pid, self.host, now))
            return Grant(run_id, taken)

    def transfer(self, run_id: str, pid: int) -> None:
        """Hand run_id's lease to the process that will hold the GPUs (the spawned engine)."""
        now = time.time()
        with transaction(self.conn) as c:
            c.execute("UPDATE leases SET pid=?, pid_started=?, heartbeat_at=? WHERE run_id=?",
                      (pid, process_started(pid), now, run_id))
            c.execute("UPDATE lease_log SET pid=? WHERE run_id=? AND released_at IS NULL", (pid, run_id))

    def refresh(self, run_ids: Sequence[str]) -> None:
        """Keep leases fresh while their engines start (the engine beats once it runs)."""
        if not run_ids:
            return
        with transaction(self.conn) as c:
            c.executemany("UPDATE leases SET heartbeat_at=? WHERE run_id=?", [(time.time(), r) for r in run_ids])

    def release(self, run_id: str, *, pid: int | None = None, reason: str = "released") -> int:
        """Free run_id's slots (only those `pid` holds, when given). Returns how many."""
        now = time.time()
        where, args = ("run_id=?", [run_id]) if pid is None else ("run_id=? AND pid=?", [run_id, pid])
        with transaction(self.conn) as c:
            slots = [r["slot"] for r in c.execute(f"SELECT slot FROM leases WHERE {where}", args)]
            for slot in slots:
                c.execute("DELETE FROM leases WHERE slot=?", (slot,))
                c.execute("UPDATE lease_log SET released_at=?, reason=? WHERE slot=? AND run_id=? AND released_at IS NULL",
                          (now, reason, slot, run_id))
        return len(slots)

    # -- readers ---------------------------------------------------------
    def held(self) -> list[dict]:
        """The live leases (a gone holder's lease is left for the next acquisition to drop)."""
        now = time.time()
        return [dict(r) for r in self.conn.execute("SELECT * FROM leases ORDER BY slot") if self.holder_alive(r, now)]

    def held_by(self, run_id: str) -> list[dict]:
        return [lease for lease in self.held() if lease["run_id"] == run_id]

    def history(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM lease_log ORDER BY id")]
