"""SLURM workers of a study: N tasks of one job array, each taking the study's next unit of work from
the shared workspace, one at a time, until there is none: a trial of `tune` (cifar_tui/tune_workers.py)
or a run of a `--seeds auto` study (cifar_tui/auto_workers.py). What every kind shares is here:

- `StudyLock`: the lock a worker holds while it decides and queues its next unit, so that two workers
  never take the same one. A file created with O_EXCL in runs/.locks/ (NFS honours it where it does
  not honour SQLite's locking), broken 30 s after a holder died. The CLI and TUI drivers of an auto
  study take it too, so a study may be driven from several places at once.
- `worker_supervisor`: a local supervisor without GPU leases of its own (SLURM placed the job), its
  queue its own (dropped if the worker dies); the runs it starts are children of the task.
- `worker_name`: the array task, host and pid, as the work it takes records it.
- `STOP_SIGNALS`: scancel's SIGTERM and SLURM's warning before the time limit (SIGUSR2) stop a worker
  as Ctrl-C does: its run checkpoints and stops, and stays for the next worker (or a rerun) to resume.
- `submit_workers`: as many workers as are missing for N of the study to be queued or running, as one
  job array; the study records their job ids (`workers`), so that the same command run again tops
  them up instead of doubling them.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .workspace import Workspace

LOCKS_DIR = ".locks"          # in the runs home: not a run id, never listed as a run
LOCK_GRACE_S = 30             # a lock file this old belongs to a holder that died: broken
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
ALIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED")


class StudyLock:
    """`with StudyLock(ws, study):` waits for the study's lock; `try_acquire()` takes it only if free
    (a UI that must not wait), then `release()`. A file created with O_EXCL, as Optuna's
    JournalFileOpenLock does for its journal (without importing Optuna: the TUI takes it too); one
    older than LOCK_GRACE_S was left by a holder that died (it is held for milliseconds): broken."""

    def __init__(self, ws: Workspace, study: str):
        folder = Path(ws.home).resolve() / LOCKS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / f"{study}.lock"

    def __enter__(self) -> "StudyLock":
        delay = 0.001
        while not self.try_acquire():
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def try_acquire(self) -> bool:
        try:
            os.close(os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            try:
                if time.time() - self.file.stat().st_mtime > LOCK_GRACE_S:
                    self.file.unlink(missing_ok=True)  # its holder died holding it: free for the next try
            except OSError:
                pass
            return False

    def release(self) -> None:
        self.file.unlink(missing_ok=True)


def worker_name() -> str:
    """The worker as the work it takes records it: its SLURM task and process."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return f"{job or 'local'}@{socket.gethostname()}:{os.getpid()}"


def worker_supervisor(ws: Workspace):
    """The supervisor of a worker: its runs are processes of the task, on the job's resources."""
    from .supervisor import Supervisor

    return Supervisor(ws, gpus=[], max_parallel=sys.maxsize, shared_queue=False)


def on_stop_signals(handler: Callable) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


@dataclass
class Submission:
    study: str
    continued: bool
    finished: int            # units of work finished before this submission (trials, runs)
    job_ids: list[str]       # the workers submitted now ([] when nothing is left to do)
    alive: list[str]         # workers of earlier submissions still queued or running
    nothing_left: bool = False  # the study is done: no worker submitted


def alive_workers(recorded_spec: dict) -> tuple[list[str], list[str]]:
    """(every worker the study recorded, those SLURM still has queued or running)."""
    from .launchers import slurm_states

    earlier = list(recorded_spec.get("workers") or [])
    states = (slurm_states(earlier) if earlier else {}) or {}
    return earlier, [j for j in earlier if states.get(j, "").split(" ")[0] in ALIVE_STATES]


def submit_workers(ws: Workspace, launcher, work: Callable, args: Sequence, missing: int, *, first_index: int,
                   on_cpu: bool) -> list[str]:
    """Submit `missing` workers as one job array, each calling work(ws, *args, index) in its task;
    their job ids. SubmissionRefused (one line naming the option) when sbatch refuses: nothing queued."""
    from .launchers import _absolute, jobs_folder

    if missing <= 0:
        return []
    calls = [(work, _absolute(ws), *args, first_index + i) for i in range(missing)]
    jobs = launcher.submit_calls(ws, calls, on_cpu=on_cpu, folder=jobs_folder(ws))
    return [str(j.job_id) for j in jobs]


__all__ = ["LOCKS_DIR", "STOP_SIGNALS", "StudyLock", "Submission", "alive_workers", "on_stop_signals", "submit_workers",
           "worker_name", "worker_supervisor"]
