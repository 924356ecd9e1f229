"""`--launcher slurm` for real: a one-node SLURM cluster started by the suite (tests/support/slurm),
jobs submitted through submitit's SlurmExecutor, each job running the engine on tiny synthetic data
(timm's test_resnet, the CPU). Several runs go side by side in each test: a job's start-up costs
seconds, and the node offers four CPUs.

What `runs` shows is followed with the real CLI: queued (with the job id) while SLURM holds the job,
running, then how it ended. A run stopped with `cifar-tui stop`, one killed with
`scancel --signal=KILL JOB.0` (its step's processes SIGKILLed), and one whose job reached its
time limit each resume as a new job.
"""
from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path

from engine.events import read_events
from engine.job import TIME_LIMIT_REASON

from tests.conftest import cli, set_args
from tests.support.reliability import fast, one_error_line, wait_until
from tests.support.slurm.cluster import MAXTIME_MIN, Cluster, slurm, slurm_cluster  # noqa: F401 - fixtures

CONFIG = "resnet18_baseline"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # several engines on two cores; also deterministic on the CPU
RUN = fast(train__epochs=4, optim__lr="1e-3")
SLOW_EPOCHS = {"CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:2"}   # each epoch's last.pt takes 2 s more
SUBMITTED = re.compile(r"submitted (\S+) as SLURM job (\S+)")
TIMEOUT = 240


def _env(ws: dict, extra: dict | None = None) -> dict:
    return {**ws, "env": {**ws["env"], **ONE_THREAD, **(extra or {})}}


