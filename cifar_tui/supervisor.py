"""The run supervisor: the one owner of launching, the queue, GPU slots, reaping,
stop / resume / delete and run status. Plain Python (no Textual, no torch): the CLI uses it
(`run`, `run --parallel`, `resume`, `stop`, `runs`), and so does the TUI.

Every start goes through the store's queue and the store's GPU leases (engine/record/leases.py),
so any number of TUIs and CLIs on one machine share the same GPUs: a run holds its GPUs
through a lease that the launcher takes before spawning and hands to the engine process;
it is released when the process is reaped, or frees itself when the process is gone.

API
---
``sup = Supervisor(ws, *, gpus=None, max_parallel=None, shared_queue=True, stall_after_s=None)``
    gpus: the GPU ids runs may use (default `visible_gpus()`: CIFAR_TUI_GPUS simulates them).
    max_parallel: runs alive at a time on this host, counting every launcher's and bare ones
    (default `default_max_parallel`: CIFAR_TUI_MAX_PARALLEL, else one per GPU, else 1;
    `sys.maxsize`: no cap, GPU leases only). shared_queue: True for a TUI (its items persist
    and any TUI may start them); False for a CLI (its items are its own: it follows them, and
    they are dropped when it dies).
``sup.enqueue(config, overrides=(), nproc=1, *, cfg=None, torchrun_args=None, study=None, group=None) -> item id``
    queue a new run (ConfigError when it could never start: more processes than GPUs); study and
    group are recorded by the run (group default: the config plus its overrides, cifar_tui.sweep).
``sup.resume(run_id, epochs=None) -> item id``
    queue the continuation of a stopped / failed / crashed run (ConfigError otherwise); with
    `epochs`, train to that total (extends a completed run that kept its resume state).
``sup.pump() -> [Started | Refused]``
    start whatever may start now, in queue order (the head waits for its GPUs; `sup.blocked`
    says why); an item whose launch is refused (bad config) is marked and returned as Refused.
``sup.reap() -> [Reaped]``
    the processes this supervisor started that have exited (their leases released); a run
    that refused its input before starting is removed and its reason returned.
``sup.stop(run_id) -> pid | None``  graceful stop (checkpoint + `end`); NotLive when not alive. A run
    in a batch job (SLURM) or on another host is asked through its run dir (engine.stop_request)
    and its job cancelled: None (no local pid to wait for).
``sup.prune(run_id, reason)``    stop a run so that it ends `pruned` (a search's verdict).
``sup.submit_queued() -> [Submitted | Refused]``  with a launcher that schedules itself (SLURM): every
    item this supervisor serves, submitted at once (one job array), none followed here; when the
    scheduler refuses the submission (cifar_tui.launchers.SubmissionRefused, one line naming the
    option) the items are removed from the queue and the error raised.
``sup.delete(run_id)``           directory + store rows; RunIsLive for a live run.
``sup.cancel(item_id) -> bool``  drop a queued item.
``sup.refused() -> [dict]``, ``sup.dismiss(item_id)``  items whose launch was refused (a bad config, or an
    engine that refused its input before starting: `error` says why), listed until dismissed.
``sup.status(run_id) -> str``    the effective status (engine.record.status), `starting`/`stopping` too.
``sup.runs() -> [dict]``         store rows with effective statuses, and runs submitted to a batch
    scheduler whose engine has not started (queued, with job_id); ``sup.queued() -> [dict]``.
``sup.resolve(ref) -> run_id``   a unique prefix to its run id (UnknownRun / AmbiguousRun).
``sup.alerts(rows=None, every_s=0) -> [Notice]``
    runs that newly stalled or crashed since this supervisor last looked (engine.notify.Notice:
    title, message, severity for a UI); the first observer of the workspace also sends each
    (webhook, desktop notification: engine/notify.py). Call it where statuses are shown.
``sup.starting() -> {run_id}``  runs started here or holding a lease (any launcher's): their row may not exist yet.
``sup.children``, ``sup.interrupt(sig)``, ``sup.keep_alive()``, ``sup.close()``.
Call `pump()` and `reap()` periodically (the CLI every 0.2 s, the TUI once a second).

Launchers: `spawner` starts one queue item on the GPUs it was leased (`spawn_engine`: a local
process; cifar_tui.launchers.SubmititSpawner: a job of submitit's local executor). A launcher
with `schedules_itself` (cifar_tui.launchers.SlurmLauncher) takes no leases: the cluster
places the jobs; `submit_queued` hands it the queue.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from engine.config import ConfigError, ExperimentConfig, load_config
from engine.record.leases import LEASE_STALE_S, Busy, Leases
from engine.record.paths import UnknownRun, check_run_id, events_path, new_run_id, resolve_run_id
from engine.notify import Delivery, Notice, dispatch_once, notice_from_row
from engine.record.status import (COMPLETED, CRASHED, LIVE, PRUNED, QUEUED, RESUMABLE, STALLED, STARTING, STOPPED,
                                  STOPPING, UNKNOWN, pid_alive, this_host)
from engine.stop_request import write_request
from engine.watch_config import watch_settings

from . import launch as launching
from .gpus import Slot, default_max_parallel, visible_gpus
from .launch import (Launched, LaunchRequest, discard_unstarted, item_labels, last_error_line, recorded_processes,
                     request_stop)
from .workspace import Workspace

EXIT_BAD_INPUT = 2
LEASE_REFRESH_S = LEASE_STALE_S / 10  # the launcher keeps a starting engine's lease fresh this often
ALERT_EVERY_S = 5.0  # how often a foreground CLI run looks for stalled runs (sup.alerts(every_s=...))
CRASH_ALERT_WINDOW_S = 3600.0  # a crash is news when its last heartbeat is this recent (not old ones found on opening)


class NotLive(ConfigError):
    """stop: the run is not alive."""


class RunIsLive(ConfigError):
    """delete / resume: the run is alive (or starting)."""


@dataclass
class Started:
    item_id: int
    launched: Launched
    gpus: tuple[str, ...]
    resumed: bool

    @property
    def run_id(self) -> str:
        return self.launched.run_id

    @property
    def label(self) -> str:
        return Slot(self.gpus).label


@dataclass
class Refused:
    item_id: int
    config: str
    reason: str


@dataclass
class Submitted:
    item_id: int
    run_id: str
    job_id: str


@dataclass
class Reaped:
    run_id: str
    code: int
    launched: Launched
    refusal: str | None  # the engine refused its input (bad config, damaged checkpoint): why
    item_id: int | None = None  # the queue item it was started from (a refused one is marked refused)


@dataclass
class Child:
    launched: Launched
    item_id: int
    gpus: tuple[str, ...]
    resumed: bool
    spawned_at: float = field(default_factory=time.time)
    stop_requested: bool = False


class Spawner(Protocol):
    def __call__(self, ws: Workspace, item: dict, *, run_id: str, cfg: ExperimentConfig | None,
                 nproc: int | None, torchrun_args: list[str] | None, env: dict[str, str]) -> Launched: ...


def spawn_engine(ws: Workspace, item: dict, *, run_id: str, cfg: ExperimentConfig | None, nproc: int | None,
                 torchrun_args: list[str] | None, env: dict[str, str]) -> Launched:
    """Start the engine process of a queue item (cifar_tui.launch does the spawning)."""
    if item.get("resume_of"):
        return launching.resume(ws, run_id, nproc=nproc, torchrun_args=torchrun_args, env=env,
                                epochs=resume_epochs(item["overrides"]))
    request = LaunchRequest(item["config"], list(item["overrides"]))
    cfg = cfg or request.load(ws)
    return launching.launch(ws, request, cfg=cfg, nproc=nproc or 1, torchrun_args=torchrun_args, env=env,
                            run_id=run_id, **item_labels(item, cfg))


def resume_epochs(overrides: Sequence[str]) -> int | None:
    """The new total of a resume that extends a run (`resume --epochs N` queues `train.epochs=N`)."""
    found = [o.split("=", 1)[1] for o in overrides if o.startswith("train.epochs=")]
    return int(found[-1]) if found else None


class Supervisor:
    def __init__(self, ws: Workspace, *, gpus: Sequence[str] | None = None, max_parallel: int | None = None,
                 shared_queue: bool = True, stall_after_s: float | None = None, spawner: Spawner = spawn_engine,
                 lease_stale_s: float = LEASE_STALE_S):
        if max_parallel is not None and max_parallel < 1:
            raise ConfigError(f"--max-parallel: must be at least 1, got {max_parallel}")
        self.ws = ws
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        self.max_parallel = max_parallel or default_max_parallel(self.gpus)
        self.shared_queue = shared_queue
        self.stall_after_s = stall_after_s  # None: the workspace's setting (watch.yaml, environment); 0: never
        self.spawner = spawner
        self.schedules_itself = bool(getattr(spawner, "schedules_itself", False))  # a cluster places the runs
        self.store = ws.store()
        self.leases = Leases(self.store.conn, stale_s=lease_stale_s)
        self.children: dict[str, Child] = {}
        self.blocked: str | None = None     # why the head of the queue waits (None: it does not)
        self.interrupted: int = 0           # the signal interrupt() passed on (0: none): start nothing more
        self._stopping: set[str] = set()    # runs started elsewhere that we asked to stop
        self._own: set[int] = set()         # items this supervisor queued for itself (shared_queue=False)
        self._configs: dict[int, ExperimentConfig] = {}
        self._torchrun: dict[int, list[str]] = {}
        self._refreshed = time.monotonic()
        self._alerted: set[tuple] = set()      # (run_id, status, episode) this supervisor has reported
        self._deliveries: list[Delivery] = []
        self._alerts_at = float("-inf")

    def close(self) -> None:
        for delivery in self._deliveries:  # notifications on their way: DELIVERY_BUDGET_S at most
            delivery.wait()
        self.store.close()

    # ------------------------------------------------------------------ queue
    def check_fits(self, nproc: int) -> None:
        """ConfigError when a run of `nproc` processes could never get its GPUs."""
        if self.gpus and nproc > len(self.gpus):
            raise ConfigError(f"--nproc {nproc}: a run needs {nproc} GPUs but {len(self.gpus)} are visible "
                              f"({','.join(self.gpus)})")

    def _enqueue(self, config: str, overrides: list[str], nproc: int, resume_of: str | None = None,
                 **labels: str | None) -> int:
        if self.shared_queue:
            return self.store.enqueue(config, overrides, nproc, resume_of=resume_of, **labels)
        item_id = self.store.enqueue(config, overrides, nproc, owner_pid=os.getpid(), resume_of=resume_of, **labels)
        self._own.add(item_id)
        return item_id

    def enqueue(self, config: str, overrides: Sequence[str] = (), nproc: int = 1, *,
                cfg: ExperimentConfig | None = None, torchrun_args: list[str] | None = None,
                study: str | None = None, group: str | None = None) -> int:
        if not self.schedules_itself:
            self.check_fits(nproc)
        item_id = self._enqueue(config, list(overrides), nproc, study=study, group=group)
        if cfg is not None:
            self._configs[item_id] = cfg
        if torchrun_args:
            self._torchrun[item_id] = list(torchrun_args)
        return item_id

    def resume(self, run_id: str, *, torchrun_args: list[str] | None = None, epochs: int | None = None) -> int:
        """Queue the continuation of a run from its last checkpoint, with as many processes as it had;
        `epochs`: train to that many epochs in all (also extends a completed run that kept last.pt)."""
        run_id = check_run_id(run_id)
        run_dir = self.ws.home / run_id
        self._check_resumable(run_id, extending=epochs is not None)
        if not (run_dir / "config.yaml").is_file():
            raise UnknownRun(f"run {run_id}: no config.yaml in {run_dir}: nothing to resume")
        _, nproc = recorded_processes(run_dir)
        self.check_fits(nproc)
        item_id = self._enqueue(run_id, [f"train.epochs={epochs}"] if epochs else [], nproc, resume_of=run_id)
        if torchrun_args:
            self._torchrun[item_id] = list(torchrun_args)
        return item_id

    def _check_resumable(self, run_id: str, extending: bool = False) -> None:
        status = self.status(run_id)
        if status in LIVE:
            row = self.store.run(run_id) or {}
            raise RunIsLive(f"run {run_id} is still {status} (pid {row.get('pid')}); stop it first: cifar-tui stop {run_id}")
        if status == QUEUED:
            raise RunIsLive(f"run {run_id} is already queued to resume")
        if status == COMPLETED and not extending:
            row = self.store.run(run_id) or {}
            raise ConfigError(f"run {run_id} already completed all {row.get('epochs_total')} epochs; "
                              f"to train it longer: cifar-tui resume {run_id} --epochs N")
        if status not in RESUMABLE + (UNKNOWN, COMPLETED):
            raise ConfigError(f"run {run_id} is {status}: only {', '.join(RESUMABLE)} runs can be resumed")

    def cancel(self, item_id: int) -> bool:
        self._configs.pop(item_id, None)
        return self.store.cancel_queued(item_id)

    def refused(self) -> list[dict]:
        return self.store.refused()

    def dismiss(self, item_id: int) -> bool:
        return self.store.dismiss_refused(item_id)

    def cancel_own(self) -> int:
        """Drop every item this supervisor queued that has not started (Ctrl-C, bad input)."""
        return sum(self.cancel(q["id"]) for q in self.own_queued())

    def own_queued(self) -> list[dict]:
        """The items this supervisor queued for itself that have not started."""
        return [q for q in self.store.queued(include_owned=True) if q["id"] in self._own]

    def queued(self) -> list[dict]:
        """Items waiting to start: the shared queue and every live launcher's own items."""
        return [q for q in self.store.queued(include_owned=True) if self._owner_alive(q)]

    def _owner_alive(self, item: dict) -> bool:
        if item["owner_pid"] is None:
            return True
        return item["owner_host"] != this_host() or pid_alive(item["owner_pid"])

    def _serving(self) -> list[dict]:
        items = []
        for q in self.store.queued(include_owned=True):
            if q["id"] in self._own:
                items.append(q)
            elif q["owner_pid"] is None:
                if self.shared_queue:
                    items.append(q)
            elif not self._owner_alive(q):
                self.store.cancel_queued(q["id"])  # its launcher died: nobody follows it
        return items

    # ------------------------------------------------------------------ starting
    def pump(self) -> list[Started | Refused]:
        """Start queued items while slots allow; the queue keeps its order. Nothing after an
        interrupt: a Ctrl-C handled inside a pump (after the caller's check) freed the leases of the
        runs it stopped, and the next item took one."""
        out: list[Started | Refused] = []
        self.blocked = None
        if self.interrupted:
            return out
        for item in self._serving():
            if self.interrupted:
                break
            try:
                run_id, cfg = self._plan(item)
                grant = self.leases.acquire(run_id, gpus=self.gpus, n=int(item["nproc"] or 1) if self.gpus else 0,
                                            max_parallel=self.max_parallel, claim=item["id"])
            except ConfigError as exc:  # its config no longer validates, or the run came alive elsewhere
                out.append(self._refuse(item, str(exc)))
                continue
            if grant is None:
                continue  # another launcher took it
            if isinstance(grant, Busy):
                self.blocked = grant.reason
                break
            env = Slot(grant.gpus).env()
            try:
                launched = self.spawner(self.ws, item, run_id=run_id, cfg=cfg, nproc=None if item["resume_of"] else
                                        int(item["nproc"] or 1), torchrun_args=self._torchrun.pop(item["id"], None), env=env)
            except (ConfigError, OSError) as exc:
                self.leases.release(run_id, reason="launch refused")
                out.append(self._refuse(item, str(exc)))
                continue
            self.leases.transfer(run_id, launched.process.pid)
            self.store.set_queue_run_id(item["id"], run_id)
            self.children[run_id] = Child(launched, item["id"], grant.gpus, bool(item["resume_of"]))
            out.append(Started(item["id"], launched, grant.gpus, bool(item["resume_of"])))
            if self.interrupted:  # the interrupt came while this one started: it stops as the others do
                self.children[run_id].stop_requested = True
                launched.process.send_signal(self.interrupted)
        return out

    def submit_queued(self) -> list[Submitted | Refused]:
        """Hand every item this supervisor serves to a launcher that schedules itself (SLURM), at once:
        no GPU leases (the cluster places the jobs), nothing followed here (`runs` shows them)."""
        planned, out = [], []
        for item in self._serving():
            try:
                run_id, cfg = self._plan(item)
            except ConfigError as exc:
                out.append(self._refuse(item, str(exc)))
                continue
            if not self.store.claim_queued(item["id"], run_id):
                continue  # another launcher took it
            planned.append((item, run_id, cfg, self._torchrun.pop(item["id"], None)))
        if not planned:
            return out
        from .launchers import SubmissionRefused

        try:
            job_ids = self.spawner.submit(self.ws, planned)
        except SubmissionRefused:  # the scheduler refused them all (its options): as if never queued
            self.store.forget_queued([item["id"] for item, *_ in planned])
            for item, *_ in planned:
                self._own.discard(item["id"])
            raise
        except (ConfigError, OSError) as exc:
            return out + [self._refuse(item, str(exc)) for item, *_ in planned]
        for (item, run_id, _, _), job_id in zip(planned, job_ids):
            self.store.set_queue_run_id(item["id"], run_id)
            out.append(Submitted(item["id"], run_id, job_id))
        return out

    def _plan(self, item: dict) -> tuple[str, ExperimentConfig | None]:
        self.check_fits(int(item["nproc"] or 1))
        if item["resume_of"]:
            run_id = check_run_id(item["resume_of"])
            self._check_resumable_now(run_id, extending=resume_epochs(item["overrides"]) is not None)
            return run_id, None
        cfg = self._configs.pop(item["id"], None) or load_config(item["config"], item["overrides"], self.ws.configs)
        return new_run_id(cfg.name), cfg

    def _check_resumable_now(self, run_id: str, extending: bool = False) -> None:
        status = self.status(run_id, ignore_queue=True)
        if status in LIVE or (status == COMPLETED and not extending):
            raise RunIsLive(f"run {run_id} is {status}: not resumed")

    def _refuse(self, item: dict, reason: str) -> Refused:
        self._configs.pop(item["id"], None)
        self._torchrun.pop(item["id"], None)
        self.store.fail_queued(item["id"], reason)
        return Refused(item["id"], item["config"], reason)

    # ------------------------------------------------------------------ reaping
    def reap(self) -> list[Reaped]:
        """Processes this supervisor started that have exited; their leases are released."""
        done = []
        for run_id, child in list(self.children.items()):
            code = child.launched.process.poll()
            if code is None:
                continue
            del self.children[run_id]
            self.leases.release(run_id, pid=child.launched.process.pid, reason=f"exit {code}")
            run_dir = child.launched.run_dir
            refusal = None
            if code == EXIT_BAD_INPUT or not events_path(run_dir).exists():
                refusal = last_error_line(run_dir) or f"the engine exited with code {code} before starting"
            if code == EXIT_BAD_INPUT:  # refused its input, wrote nothing: only a dir holding its stdout.log goes
                discard_unstarted(run_dir)
            if refusal:  # the item says why, until dismissed (a TUI lists it)
                self.store.fail_queued(child.item_id, refusal)
            done.append(Reaped(run_id, code, child.launched, refusal, child.item_id))
        self.keep_alive()
        return done

    def keep_alive(self) -> None:
        """Refresh the leases of our engines now and then (they beat themselves once running)."""
        if time.monotonic() - self._refreshed < LEASE_REFRESH_S:
            return
        self._refreshed = time.monotonic()
        self.leases.refresh([rid for rid, c in self.children.items() if c.launched.process.poll() is None])

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        """Pass a signal to every live engine this supervisor started (Ctrl-C in the CLI); no more
        start after it."""
        self.interrupted = sig
        for child in self.children.values():
            if child.launched.process.poll() is None:
                child.stop_requested = True
                child.launched.process.send_signal(sig)

    # ------------------------------------------------------------------ stop / delete
    def stop(self, run_id: str, *, status: str = STOPPED, reason: str | None = None) -> int | None:
        """Ask a live run to stop gracefully (it checkpoints, writes `end`). Returns the pid signalled,
        None for a run in a batch job or on another host (asked through its run dir; its job cancelled).
        status=pruned: the run ends `pruned` (engine.stop_request)."""
        run_dir = self.ws.home / check_run_id(run_id)
        if status != STOPPED:
            write_request(run_dir, status, reason)  # read by the engine when it ends
        child = self.children.get(run_id)
        if child is not None and child.launched.process.poll() is None:
            child.launched.process.send_signal(signal.SIGTERM)  # a DDP run: its ranks (TorchrunProcess)
            child.stop_requested = True
            return getattr(child.launched.process, "pid", None)
        row = self.store.run(run_id, stall_after_s=self.stall_after_s)
        job = self.store.job(run_id)
        if row is None and job is not None and job["state"] == "submitted":
            self._cancel_job(job)  # submitted, not started: nothing to checkpoint
            discard_unstarted(run_dir)
            return None
        if row is None:
            raise UnknownRun(f"run {run_id!r}: not found in {self.ws.home} (see `cifar-tui runs`)")
        if row["status"] not in LIVE:
            raise NotLive(f"run {run_id} is not running (status {row['status']})")
        if job is not None or (row.get("host") and row["host"] != this_host()):
            if status == STOPPED:
                write_request(run_dir, STOPPED, reason)  # the engine polls its run dir: any host
            if job is not None:
                self._cancel_job(job)  # scancel: SIGTERM to the job's processes, the same graceful stop
            self._stopping.add(run_id)
            return None
        if not request_stop(row["pid"]):
            raise NotLive(f"run {run_id}: process {row['pid']} is gone")
        self._stopping.add(run_id)
        return int(row["pid"])

    def prune(self, run_id: str, reason: str | None = None) -> int | None:
        """Stop a run as a search's verdict: it ends with status `pruned`."""
        return self.stop(run_id, status=PRUNED, reason=reason)

    def _cancel_job(self, job: dict) -> None:
        from .launchers import cancel_job

        cancel_job(job)
        self.store.set_job_state(job["run_id"], "cancelled")

    def delete(self, run_id: str) -> None:
        """Remove a run's directory and store rows. RunIsLive for a run that is alive or starting."""
        run_id = check_run_id(run_id)
        status = self.status(run_id)
        if status in LIVE or self.leases.held_by(run_id):
            raise RunIsLive(f"run {run_id} is {status if status in LIVE else STARTING}: stop it first")
        run_dir = self.ws.home / run_id
        if run_dir.is_symlink():
            run_dir.unlink()  # never follow a link out of the workspace
        elif run_dir.is_dir():
            shutil.rmtree(run_dir)
        for q in self.store.queued(include_owned=True):
            if q["resume_of"] == run_id:
                self.store.cancel_queued(q["id"])
        self.store.delete_run(run_id)

    # ------------------------------------------------------------------ status
    def status(self, run_id: str, *, ignore_queue: bool = False) -> str:
        child = self.children.get(run_id)
        row = self.store.run(run_id, stall_after_s=self.stall_after_s)
        if child is not None and child.launched.process.poll() is None:
            if child.stop_requested:
                return STOPPING
            # a resumed run's row says its old status until the engine writes `running` again
            fresh = row is not None and row["status"] in LIVE and (row["heartbeat_at"] or 0) >= child.spawned_at - 1
            return row["status"] if fresh else STARTING
        if row is not None:
            if row["status"] in LIVE and run_id in self._stopping:
                return STOPPING
            self._stopping.discard(run_id)
            status = row["status"]
        else:
            status = UNKNOWN
        if not ignore_queue and status not in LIVE and (any(q["resume_of"] == run_id for q in self.queued())
                                                         or self.store.pending_job(run_id) is not None):
            return QUEUED  # waiting here, or in a batch scheduler's queue (a resume submitted to SLURM)
        return status

    def runs(self) -> list[dict]:
        """Store rows (newest first) with effective statuses; our starting runs first."""
        rows = self.store.runs(stall_after_s=self.stall_after_s)
        known = {r["run_id"] for r in rows}
        for r in rows:
            if r["run_id"] in self.children or r["run_id"] in self._stopping:
                r["status"] = self.status(r["run_id"])
        starting = [{"run_id": rid, "status": self.status(rid), "config_name": c.launched.run_id.rsplit("-", 2)[0]}
                    for rid, c in self.children.items() if rid not in known]
        # submitted to a batch scheduler, not started yet: queued there (a resume: its row says so)
        jobs = [j for j in self.store.pending_jobs() if j["run_id"] not in self.children
                and (j["launcher"] == "slurm" or pid_alive(int(j["job_id"])))]  # a local job: its controller
        resuming = {j["run_id"]: j for j in jobs if j["resumes"]}
        for r in rows:
            if r["run_id"] in resuming and r["status"] not in LIVE:
                r.update(status=QUEUED, job_id=resuming[r["run_id"]]["job_id"], launcher=resuming[r["run_id"]]["launcher"])
        pending = [{"run_id": j["run_id"], "status": QUEUED, "config_name": j["run_id"].rsplit("-", 2)[0],
                    "job_id": j["job_id"], "launcher": j["launcher"]} for j in jobs if not j["resumes"]]
        return starting + pending + rows

    def resolve(self, ref: str) -> str:
        return resolve_run_id(self.ws.home, ref, sorted(self.store.run_ids()))

    def starting(self) -> set[str]:
        """Runs that started and may have no store row yet: ours, and every run that holds a lease
        (any launcher's, on any host sharing the store): a study's drivers count them in flight."""
        return set(self.children) | {lease["run_id"] for lease in self.leases.held()}

    # ------------------------------------------------------------------ alerts
    def alerts(self, rows: list[dict] | None = None, *, every_s: float = 0.0) -> list[Notice]:
        """Runs that stalled or crashed and that this supervisor has not reported yet (`rows`: what
        `runs()` returned, to spare a query). Each is sent once per workspace (engine.notify.dispatch_once).
        every_s: look at most that often (a loop that calls it on every tick); [] in between."""
        if every_s and time.monotonic() - self._alerts_at < every_s:
            return []
        self._alerts_at = time.monotonic()
        rows = self.runs() if rows is None else rows
        now = time.time()
        settings = watch_settings(self.ws.home)
        out = []
        for r in rows:
            status = r.get("status")
            beat = r.get("heartbeat_at") or 0
            if status == STALLED:
                episode, gap = r.get("progress_at") or r.get("started_at"), beat - (r.get("progress_at") or beat)
                detail = f"alive but no step for {gap / 60:.1f} min; stop it: cifar-tui stop {r['run_id']}"
            elif status == CRASHED and beat > now - CRASH_ALERT_WINDOW_S:
                episode = r.get("started_at")  # a resumed run that crashes again is news again
                detail = f"the process is gone without an end event; resume it: cifar-tui resume {r['run_id']}"
            else:
                continue
            key = (r["run_id"], status, episode)
            if key in self._alerted:
                continue
            self._alerted.add(key)
            notice = notice_from_row(r, status, detail)
            delivery = dispatch_once(self.store.conn, notice, settings, episode, log=self.ws.warnings.append)
            if delivery is not None:
                self._deliveries = [d for d in self._deliveries if d.is_alive()] + [delivery]
            out.append(notice)
        return out
