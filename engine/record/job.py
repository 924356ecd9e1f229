"""What a batch job runs: the engine command as a child process (submitit pickles `run_engine`).

Used by cifar-tui's submitit launchers (a SLURM job, or submitit's local executor, which runs
the same code without a cluster). The engine runs as in any other launch: its own process,
stdout and stderr in runs/<id>/stdout.log, events and checkpoints in its run dir, the store on
the shared file system. This function only passes signals on and returns the engine's exit code:

- SIGTERM / SIGINT (scancel, `cifar-tui stop`, the local executor's controller) and SIGUSR2
  (SLURM's warning before the time limit, sent by submitit's `--signal`) become one graceful
  stop: the engine checkpoints and writes its `end` event, and the run can be resumed;
- a DDP run runs under torchrun: its agent is the child, the signal goes to its workers (ranks),
  which stop at the same step (signalled, the agent itself would tear the group down).

SIGUSR2 comes SLURM's warning time before the job's time limit: the run's stop request says so
(its `end` event gives the reason) and `cifar-tui resume RUN --launcher slurm` continues it.

A multi-node DDP job runs one task per node; each task starts torchrun with the c10d rendezvous
on the job's first node (`{master}` in the command is replaced by its host name here, `{port}` by
a port taken from the job id, so that two jobs that share a first node do not collide).
No torch, no UI imports.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .status import STOPPED
from ..stop_request import read_request, write_request

MASTER_PLACEHOLDER = "{master}"
PORT_PLACEHOLDER = "{port}"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
TASK_STARTED_VAR = "CIFAR_TUI_TASK_STARTED"  # set by the job script as its task starts (unix seconds)
TIME_LIMIT_REASON = "the SLURM job's time limit is near (warning signal): resume it as a new job"


def child_pids(pid: int) -> list[int]:
    """The child processes of pid (Linux /proc); [] where that cannot be read."""
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in path.read_text().split()]
        except (OSError, ValueError):
            pass
    return found


def rendezvous_port(job_id: str) -> int:
    """A port for the job's rendezvous, 20000-29999, from its SLURM job id."""
    return 20000 + int(job_id) % 10000 if job_id.isdigit() else 29500


def _resolve_master(cmd: list[str]) -> list[str]:
    if not any(MASTER_PLACEHOLDER in part or PORT_PLACEHOLDER in part for part in cmd):
        return cmd
    import submitit  # only multi-node jobs need the job's host list

    master = submitit.JobEnvironment().hostnames[0]
    port = str(rendezvous_port(os.environ.get("SLURM_JOB_ID", "")))
    return [part.replace(MASTER_PLACEHOLDER, master).replace(PORT_PLACEHOLDER, port) for part in cmd]


def run_engine(cmd: list[str], env: dict[str, str], cwd: str, log_file: str, distributed: bool = False) -> int:
    """Run the engine command to its end; returns its exit code (0 completed, 1 failed, 2 bad
    input, 130 stopped)."""
    cmd = _resolve_master(list(cmd))
    run_dir = Path(log_file).parent
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd=cwd)

    def stop(signum, frame):  # noqa: ARG001
        if proc.poll() is not None:
            return
        if signum == signal.SIGUSR2 and read_request(run_dir) is None:
            write_request(run_dir, STOPPED, TIME_LIMIT_REASON)
        targets = child_pids(proc.pid) if distributed else []
        for pid in targets or [proc.pid]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    while True:
        try:
            return proc.wait()
        except InterruptedError:  # pragma: no cover - wait() retries EINTR itself since Python 3.5
            continue
