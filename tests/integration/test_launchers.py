"""Launchers through submitit: a run through submitit's local executor followed to its end by
`cifar-tui runs`, and the job scripts the SLURM launcher writes for what a one-node CPU cluster cannot
run (a fake sbatch on PATH records them): GPUs and a named partition, a multi-node DDP job. The SLURM
launcher runs for real in tests/integration/test_slurm.py."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
from pathlib import Path

from engine.record.events import read_events

from tests.conftest import CLI, cli, set_args, tiny_overrides

SMALL = tiny_overrides(data__train_limit=64, data__test_limit=64, train__batch_size=32, train__epochs=1)


def _runs(ws) -> list[dict]:
    res = cli(ws, "runs", "--json")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_a_run_through_the_local_submitit_executor_is_followed_to_its_end_by_runs(workspace):
    home = workspace["home"]
    proc = subprocess.Popen([*CLI, "run", "resnet18_baseline", "--launcher", "local-submitit", *set_args(SMALL)],
                            env=workspace["env"], cwd=workspace["tmp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = [r for r in _runs(workspace) if "run_id" in r] if (home / "cifar_tui.db").exists() else []
        if rows:
            seen.append(rows[0]["status"])
            if rows[0]["status"] == "completed":
                break
        time.sleep(0.5)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert seen and seen[-1] == "completed" and set(seen) <= {"queued", "running", "completed"}, seen
    run = rows[0]
    start = read_events(home / run["run_id"] / "events.jsonl")[0]
    assert start["provenance"]["job"]["scheduler"] == "submitit-local"
    job_id = start["provenance"]["job"]["job_id"]
    assert (home / ".jobs" / "local" / f"{job_id}_0_result.pkl").is_file()  # submitit ran it and kept its result
    assert run["study"] and run["group_key"].startswith("resnet18_baseline data.source=synthetic")


def _fake_slurm(tmp: Path) -> tuple[dict, Path]:
    """sbatch copies each job script it is given and answers like SLURM; srun (submitit checks for it)
    and scancel only record."""
    bin_dir, record = tmp / "fakebin", tmp / "slurm"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(f"""#!/bin/sh
n=$(ls {record} | grep -c '^job')
cp "$1" {record}/job$n.sh
echo "Submitted batch job 424$n"
""")
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {record}/scancel\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, record


def _submitted_command(home: Path, job_id: str) -> list[str]:
    with open(home / ".jobs" / job_id / f"{job_id}_submitted.pkl", "rb") as f:
        delayed = pickle.load(f)
    assert f"{delayed.function.__module__}.{delayed.function.__name__}" == "engine.record.job.run_engine"
    return delayed.args[0]


def test_the_slurm_launcher_submits_a_sweep_as_one_job_array_and_stop_cancels_a_job(workspace):
    home, tmp = workspace["home"], workspace["tmp"]
    extra, record = _fake_slurm(tmp)
    ws = {**workspace, "env": {**workspace["env"], **extra}}
    res = cli(ws, "run", "resnet18_baseline", "--set", "optim.lr=1e-3,3e-3", "--seeds", "2", "--launcher", "slurm",
              "--slurm-partition", "gpu", "--slurm-gpus-per-node", "2", "--slurm-time", "30", "--data", "synthetic",
              "--study", "sl")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in record.iterdir()) == ["job0.sh"]  # one sbatch: one array
    script = (record / "job0.sh").read_text()
    for line in ("#SBATCH --array=0-3%4", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=30",
                 "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120"):
        assert line in script, line
    assert "export PYTHONPATH=" in script and "-m submitit.core._submit" in script and "srun" in script
    queued = [r for r in _runs(ws) if r.get("job_id")]
    assert sorted(r["job_id"] for r in queued) == [f"4240_{i}" for i in range(4)]
    assert {r["status"] for r in queued} == {"queued"}
    for r in queued:
        cmd = _submitted_command(home, r["job_id"])
        assert cmd[1:3] == ["-m", "engine.train"] and cmd[cmd.index("--run-id") + 1] == r["run_id"]
        assert cmd[cmd.index("--study") + 1] == "sl" and str(home.resolve()) == cmd[cmd.index("--home") + 1]
        assert cmd[cmd.index("--group") + 1].startswith("resnet18_baseline data.source=synthetic optim.lr=")
    victim = next(r for r in queued if r["job_id"] == "4240_1")
    res = cli(ws, "stop", victim["run_id"])
    assert res.returncode == 0 and "cancelled before it started" in res.stdout, res.stdout + res.stderr
    assert (record / "scancel").read_text().split() == ["4240_1"]
    assert victim["run_id"] not in {r.get("run_id") for r in _runs(ws)} and not (home / victim["run_id"]).exists()


def test_a_ddp_run_on_slurm_is_one_multi_task_job_meeting_at_torchruns_rendezvous(workspace):
    home, tmp = workspace["home"], workspace["tmp"]
    extra, record = _fake_slurm(tmp)
    ws = {**workspace, "env": {**workspace["env"], **extra}}
    res = cli(ws, "run", "resnet18_baseline", "--nproc", "2", "--nnodes", "2", "--launcher", "slurm",
              "--data", "synthetic", "--study", "ddp")
    assert res.returncode == 0, res.stdout + res.stderr
    script = (record / "job0.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=2" in script
    assert "#SBATCH --ntasks-per-node=1" in script and "--array" not in script
    cmd = _submitted_command(home, "4240")
    assert cmd[1:3] == ["-m", "engine.torchrun"]
    assert {"--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint={master}:{port}"} <= set(cmd)
    assert cmd[cmd.index("-m", 3) + 1] == "engine.train"