def submit(ws: dict, overrides: list[str], *args: str, env: dict | None = None, time_min: int = 5) -> list[tuple]:
    """`cifar-tui run CONFIG --launcher slurm ...`: [(run id, job id)] in submission order."""
    res = cli(_env(ws, env), "run", CONFIG, *set_args(overrides), "--launcher", "slurm", "--slurm-time", str(time_min),
              *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return SUBMITTED.findall(res.stdout)


def resume(ws: dict, run_id: str) -> str:
    res = cli(_env(ws), "resume", run_id, "--launcher", "slurm", "--slurm-time", "5")
    assert res.returncode == 0, res.stdout + res.stderr
    return re.search(r"as SLURM job (\S+);", res.stdout).group(1)


def runs(ws: dict) -> dict[str, dict]:
    res = cli(ws, "runs", "--json")
    assert res.returncode == 0, res.stderr
    return {r["run_id"]: r for r in map(json.loads, res.stdout.splitlines()) if r.get("run_id")}


def events(ws: dict, run_id: str) -> list[dict]:
    return read_events(Path(ws["home"]) / run_id / "events.jsonl")


def checkpointed(ws: dict, run_id: str, epoch: int) -> bool:
    return any(e["type"] == "checkpoint" and e["epoch"] >= epoch for e in events(ws, run_id))


def job_logs(ws: dict) -> str:
    """The tail of every job's submitit log, for a failure message."""
    out = []
    for log in sorted((Path(ws["home"]) / ".jobs").glob("*/*_log.*")):
        lines = log.read_text(errors="replace").splitlines()[-8:]
        out.append(f"--- {log.name}\n" + "\n".join(lines))
    return "\n".join(out)


def wait_with_jobs(slurm: Cluster, ws: dict, predicate, what: str, timeout: float = TIMEOUT):
    """wait_until, failing at once (with the jobs' logs) when no job is left to make it come true."""
    def check():
        if predicate():
            return True
        if not slurm.jobs() and not predicate():
            raise AssertionError(f"no SLURM job left, still waiting for {what}:\n{job_logs(ws)}")
        return False
    return wait_until(check, timeout, what, 0.5)


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


def test_runs_go_from_queued_to_completed_and_stopped_killed_or_timed_out_ones_resume_as_new_jobs(slurm, workspace):
    ws = workspace
    # first, a 1-minute job: SLURM's warning (20 s before the limit) comes 10-40 s in, long before the run's end
    [(timed, timed_job)] = submit(ws, fast(train__epochs=20), "--study", "limit", time_min=1,
                                  env={"CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:3"})
    # a sweep of two runs: one job array; its lr=1e-3 run is what the stopped run must end as, bit for bit
    sweep = submit(ws, [o for o in RUN if not o.startswith("optim.lr")], "--set", "optim.lr=1e-3,2e-3",
                   "--study", "sweep", env={"CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:1"})
    [(stopped, stopped_job)] = submit(ws, RUN, "--study", "stop", env=SLOW_EPOCHS)
    [(killed, killed_job)] = submit(ws, RUN, "--study", "kill", env=SLOW_EPOCHS)
    assert [job.split("_")[1] for _, job in sweep] == ["0", "1"] and len({job.split("_")[0] for _, job in sweep}) == 1
    reference = sweep[0][0]

    followed = Followed(ws)
    resumed: dict[str, str] = {}   # run id -> the job it resumed in
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        rows = followed.look()
        status = {rid: r["status"] for rid, r in rows.items()}
        if stopped not in resumed and status.get(stopped) == "running" and checkpointed(ws, stopped, 1):
            res = cli(ws, "stop", stopped)  # a stop request in its run dir + scancel; waits for its end
            assert res.returncode == 0 and f"{stopped}: stopped" in res.stdout, res.stdout + res.stderr
            resumed[stopped] = resume(ws, stopped)
        if killed not in resumed and status.get(killed) == "running" and checkpointed(ws, killed, 1):
            # the job step's processes, SIGKILLed (scancel --signal=KILL of the whole job cancels it:
            # SIGTERM first, a graceful stop)
            slurm.run("scancel", "--signal=KILL", f"{killed_job}.0")
            wait_until(lambda: runs(ws)[killed]["status"] == "crashed", 60, "the killed run to show as crashed")
            followed.look()
            resumed[killed] = resume(ws, killed)
        if timed not in resumed and status.get(timed) == "stopped":
            resumed[timed] = resume(ws, timed)
        done = [sweep[0][0], sweep[1][0], *resumed]
        if len(resumed) == 3 and all(status.get(rid) == "completed" for rid in done):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"not all done after {TIMEOUT}s: {dict(followed.statuses)}; jobs {slurm.jobs()}\n"
                             + job_logs(ws))

    # the sweep: each task an ordinary run, shown queued with its job, then running, then completed
    for run_id, job_id in sweep:
        assert followed.statuses[run_id][0] == "queued" and followed.jobs[run_id] == {job_id}
        assert followed.statuses[run_id][-1] == "completed"
        assert set(followed.statuses[run_id]) <= {"queued", "running", "completed"}, followed.statuses[run_id]
        start = events(ws, run_id)[0]
        job = start["provenance"]["job"]
        assert job["scheduler"] == "slurm" and job["job_id"] == job_id and job["task_started_at"] < start["t"]
    assert any("running" in followed.statuses[rid] for rid, _ in sweep), dict(followed.statuses)

    # stopped: a checkpoint and `stopped`, resumed as a new job, ending as the uninterrupted run did
    evs = events(ws, stopped)
    ends = [e for e in evs if e["type"] == "end"]
    starts = [e for e in evs if e["type"] == "start"]
    assert [e["status"] for e in ends] == ["stopped", "completed"]
    assert [s["provenance"]["job"]["job_id"] for s in starts] == [stopped_job, resumed[stopped]]
    assert resumed[stopped] != stopped_job and starts[1]["resumed_from"] is not None
    shown = followed.statuses[stopped]
    assert "queued" in shown[shown.index("running"):], shown  # its resume, waiting in SLURM's queue
    assert ends[-1]["weights_sha256"] == events(ws, reference)[-1]["weights_sha256"], "the resumed run ended elsewhere"

    # killed: no end event, `crashed`, resumed from its last checkpoint as a new job
    evs = events(ws, killed)
    assert [e["status"] for e in evs if e["type"] == "end"] == ["completed"]
    assert [s["provenance"]["job"]["job_id"] for s in evs if s["type"] == "start"] == [killed_job, resumed[killed]]
    assert "crashed" in followed.statuses[killed]

    # the time limit: SLURM's warning, a checkpoint, `stopped` with the reason; resumed as a new job
    evs = events(ws, timed)
    ends = [e for e in evs if e["type"] == "end"]
    assert [e["status"] for e in ends] == ["stopped", "completed"] and ends[0]["reason"] == TIME_LIMIT_REASON
    assert ends[0]["epochs_done"] < 20 and any(e["type"] == "checkpoint" for e in evs[:evs.index(ends[0])])
    assert [s["provenance"]["job"]["job_id"] for s in evs if s["type"] == "start"] == [timed_job, resumed[timed]]
    wait_until(lambda: not slurm.jobs(), 60, "every job to end (its task returns after the engine's end)", 0.2)


