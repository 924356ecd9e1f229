"""A real one-node SLURM cluster for the tests: start.sh and stop.sh beside this file.

`slurm_cluster` (session fixture) starts one in a directory of this test session, on ports of its
own (two sessions on one machine never share a cluster), and stops it at the end. Where it cannot
start (not root, no slurm-wlm/munge), the tests that use it are skipped; under CI=true they fail.
`slurm` (function fixture) gives a test the environment its CLI calls need (SLURM_CONF) and, when
the test ends, cancels every job still there and waits until their processes are gone: slurmd's job
processes are not the test's children, so the suite's process hygiene would not see them all.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START, STOP = HERE / "start.sh", HERE / "stop.sh"
CPUS = 32         # the test node offers far more CPUs than this machine has: every job starts at once
MAXTIME_MIN = 30  # the partition's limit: the tests ask for less, and once for more
PARTITION = "debug"
KILLWAIT_S = 10   # a cancelled job's processes get this long after SIGTERM: a tiny run's checkpoint takes less


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]   # SLURM_CONF (add it to a CLI call's environment)

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def jobs(self) -> dict[str, str]:
        """{job id: state} of every job squeue lists (array tasks one by one)."""
        out = self.run("squeue", "--array", "--noheader", "--format=%i %T").stdout
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    def job(self, job_id: str) -> dict[str, str]:
        """scontrol's fields of one job (JobState, Reason, Dependency, ...), {} when it is forgotten."""
        out = self.run("scontrol", "--oneliner", "show", "job", job_id, check=False).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def cancel_all(self, timeout: float = 30) -> list[str]:
        """scancel every job (SIGKILL, at once) and wait until squeue lists none; returns what was there."""
        left = list(self.jobs())
        if left:
            # the steps' processes SIGKILLed first: cancelling a job gives them KillWait seconds
            steps = self.run("squeue", "--steps", "--noheader", "--format=%i", check=False).stdout.split()
            if steps:
                self.run("scancel", "--signal=KILL", *steps, check=False)
            self.run("scancel", f"--partition={PARTITION}", check=False)
        deadline = time.monotonic() + timeout
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


def _free_port_pair() -> int:
    """A port p with p and p + 1 free (slurmctld, slurmd)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free ports next to each other")


def _cannot_start(why: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the SLURM cluster cannot start: {why}", pytrace=False)
    pytest.skip(f"no SLURM cluster: {why}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Cluster:
    if os.geteuid() != 0:
        _cannot_start("needs root (sudo tests/support/slurm/start.sh starts one by hand)")
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(tool) is None]
    if missing:
        _cannot_start(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    # not under pytest's temp folder: it is root's alone, and munged runs as the munge user
    directory = Path(tempfile.mkdtemp(prefix="cifar-tui-slurm-"))
    env = {**os.environ, "CIFAR_TUI_SLURM_PORT": str(_free_port_pair()), "CIFAR_TUI_SLURM_CPUS": str(CPUS),
           "CIFAR_TUI_SLURM_MAXTIME": str(MAXTIME_MIN), "CIFAR_TUI_SLURM_KILLWAIT": str(KILLWAIT_S)}
    started = subprocess.run([str(START), str(directory)], env=env, capture_output=True, text=True, timeout=120)
    cluster = Cluster(directory.resolve(), {"SLURM_CONF": str(directory.resolve() / "slurm.conf")})
    if started.returncode != 0:
        subprocess.run([str(STOP), str(directory)], capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
        _cannot_start((started.stderr.strip().splitlines() or [f"start.sh exited {started.returncode}"])[-1])
    try:
        yield cluster
    finally:
        cluster.cancel_all()
        subprocess.run([str(STOP), str(directory)], capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster: Cluster, workspace: dict) -> Cluster:
    """The cluster for one test: its CLI environment in workspace["env"]; its jobs cancelled at the end."""
    workspace["env"].update(slurm_cluster.env)
    yield slurm_cluster
    left = slurm_cluster.cancel_all()
    assert not slurm_cluster.jobs(), f"jobs still there after scancel: {slurm_cluster.jobs()}"
    if left:
        print(f"cancelled the SLURM jobs the test left: {', '.join(left)}")
