"""`cifar-tui bench --section slurm`: `--launcher slurm` on the SLURM cluster this shell reaches
(SLURM_CONF; a one-node one: `sudo tests/support/slurm/start.sh`). Not in the default sections: it
submits jobs. In a scratch workspace:

- ``slurm_submit_100_s``: wall time of ``cifar-tui run resnet18_baseline --seeds 100 --launcher slurm``
  (a fresh process: the plan, the store, one sbatch of a 100-task array), submitted held
  (SBATCH_HOLD=1) so that none of them runs;
- ``slurm_runs_100_s``: ``cifar-tui runs`` with those 100 runs queued in SLURM (one squeue call;
  output to /dev/null), median of the repeats, beside ``slurm_runs_0_s`` in an empty workspace (what
  the 100 runs add); then the array is cancelled;
- ``slurm_task_to_start_s``: a tiny real run (test_resnet, 64 synthetic images, the CPU), from its
  job's task start (the job script's clock, ``start.provenance.job.task_started_at``) to its ``start``
  event: the Python start-up, submitit, the engine's imports, data and model; one after another,
  the median; ``slurm_queue_s``: from submission to that task start (the scheduler's part).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from engine.record.paths import events_path

from .common import BenchContext, Section, cli_command, median, rounded, time_command

TIME_MIN = "5"
TINY = ["--set", "model.backbone=test_resnet", "--set", "data.train_limit=64", "--set", "data.test_limit=64",
        "--set", "train.batch_size=32", "--set", "train.epochs=1", "--data", "synthetic", "--device", "cpu"]
KEYS = ("slurm_submit_100_s", "slurm_runs_100_s", "slurm_runs_0_s", "slurm_task_to_start_s", "slurm_queue_s")


def _cluster_answers(env: dict) -> str | None:
    """Why there is no cluster to measure on, or None."""
    if shutil.which("sbatch") is None:
        return "sbatch not found"
    probe = subprocess.run(["sinfo", "--noheader", "--format=%P %a"], env=env, capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0 or not probe.stdout.strip():
        return (probe.stderr.strip().splitlines() or ["sinfo: no partition"])[-1]
    return None


def bench_slurm(ctx: BenchContext) -> None:
    out, prog = ctx.out, ctx.prog
    for key in KEYS:
        out[key] = None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    why = _cluster_answers(env)
    if why is not None:
        out["slurm_skipped"] = f"no SLURM cluster reachable ({why}); one on this machine: sudo tests/support/slurm/start.sh"
        return
    cwd = Path(tempfile.mkdtemp(prefix="slurm-", dir=ctx.workdir))
    env.update(CIFAR_TUI_HOME=str(cwd / "runs"), CIFAR_TUI_DATA=str(cwd / "data"))
    cli = cli_command()
    repeats = ctx.plan.startup_repeats
    held = {**env, "SBATCH_HOLD": "1"}  # sbatch --hold: queued, never started
    sweep = [*cli, "run", "resnet18_baseline", "--seeds", "100", "--launcher", "slurm", "--slurm-time", TIME_MIN,
             *TINY, "--study", "bench"]
    arrays: set[str] = set()
    try:
        with prog.step("slurm: submit a 100-run sweep (one array, held)") as note:
            t0 = time.perf_counter()
            res = subprocess.run(sweep, env=held, cwd=cwd, capture_output=True, text=True, timeout=300)
            elapsed = time.perf_counter() - t0
            arrays |= {j.split("_")[0] for j in re.findall(r"as SLURM job (\S+)", res.stdout)}
            if res.returncode != 0:
                raise RuntimeError(f"cifar-tui run --launcher slurm exited {res.returncode}: {res.stderr[-300:]}")
            out["slurm_submit_100_s"] = round(elapsed, 3)
            out["slurm_arrays"] = len(arrays)
            note(f"{elapsed:.3f} s, {len(arrays)} sbatch")
        with prog.step("slurm: cifar-tui runs with 100 SLURM runs queued") as note:
            empty = {**env, "CIFAR_TUI_HOME": str(cwd / "empty")}
            time_command([*cli, "runs"], env, cwd)  # warm the file cache
            times, bare = [], []
            for _ in range(repeats):  # alternately: the machine's load weighs on both alike
                times.append(time_command([*cli, "runs"], env, cwd))
                bare.append(time_command([*cli, "runs"], empty, cwd))
            out["slurm_runs_100_s"], out["slurm_runs_0_s"] = rounded(median(times), 3), rounded(median(bare), 3)
            out["samples"]["slurm_runs_100_s"] = [round(v, 3) for v in times]
            note(f"{out['slurm_runs_100_s']:.3f} s (empty workspace {out['slurm_runs_0_s']:.3f} s)")
    finally:
        if arrays:
            subprocess.run(["scancel", *sorted(arrays)], env=env, capture_output=True, timeout=60)
    starts, queues = [], []
    with prog.step("slurm: a task's start to its start event") as note:
        for i in range(1 if ctx.plan.repeats < 5 else 3):
            t_submit = time.time()
            res = subprocess.run([*cli, "run", "resnet18_baseline", "--launcher", "slurm", "--slurm-time", TIME_MIN,
                                  *TINY, "--study", f"bench-start-{i}"], env=env, cwd=cwd, capture_output=True,
                                 text=True, timeout=300)
            found = re.findall(r"submitted (\S+) as SLURM job (\S+)", res.stdout)
            if res.returncode != 0 or not found:
                raise RuntimeError(f"cifar-tui run --launcher slurm exited {res.returncode}: {res.stderr[-300:]}")
            run_id, job_id = found[0]
            start = _wait_for_start(events_path(cwd / "runs" / run_id), env, job_id)
            job = start["provenance"]["job"]
            starts.append(start["t"] - job["task_started_at"])
            queues.append(job["task_started_at"] - t_submit)
            _wait_for_end(env, job_id)
        out["slurm_task_to_start_s"] = rounded(median(starts), 3)
        out["slurm_queue_s"] = rounded(median(queues), 3)
        out["samples"]["slurm_task_to_start_s"] = [round(v, 3) for v in starts]
        note(f"{out['slurm_task_to_start_s']:.3f} s (queued {out['slurm_queue_s']:.3f} s)")


def _wait_for_start(events: Path, env: dict, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = events.read_text().split("\n", 1)[0]
            if line.strip():
                return json.loads(line)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=60)
    raise RuntimeError(f"SLURM job {job_id}: no start event within {timeout:.0f} s (its log: runs/.jobs/{job_id}/)")


def _wait_for_end(env: dict, job_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = subprocess.run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%i"], env=env,
                                capture_output=True, text=True, timeout=30)
        if not listed.stdout.strip():
            return
        time.sleep(0.2)
    subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=60)


def run(ctx: BenchContext) -> None:
    with ctx.timed("slurm"):
        bench_slurm(ctx)


def details(results: dict) -> list[tuple[str, str, str]]:
    if results.get("slurm_skipped"):
        return [("slurm", results["slurm_skipped"], "")]
    if results.get("slurm_task_to_start_s") is None:
        return []
    rows = [("slurm: a task's start to its start event", f"{results['slurm_task_to_start_s']:.2f} s",
             f"queued {results['slurm_queue_s']:.2f} s")]
    if results.get("slurm_runs_0_s") is not None:
        rows.append(("slurm: cifar-tui runs, 100 SLURM runs / none", f"{results['slurm_runs_100_s']:.3f} s",
                     f"{results['slurm_runs_0_s']:.3f} s"))
    return rows


SECTION = Section("slurm", run, details)