def test_distillation_waits_for_its_teacher_ddp_runs_torchrun_in_its_job_and_refused_submissions_leave_nothing(
        slurm, workspace):
    ws = workspace
    teacher_cfg, student_cfg = "resnet50_pretrained_arcface_224x224", "resnet18_pretrained_arcface_kd"
    tiny = fast(train__epochs=1)
    res = cli(_env(ws, {"CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:2"}), "reproduce", "--only",
              f"{teacher_cfg},{student_cfg}", "--study", "seed", "--launcher", "slurm", "--slurm-time", "5",
              "--set", "model.pretrained=false", "--set", "data.image_size=32", *set_args(tiny))
    assert res.returncode == 0, res.stdout + res.stderr
    (teacher, teacher_job), (student, student_job) = SUBMITTED.findall(res.stdout)
    assert f"(after job {teacher_job})" in res.stdout
    [(ddp, ddp_job)] = submit(ws, tiny, "--nproc", "2", "--study", "ddp")

    # while the teacher trains, its student waits in SLURM's queue on the dependency
    held = slurm.job(student_job)
    assert held["Dependency"].startswith(f"afterok:{teacher_job}") and held["JobState"] == "PENDING", held

    # refused by sbatch: one line naming the option, exit 2, nothing queued, nothing in the store
    before = runs(ws)
    for option, value in (("--slurm-partition", "nowhere"), ("--slurm-time", str(MAXTIME_MIN + 1))):
        res = cli(_env(ws), "run", CONFIG, *set_args(tiny), "--launcher", "slurm", option, value, "--study", "refused")
        assert res.returncode == 2, res.stdout + res.stderr
        line = one_error_line(res.stderr)
        assert line.startswith(f"error: {option} {value}: "), line
    after = cli(ws, "runs", "--json")
    assert runs(ws).keys() == before.keys() and '"not started"' not in after.stdout
    assert "refused" not in cli(ws, "studies", "--json").stdout
    assert sorted(p.name for p in Path(ws["home"]).iterdir() if p.name in before or not p.name.startswith(".")) \
        == sorted(p.name for p in Path(ws["home"]).iterdir() if not p.name.startswith(".")), "no run dir left"

    wait_with_jobs(slurm, ws, lambda: all(runs(ws).get(r, {}).get("status") == "completed"
                                          for r in (teacher, student, ddp)),
                   "the teacher, its student and the DDP run to complete")
    teacher_evs, student_evs = events(ws, teacher), events(ws, student)
    assert student_evs[0]["config"]["loss"]["kd"]["teacher"] == teacher
    assert student_evs[0]["t"] > teacher_evs[-1]["t"] and teacher_evs[-1]["status"] == "completed"

    # the DDP run: torchrun inside the job, two ranks meeting on the job's node (gloo on the CPU)
    evs = events(ws, ddp)
    start, end = evs[0], evs[-1]
    assert start["world_size"] == 2 and start["provenance"]["job"]["job_id"] == ddp_job
    assert len(end["weights_sha256"]) == 2 and len(set(end["weights_sha256"])) == 1
    script = next((Path(ws["home"]) / ".jobs").glob(f"{ddp_job}/*_submission.sh")).read_text()
    assert "#SBATCH --cpus-per-task=2" in script and "gpus" not in script
    wait_until(lambda: not slurm.jobs(), 60, "every job to end", 0.2)


