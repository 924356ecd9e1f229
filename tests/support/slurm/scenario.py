"""What the cluster tests (tests/integration/test_slurm.py) use to drive and watch jobs: the CLI calls
that submit, resume and list; a run's events; `Once`, an action taken in a thread once its moment
comes; `Followed`, the statuses `cifar-tui runs` showed, in order."""
from __future__ import annotations

import json
import re
import subprocess
import threading
from collections import defaultdict
from pathlib import Path

from engine.record.events import read_events

from tests.conftest import cli, set_args
from tests.support.reliability import wait_until

CONFIG = "resnet18_baseline"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # several engines on two cores; also deterministic on the CPU
SUBMITTED = re.compile(r"submitted (\S+) as SLURM job (\S+)")
WORKERS = re.compile(r"submitted (\d+) workers? as SLURM job \S+ \(([^)]*)\)")
TIMEOUT = 240
LOOK_EVERY_S = 1.0


def slow(seconds: int) -> dict[str, str]:
    """Each epoch's last.pt takes this many seconds more: a run lives long enough for its scenario."""
    return {"CIFAR_TUI_TEST_SLOW_CHECKPOINT": f"last.pt:{seconds}"}


def env_for(ws: dict, extra: dict | None = None) -> dict:
    return {**ws, "env": {**ws["env"], **ONE_THREAD, **(extra or {})}}


def submit(ws: dict, overrides: list[str], *args: str, env: dict | None = None, time_min: int = 5) -> list[tuple]:
    """`cifar-tui run CONFIG --launcher slurm ...`: [(run id, job id)] in submission order."""
    res = cli(env_for(ws, env), "run", CONFIG, *set_args(overrides), "--launcher", "slurm", "--slurm-time", str(time_min),
              *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return SUBMITTED.findall(res.stdout)


def resume(ws: dict, run_id: str, env: dict | None = None) -> str:
    res = cli(env_for(ws, env), "resume", run_id, "--launcher", "slurm", "--slurm-time", "5")
    assert res.returncode == 0, res.stdout + res.stderr
    return re.search(r"as SLURM job (\S+);", res.stdout).group(1)


def in_process(ws: dict, *args: str):
    """A CLI command run in this process (no interpreter to start): the main thread only, with no other
    in-process command at the same time (Click's runner swaps sys.stdout while it runs)."""
    from typer.testing import CliRunner

    from cifar_tui.cli import app

    res = CliRunner().invoke(app, ["--home", str(ws["home"]), *args],
                             env={k: v for k, v in ws["env"].items() if k.startswith("SLURM")})  # squeue's cluster
    assert res.exit_code == 0, res.output
    return res


def runs(ws: dict) -> dict[str, dict]:
    """`cifar-tui runs --json`, in this process (a process per look, about once a second, would cost a
    core's share of the machine the jobs need)."""
    return {r["run_id"]: r for r in map(json.loads, in_process(ws, "runs", "--json").stdout.splitlines())
            if r.get("run_id")}


def events(ws: dict, run_id: str) -> list[dict]:
    return read_events(Path(ws["home"]) / run_id / "events.jsonl")


def starts(ws: dict, run_id: str) -> list[dict]:
    return [e for e in events(ws, run_id) if e["type"] == "start"]


def job_of(start: dict) -> str:
    return start["provenance"]["job"]["job_id"]


def checkpointed(ws: dict, run_id: str, epoch: int) -> bool:
    return any(e["type"] == "checkpoint" and e["epoch"] >= epoch for e in events(ws, run_id))


def worker_log(ws: dict, job_id: str) -> str:
    log = Path(ws["home"]) / ".jobs" / job_id / f"{job_id}_0_log.out"
    return log.read_text(errors="replace") if log.is_file() else ""


def job_logs(ws: dict) -> str:
    """The tail of every job's submitit log, for a failure message."""
    out = []
    for log in sorted((Path(ws["home"]) / ".jobs").glob("*/*_log.*")):
        lines = log.read_text(errors="replace").splitlines()[-8:]
        out.append(f"--- {log.name}\n" + "\n".join(lines))
    return "\n".join(out)


def studies(ws: dict, *, here: bool = False) -> dict[str, dict]:
    """`cifar-tui studies --json` (here: in this process, see `in_process`)."""
    out = in_process(ws, "studies", "--json").stdout if here else cli(ws, "studies", "--json").stdout
    return {r["name"]: r for r in map(json.loads, out.splitlines())}


class Once(threading.Thread):
    """Does `action` once `ready()` is true (polled every 0.2 s, beside the test's own loop); `error`
    holds what it raised. `ready` may return what `action` takes."""

    def __init__(self, ready, action, timeout: float = TIMEOUT):
        super().__init__(daemon=True)
        self.ready, self.action, self.timeout = ready, action, timeout
        self.result, self.error = None, None
        self.start()

    def run(self) -> None:
        try:
            got = wait_until(self.ready, self.timeout, "its moment", 0.2)
            self.result = self.action(got)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def done(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.result is not None


class Followed:
    """Each run's statuses in the order `cifar-tui runs` showed them, and the job ids it showed."""

    def __init__(self, ws: dict):
        self.ws = ws
        self.statuses: dict[str, list[str]] = defaultdict(list)
        self.jobs: dict[str, set[str]] = defaultdict(set)

    def look(self) -> dict[str, dict]:
        rows = runs(self.ws)
        for rid, r in rows.items():
            if not self.statuses[rid] or self.statuses[rid][-1] != r["status"]:
                self.statuses[rid].append(r["status"])
            if r["status"] == "queued" and r.get("job_id"):
                self.jobs[rid].add(r["job_id"])
        return rows

    def seen(self, run_id: str, status: str) -> bool:
        return status in self.statuses.get(run_id, ())


def slurm_job(ws: dict, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], env=ws["env"], capture_output=True,
                         text=True, timeout=30).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)
