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
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

from engine.events import read_events
from engine.store import Store
from engine.job import TIME_LIMIT_REASON

from tests.conftest import cli, set_args
from tests.support.reliability import fast, one_error_line, wait_until
from tests.support.slurm.cluster import MAXTIME_MIN, Cluster, slurm, slurm_cluster  # noqa: F401 - fixtures

CONFIG = "resnet18_baseline"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # several engines on two cores; also deterministic on the CPU
RUN = fast(train__epochs=8, optim__lr="1e-3")
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


class Once(threading.Thread):
    """Does `action` once `ready()` is true (polled every 0.2 s, beside the test's own loop: a stop
    must land while its run is still running); `error` holds what it raised."""

    def __init__(self, ready, action, timeout: float = TIMEOUT):
        super().__init__(daemon=True)
        self.ready, self.action, self.timeout = ready, action, timeout
        self.result, self.error = None, None
        self.start()

    def run(self) -> None:
        try:
            wait_until(self.ready, self.timeout, "its moment", 0.2)
            self.result = self.action()
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


def test_runs_on_a_real_cluster(slurm, workspace):
    """Everything `--launcher slurm` promises for runs, side by side (a job's start-up costs seconds):
    a sweep is one job array followed by `runs` from queued to completed; a run stopped with
    `cifar-tui stop` resumes as a new job and ends bit for bit as the sweep's uninterrupted twin; a run
    whose job step is SIGKILLed is `crashed` and resumes; a 1-minute job gets SLURM's time-limit
    warning, stops with a checkpoint and resumes; reproduce's distillation run waits for its teacher
    (afterok); a --nproc 2 run is torchrun inside its job; sbatch's refusals leave nothing."""
    ws = workspace
    # first, a 1-minute job: SLURM's warning (20 s before the limit) comes 10-40 s in, long before the run's end
    [(timed, timed_job)] = submit(ws, fast(train__epochs=20), "--study", "limit", time_min=1,
                                  env={"CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:3"})
    # a sweep of two runs, one job array: its lr=1e-3 run is what the stopped run must end as, bit for
    # bit; its lr=2e-3 run is the one SIGKILLed
    sweep = submit(ws, [o for o in RUN if not o.startswith("optim.lr")], "--set", "optim.lr=1e-3,2e-3",
                   "--study", "sweep", env=SLOW_EPOCHS)
    followed = Followed(ws)
    followed.look()  # at once: SLURM holds them a moment at least
    [(stopped, stopped_job)] = submit(ws, RUN, "--study", "stop", env=SLOW_EPOCHS)
    assert [job.split("_")[1] for _, job in sweep] == ["0", "1"] and len({job.split("_")[0] for _, job in sweep}) == 1
    (reference, _), (killed, killed_job) = sweep
    teacher, student, ddp = submit_distillation_and_ddp(ws)
    refused_submissions_leave_nothing(ws)

    def stop_and_resume() -> str:
        res = cli(ws, "stop", stopped)  # a stop request in its run dir + scancel; waits for its end
        assert res.returncode == 0 and f"{stopped}: stopped" in res.stdout, res.stdout + res.stderr
        return resume(ws, stopped)

    def kill_and_resume() -> str:
        # the job step's processes, SIGKILLed (scancel --signal=KILL of the whole job cancels it:
        # SIGTERM first, a graceful stop)
        slurm.run("scancel", "--signal=KILL", f"{killed_job}.0")
        wait_until(lambda: runs(ws)[killed]["status"] == "crashed", 60, "the killed run to show as crashed")
        return resume(ws, killed)

    chains = {stopped: Once(lambda: checkpointed(ws, stopped, 1), stop_and_resume),
              killed: Once(lambda: checkpointed(ws, killed, 1), kill_and_resume),
              timed: Once(lambda: any(e["type"] == "end" for e in events(ws, timed)), lambda: resume(ws, timed))}
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status = {rid: r["status"] for rid, r in followed.look().items()}
        if all(c.done() for c in chains.values()) and all(status.get(rid) == "completed" for rid in
                                                           [reference, teacher, student, ddp, *chains]):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"not all done after {TIMEOUT}s: {dict(followed.statuses)}; jobs {slurm.jobs()}\n"
                             + job_logs(ws))
    resumed = {rid: c.result for rid, c in chains.items()}  # run id -> the job it resumed in

    # the sweep: each task an ordinary run, shown queued with its job, then running, then completed
    for run_id, job_id in sweep:
        assert followed.statuses[run_id][0] == "queued" and followed.jobs[run_id] >= {job_id}
        start = events(ws, run_id)[0]
        job = start["provenance"]["job"]
        assert job["scheduler"] == "slurm" and job["job_id"] == job_id and job["task_started_at"] < start["t"]
    assert followed.statuses[reference] == ["queued", "running", "completed"], followed.statuses[reference]

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
    assert ends[0]["epochs_done"] < 20 and "stopped" in followed.statuses[timed] and any(e["type"] == "checkpoint" for e in evs[:evs.index(ends[0])])
    assert [s["provenance"]["job"]["job_id"] for s in evs if s["type"] == "start"] == [timed_job, resumed[timed]]

    # the distillation run started after its teacher's end, with that run as its teacher
    teacher_evs, student_evs = events(ws, teacher), events(ws, student)
    assert student_evs[0]["config"]["loss"]["kd"]["teacher"] == teacher
    assert student_evs[0]["t"] > teacher_evs[-1]["t"] and teacher_evs[-1]["status"] == "completed"

    # the DDP run: torchrun inside the job, two ranks meeting on the job's node (gloo on the CPU)
    evs = events(ws, ddp)
    start, end = evs[0], evs[-1]
    assert start["world_size"] == 2 and len(end["weights_sha256"]) == 2 and len(set(end["weights_sha256"])) == 1
    script = next((Path(ws["home"]) / ".jobs").glob(f"{start['provenance']['job']['job_id']}/*_submission.sh"))
    assert "#SBATCH --cpus-per-task=2" in script.read_text() and "gpus" not in script.read_text()
    wait_until(lambda: not slurm.jobs(), 60, "every job to end (its task returns after the engine's end)", 0.2)