def test_tune_workers_share_one_study_prune_against_each_other_and_a_rerun_takes_up_killed_workers_trials(
        slurm, workspace):
    import optuna

    from cifar_tui.tune import _storage
    from cifar_tui.workspace import Workspace

    ws = workspace
    study, param = "tn", "optim.lr=log:1e-4:1e-1"
    # two trials another worker finished, far better at every epoch than anything here: the pruner of
    # this search's workers must read them from the shared storage to prune
    storage = _storage(Workspace(home=Path(ws["home"]), data_root=Path(ws["data"])))
    search = optuna.create_study(study_name=study, storage=storage, direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    for value in (1e-3, 1e-2):
        search.add_trial(optuna.trial.create_trial(params={"optim.lr": value}, distributions={"optim.lr": lr},
                                                   value=99.0, intermediate_values={1: 99.0, 2: 99.0, 3: 99.0}))
    args = ["tune", CONFIG, "--param", param, "--trials", "4", "--workers", "2", "--launcher", "slurm",
            "--slurm-time", "5", "--study", study, "--prune", "median", "--prune-startup", "1", "--prune-warmup", "2",
            *set_args(fast(train__epochs=4))]
    res = cli(_env(ws, {"CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:2"}), *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "(continuing)" in res.stdout and "2 finished so far" in res.stdout
    [workers] = re.findall(r"submitted 2 workers as SLURM job (\S+) \(", res.stdout)

    def trials():
        return optuna.load_study(study_name=study, storage=storage).get_trials()

    # each worker at work on a trial (never pruned before epoch 3: --prune-warmup 2), killed (its job
    # step SIGKILLed) once that trial's run has checkpointed epoch 1
    killed: dict[str, str] = {}  # run id -> its worker's job
    def kill_each_after_epoch_1() -> bool:
        for t in trials():
            run_id, worker = t.user_attrs.get("run_id"), t.user_attrs.get("worker", "")
            if t.state.name == "RUNNING" and run_id and run_id not in killed and checkpointed(ws, run_id, 1):
                killed[run_id] = worker.split("@")[0]
                slurm.run("scancel", "--signal=KILL", f"{killed[run_id]}.0")
        return len(killed) == 2
    wait_with_jobs(slurm, ws, kill_each_after_epoch_1, "each worker's trial to checkpoint its first epoch")
    assert sorted(job.split("_")[0] for job in killed.values()) == [workers, workers] and len(set(killed.values())) == 2
    wait_until(lambda: not slurm.jobs(), 60, "the killed workers' jobs to end", 0.2)
    assert {runs(ws)[r]["status"] for r in killed} == {"crashed"} and len(trials()) == 4
    assert sorted(t.state.name for t in trials()) == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]

    res = cli(_env(ws), *args)  # the same command again: new workers take up the two left trials
    assert res.returncode == 0, res.stdout + res.stderr
    assert "(continuing)" in res.stdout and "submitted 2 workers" in res.stdout, res.stdout
    wait_until(lambda: not slurm.jobs(), TIMEOUT, "the new workers to finish the study", 0.5)

    done = trials()
    assert sorted(t.state.name for t in done) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"], job_logs(ws)
    for t in done[2:]:
        evs = events(ws, t.user_attrs["run_id"])
        assert t.user_attrs["run_id"] in killed  # resumed, not started again
        assert [s["provenance"]["job"]["job_id"].split("_")[0] for s in evs if s["type"] == "start"][0] == workers
        assert len([e for e in evs if e["type"] == "start"]) == 2 and evs[-1]["status"] == "pruned"
        assert sorted(t.intermediate_values) == [1, 2, 3] and t.user_attrs["worker"].split("_")[0] != workers
    rows = [json.loads(line) for line in cli(ws, "studies", "--json").stdout.splitlines()]
    assert [r["by_status"] for r in rows if r["name"] == study] == [{"pruned": 2}]
