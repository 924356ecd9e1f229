"""The run lifecycle as the TUI uses it: queue, launch, GPU slots, reaping, stop / resume / delete.

One object the App routes its panes' requests to. It is today's code (cifar_tui.launch for the
processes, cifar_tui.gpus for GPU slots, the store's queue) behind the methods the run supervisor
is to provide, so that moving the TUI onto the supervisor is a swap of this object. No textual
import: it never notifies or draws; it returns what happened or raises `Refused`.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Iterable

from engine.config import ConfigError
from engine.paths import check_run_id
from engine.store import Store

from ..gpus import GpuScheduler, Slot, visible_gpus
from ..launch import (Launched, LaunchRequest, Workspace, discard_unstarted, last_error_line, launch,
                      recorded_processes, request_stop)
from ..launch import resume as resume_engine
from .support import RESUMABLE, default_max_parallel, short_run


class Refused(Exception):
    """A request the lifecycle cannot carry out; the message says why (shown to the user)."""

    def __init__(self, message: str, severity: str = "error"):
        super().__init__(message)
        self.severity = severity


@dataclass
class Pumped:
    """What one pass over the queue did."""

    started: list[tuple[int, Launched]] = field(default_factory=list)   # (queue id, run)
    refused: list[str] = field(default_factory=list)                    # why an item cannot start


@dataclass
class Exited:
    """An engine this app started has exited; `reason` is set when it never started (its
    run directory is removed: the engine refused its input)."""

    run_id: str
    code: int
    reason: str | None = None


class RunControl:
    def __init__(self, ws: Workspace, store: Store, *, max_parallel: int | None = None):
        self.ws = ws
        self.store = store
        self.gpus = visible_gpus()
        self.max_parallel = max_parallel or default_max_parallel(self.gpus)
        # GPU pinning of the runs this app starts (one GPU each); the slot count above also
        # counts runs started elsewhere in the workspace
        self.scheduler = GpuScheduler(self.gpus, max_parallel=1_000_000)
        self.slots: dict[str, Slot] = {}
        self.procs: dict[str, subprocess.Popen] = {}  # engines started here, until reaped

    @property
    def where(self) -> str:
        """Where runs go: `CPU`, `1 GPU`, `2 GPUs`."""
        n = len(self.gpus)
        return f"{n} GPU" + ("s" if n != 1 else "") if n else "CPU"

    # ------------------------------------------------------------------ status
    def alive_here(self, run_id: str) -> bool:
        """An engine this app started for the run is still running."""
        proc = self.procs.get(run_id)
        return proc is not None and proc.poll() is None

    def status(self, run_id: str, row: dict | None) -> str:
        """A run's status when no live view of its events knows better (`row`: its store row)."""
        if self.alive_here(run_id):
            return "starting"
        return row["status"] if row else "unknown"

    def live_runs(self, running: Iterable[str], ended: set[str]) -> list[str]:
        """Runs taking a slot: running in the store or started here and alive, less those whose
        `end` event was read (done, even while their process is still exiting)."""
        live = [rid for rid in running if rid not in ended]
        live += [rid for rid in self.procs if self.alive_here(rid) and rid not in live and rid not in ended]
        return live

    # ------------------------------------------------------------------ queue
    def enqueue(self, names: list[str], overrides: list[str], nproc: int = 1) -> list[int]:
        return [self.store.enqueue(name, overrides, nproc) for name in names]

    def cancel(self, item_id: int) -> None:
        self.store.cancel_queued(item_id)

    def pump(self, queue: list[dict], running: Iterable[str], ended: set[str]) -> Pumped:
        """Start queued items (in order) while slots and GPUs are free."""
        out = Pumped()
        free = self.max_parallel - len(self.live_runs(running, ended))
        for item in queue:
            if free <= 0:
                break
            nproc = int(item.get("nproc") or 1)
            try:
                slot = self.scheduler.allocate(nproc)
            except ConfigError as exc:  # more processes than visible GPUs: it could never start
                self.store.fail_queued(item["id"])
                out.refused.append(f"queued {item['config']} cannot start: {exc}")
                continue
            if slot is None:
                break  # not enough free GPUs: the queue keeps its order
            if not self.store.claim_queued(item["id"], "starting"):
                self.scheduler.release(slot)
                continue  # another app instance took it
            try:
                launched = launch(self.ws, LaunchRequest(item["config"], list(item["overrides"])), nproc=nproc,
                                  env=slot.env())
            except (ConfigError, OSError) as exc:
                self.scheduler.release(slot)
                self.store.fail_queued(item["id"])
                out.refused.append(f"queued {item['config']} cannot start: {exc}")
                continue
            self.store.set_queue_run_id(item["id"], launched.run_id)
            self.procs[launched.run_id] = launched.process
            self.slots[launched.run_id] = slot
            out.started.append((item["id"], launched))
            free -= 1
        return out

    # ------------------------------------------------------------------ processes
    def reap(self) -> list[Exited]:
        """Collect engines that exited; give their GPUs back."""
        out = []
        for rid, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[rid]
            if rid in self.slots:
                self.scheduler.release(self.slots.pop(rid))
            run_dir = self.ws.home / rid
            reason = None
            if not (run_dir / "events.jsonl").exists():
                reason = last_error_line(run_dir) or f"the engine exited with code {code} before starting"
                discard_unstarted(run_dir)
            out.append(Exited(rid, code, reason))
        return out

    def stop(self, run_id: str, pid: int | None) -> None:
        """Ask the run to stop gracefully (checkpoint, then `end`)."""
        pid = pid or (self.procs[run_id].pid if run_id in self.procs else None)
        if not pid or not request_stop(int(pid)):
            raise Refused(f"{short_run(run_id)}: its process is gone", "warning")

    def resume(self, run_id: str, status: str) -> None:
        """Continue a stopped, crashed or failed run from its last checkpoint, on as many
        processes (GPUs) as it had."""
        if status not in RESUMABLE:
            raise Refused(f"{short_run(run_id)} cannot be resumed ({status})", "warning")
        if not (self.ws.home / run_id / "config.yaml").is_file():
            raise Refused(f"{short_run(run_id)}: no config.yaml in its run directory")
        _, nproc = recorded_processes(self.ws.home / run_id)
        try:
            slot = self.scheduler.allocate(nproc)
        except ConfigError as exc:  # it had more GPUs than are visible now
            raise Refused(f"{short_run(run_id)} cannot be resumed: {exc}") from None
        try:
            launched = resume_engine(self.ws, run_id, env=(slot or Slot()).env())
        except ConfigError as exc:
            if slot is not None:
                self.scheduler.release(slot)
            raise Refused(f"{short_run(run_id)} cannot be resumed: {exc}") from None
        slot = slot or Slot()
        self.procs[run_id] = launched.process
        if slot.gpus or not self.gpus:
            self.slots[run_id] = slot

    def delete(self, run_id: str) -> None:
        """Remove the run's directory (only one directly under the workspace) and its rows."""
        run_dir = self.ws.home / check_run_id(run_id)
        if run_dir.is_dir() and run_dir.resolve().parent == self.ws.home.resolve():
            shutil.rmtree(run_dir, ignore_errors=True)
        self.store.delete_run(run_id)