def submit_distillation_and_ddp(ws: dict) -> tuple[str, str, str]:
    """reproduce's teacher and student (held on afterok:teacher), and a --nproc 2 run: their run ids."""
    tiny = fast(train__epochs=1)
    res = cli(_env(ws, {"CIFAR_TUI_TEST_SLOW_CHECKPOINT": "last.pt:2"}), "reproduce", "--only",
              "resnet50_pretrained_arcface_224x224,resnet18_pretrained_arcface_kd", "--study", "seed",
              "--launcher", "slurm", "--slurm-time", "5", "--set", "model.pretrained=false", "--set", "data.image_size=32",
              *set_args(tiny))
    assert res.returncode == 0, res.stdout + res.stderr
    (teacher, teacher_job), (student, student_job) = SUBMITTED.findall(res.stdout)
    assert f"(after job {teacher_job})" in res.stdout
    [(ddp, _)] = submit(ws, tiny, "--nproc", "2", "--study", "ddp")
    held = slurm_job(ws, student_job)  # while the teacher trains, its student waits on the dependency
    assert held["Dependency"].startswith(f"afterok:{teacher_job}") and held["JobState"] == "PENDING", held
    return teacher, student, ddp


def slurm_job(ws: dict, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], env=ws["env"], capture_output=True,
                         text=True, timeout=30).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def refused_submissions_leave_nothing(ws: dict) -> None:
    """sbatch refusing: one line naming the option, exit 2, nothing queued, nothing in the store."""
    home = Path(ws["home"])
    before, dirs = runs(ws), sorted(p.name for p in home.iterdir() if p.is_dir() and p.name[0] != ".")
    for option, value in (("--slurm-partition", "nowhere"), ("--slurm-time", str(MAXTIME_MIN + 1))):
        res = cli(_env(ws), "run", CONFIG, *set_args(fast()), "--launcher", "slurm", option, value, "--study", "refused")
        assert res.returncode == 2, res.stdout + res.stderr
        line = one_error_line(res.stderr)
        assert line.startswith(f"error: {option} {value}: "), line
    res = cli(_env(ws), "tune", CONFIG, "--param", "optim.lr=log:1e-4:1e-1", "--trials", "2", "--workers", "2",
              "--launcher", "slurm", "--slurm-partition", "nowhere", "--study", "refused", *set_args(fast()))
    assert res.returncode == 2 and one_error_line(res.stderr).startswith("error: --slurm-partition nowhere: "), res.stderr
    from cifar_tui.tune import best_trial
    from cifar_tui.workspace import Workspace

    assert best_trial(Workspace(home=home, data_root=Path(ws["data"])), "refused") is None  # no Optuna study either
    assert runs(ws).keys() == before.keys() and '"not started"' not in cli(ws, "runs", "--json").stdout
    assert "refused" not in cli(ws, "studies", "--json").stdout
    assert sorted(p.name for p in home.iterdir() if p.is_dir() and p.name[0] != ".") == dirs, "no run dir left"
    store = Store(home)
    try:  # not even rows no view shows
        assert store.conn.execute("SELECT count(*) FROM queue WHERE study='refused'").fetchone()[0] == 0
    finally:
        store.close()


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
    assert [len(r["spec"]["workers"]) for r in rows if r["name"] == study] == [4]  # both submissions' tasks
