"""`--launcher slurm` for real: a one-node SLURM cluster started by the suite (tests/support/slurm),
jobs submitted through submitit's SlurmExecutor, each job running the engine on tiny synthetic data
(timm's test_resnet, the CPU).

One test, every scenario at once. A job costs seconds of start-up (its engine starts cold in its task:
torch, the model, the data; the epochs themselves take a fraction of a second), and slurmctld sends
the time-limit warning on a 30 s timer, so the scenarios run side by side while the 1-minute job
waits for its warning; this machine's two cores are the limit (the node offers 32 CPUs: no job waits
for SLURM). What `runs` shows is followed with the CLI's command, about once a second, in this process
(tests/support/slurm/scenario.py); each scenario's actions run in a thread beside it (`Once`) at the
moment their run reaches (a stop must land while the run trains), reading what the last look saw.
The engines in the jobs start cold, as in production: a job's environment is the submitting CLI's.

- a sweep is one job array, each task an ordinary run shown queued (with its job), running, completed;
  its task stopped with `cifar-tui stop` resumes as a new job and ends bit for bit as its twin;
- a 1-minute job gets SLURM's warning, stops with a checkpoint, shows `stopped`, resumes as a new job;
- reproduce's distillation run waits for its teacher (afterok); a --nproc 2 run is torchrun in its job;
- sbatch's refusals (run, tune, run --seeds auto) leave nothing;
- tune --workers 2: pruned against trials no worker of it ran; a worker whose job step is SIGKILLed
  (its run `crashed`) loses only its trial, which another worker resumes (the survivor, or the one the
  same command run again adds: it tops the workers up by one, not two);
- run --seeds auto --workers 2: every (group, seed) trained once, until each group is capped (or
  resolved); a killed worker's run resumed by another worker; the command run again tops the
  workers up; they end by themselves when decide says the study is done.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.record.job import TIME_LIMIT_REASON
from engine.record.store import Store

from tests.conftest import cli, set_args
from tests.support.reliability import fast, one_error_line, wait_until
from tests.support.slurm.cluster import MAXTIME_MIN, Cluster, slurm, slurm_cluster  # noqa: F401 - fixtures
from tests.support.slurm.scenario import (CONFIG, LOOK_EVERY_S, SUBMITTED, TIMEOUT, WORKERS, Followed, Once, env_for,
                                          checkpointed, events, job_logs, job_of, resume, runs, slow, slurm_job,
                                          starts, studies, submit, worker_log)

pytestmark = pytest.mark.cold_engine  # engines start in the jobs as in production (tests/support/warm_engine.py)


# ---------------------------------------------------------------- the scenarios


class TimeLimit:
    """A 1-minute job: SLURM's warning (20 s before the limit) comes 10-40 s in, long before the run's end."""

    def __init__(self, ws: dict, followed: Followed):
        self.ws = ws
        [(self.run, self.job)] = submit(ws, fast(train__epochs=20), "--study", "limit", time_min=1, env=slow(3))
        self.chain = Once(lambda: followed.seen(self.run, "stopped"), lambda _: resume(ws, self.run))
        self.followed = followed

    def done(self, status: dict, jobs: dict) -> bool:
        return self.chain.done() and status.get(self.run) == "completed"

    def check(self) -> None:
        evs = events(self.ws, self.run)
        ends = [e for e in evs if e["type"] == "end"]
        assert [e["status"] for e in ends] == ["stopped", "completed"] and ends[0]["reason"] == TIME_LIMIT_REASON
        assert ends[0]["epochs_done"] < 20 and any(e["type"] == "checkpoint" for e in evs[:evs.index(ends[0])])
        assert [job_of(s) for s in starts(self.ws, self.run)] == [self.job, self.chain.result]
        assert self.chain.result != self.job and self.followed.seen(self.run, "stopped")


class Sweep:
    """Two runs as one array, differing only in what they keep on disk: task 0, once `runs` showed it
    running and it checkpointed its first epoch, is stopped with `cifar-tui stop` and resumed (held in
    SLURM's queue until `runs` showed it queued again); task 1, untouched, is what it must end as."""

    def __init__(self, ws: dict, slurm: Cluster, followed: Followed):
        self.ws, self.slurm, self.followed = ws, slurm, followed
        # 3 s a checkpoint: 20 s and more after the first one, for `cifar-tui stop` (a CLI start on a
        # loaded machine) to find the run still running (with 1 s it had completed once)
        self.tasks = submit(ws, fast(train__epochs=8, optim__lr="1e-3"), "--set", "train.keep=best,best+last",
                            "--study", "sweep", env=slow(3))
        followed.look()  # at once: SLURM holds them a moment at least
        (self.stopped, self.stopped_job), (self.twin, _) = self.tasks
        self.chain = Once(lambda: followed.seen(self.stopped, "running") and checkpointed(ws, self.stopped, 1),
                          self.stop_and_resume)

    def stop_and_resume(self, _) -> str:
        res = cli(self.ws, "stop", self.stopped)  # a stop request in its run dir + scancel; waits for its end
        assert res.returncode == 0 and f"{self.stopped}: stopped" in res.stdout, res.stdout + res.stderr
        job = resume(self.ws, self.stopped, env={"SBATCH_HOLD": "1"})  # held: `runs` must see it wait
        wait_until(lambda: self.followed.statuses[self.stopped][-1] == "queued", 60, "the resume shown queued", 0.2)
        self.slurm.run("scontrol", "release", job)
        return job

    def done(self, status: dict, jobs: dict) -> bool:
        return self.chain.done() and status.get(self.stopped) == status.get(self.twin) == "completed"

    def check(self) -> None:
        assert [job.split("_")[1] for _, job in self.tasks] == ["0", "1"]
        assert len({job.split("_")[0] for _, job in self.tasks}) == 1  # one array
        for run_id, job_id in self.tasks:  # each task an ordinary run, shown queued with its job, then running
            assert self.followed.statuses[run_id][0] == "queued" and self.followed.jobs[run_id] >= {job_id}
            start = starts(self.ws, run_id)[0]
            job = start["provenance"]["job"]
            assert job["scheduler"] == "slurm" and job["job_id"] == job_id and job["task_started_at"] < start["t"]
        shown = self.followed.statuses[self.twin]  # (a look may come too late for its short `running`)
        assert shown in (["queued", "running", "completed"], ["queued", "completed"]), shown
        evs = events(self.ws, self.stopped)
        ends = [e for e in evs if e["type"] == "end"]
        assert [e["status"] for e in ends] == ["stopped", "completed"]
        resumed = starts(self.ws, self.stopped)
        assert [job_of(s) for s in resumed] == [self.stopped_job, self.chain.result]
        assert self.chain.result != self.stopped_job and resumed[1]["resumed_from"] is not None
        shown = self.followed.statuses[self.stopped]  # queued, running, (stopped), queued while its resume waits, ...
        assert shown[0] == "queued" and "queued" in shown[shown.index("running"):] and shown[-1] == "completed", shown
        assert ends[-1]["weights_sha256"] == events(self.ws, self.twin)[-1]["weights_sha256"], "resumed elsewhere"


class DistillationAndDdp:
    """reproduce's teacher and student (held on afterok:teacher), and a --nproc 2 run."""

    def __init__(self, ws: dict):
        self.ws = ws
        tiny = fast(train__epochs=1)
        res = cli(env_for(ws, slow(2)), "reproduce", "--only",
                  "resnet50_pretrained_arcface_224x224,resnet18_pretrained_arcface_kd", "--study", "seed",
                  "--launcher", "slurm", "--slurm-time", "5", "--set", "model.pretrained=false",
                  "--set", "data.image_size=32", *set_args(tiny))
        assert res.returncode == 0, res.stdout + res.stderr
        (self.teacher, teacher_job), (self.student, student_job) = SUBMITTED.findall(res.stdout)
        assert f"(after job {teacher_job})" in res.stdout
        [(self.ddp, _)] = submit(ws, tiny, "--nproc", "2", "--study", "ddp")
        held = slurm_job(ws, student_job)  # while the teacher trains, its student waits on the dependency
        assert held["Dependency"].startswith(f"afterok:{teacher_job}") and held["JobState"] == "PENDING", held

    def done(self, status: dict, jobs: dict) -> bool:
        return all(status.get(r) == "completed" for r in (self.teacher, self.student, self.ddp))

    def check(self) -> None:
        teacher_evs, student_evs = events(self.ws, self.teacher), events(self.ws, self.student)
        assert student_evs[0]["config"]["loss"]["kd"]["teacher"] == self.teacher
        assert student_evs[0]["t"] > teacher_evs[-1]["t"] and teacher_evs[-1]["status"] == "completed"
        evs = events(self.ws, self.ddp)  # torchrun inside the job, two ranks meeting on its node (gloo)
        start, end = evs[0], evs[-1]
        assert start["world_size"] == 2 and len(end["weights_sha256"]) == 2 and len(set(end["weights_sha256"])) == 1
        script = next((Path(self.ws["home"]) / ".jobs").glob(f"{job_of(start)}/*_submission.sh")).read_text()
        assert "#SBATCH --cpus-per-task=2" in script and "gpus" not in script


class TuneWorkers:
    """Two workers; two trials another worker finished, far better at every epoch than anything here:
    each worker's pruner must read them from the shared storage to prune. One worker is killed once
    its trial checkpointed epoch 1 (never pruned before epoch 3: --prune-warmup 2); the command run
    again adds one worker; the trial is resumed by a worker still alive and pruned."""

    STUDY, PARAM = "tn", "optim.lr=log:1e-4:1e-1"

    def __init__(self, ws: dict, slurm: Cluster, followed: Followed):
        import optuna

        from cifar_tui.tune import _storage
        from cifar_tui.workspace import Workspace

        self.ws, self.slurm, self.followed = ws, slurm, followed
        self.storage = _storage(Workspace(home=Path(ws["home"]), data_root=Path(ws["data"])))
        search = optuna.create_study(study_name=self.STUDY, storage=self.storage, direction="maximize")
        lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
        for value in (1e-3, 1e-2):
            search.add_trial(optuna.trial.create_trial(params={"optim.lr": value}, distributions={"optim.lr": lr},
                                                       value=99.0, intermediate_values={1: 99.0, 2: 99.0, 3: 99.0}))
        self.args = ["tune", CONFIG, "--param", self.PARAM, "--trials", "4", "--workers", "2", "--launcher", "slurm",
                     "--slurm-time", "5", "--study", self.STUDY, "--prune", "median", "--prune-startup", "1",
                     "--prune-warmup", "2", *set_args(fast(train__epochs=4))]
        res = cli(env_for(ws, slow(2)), *self.args)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "(continuing)" in res.stdout and "2 finished so far" in res.stdout
        [(n, tasks)] = WORKERS.findall(res.stdout)
        self.workers = tasks.split(", ")
        assert n == "2" and len(self.workers) == 2
        self.killed: tuple[str, str] | None = None  # (run id, its worker's job)
        self.chain = Once(self.kill_one_after_epoch_1, self.rerun)

    def trials(self):
        import optuna

        return optuna.load_study(study_name=self.STUDY, storage=self.storage).get_trials()

    def kill_one_after_epoch_1(self):
        for t in self.trials():
            run_id, worker = t.user_attrs.get("run_id"), t.user_attrs.get("worker", "")
            if t.state.name == "RUNNING" and run_id and checkpointed(self.ws, run_id, 1):
                self.killed = (run_id, worker.split("@")[0])
                self.slurm.run("scancel", "--signal=KILL", f"{self.killed[1]}.0")  # the step: the worker and its run
                return self.killed
        return None

    def rerun(self, killed) -> list[str]:
        wait_until(lambda: self.followed.seen(killed[0], "crashed"), 60, "the killed worker's run to show crashed")
        wait_until(lambda: killed[1] not in self.slurm.jobs(), 60, "the killed worker's job to end", 0.2)
        res = cli(env_for(self.ws), *self.args)  # the same command again: one worker is alive, one more comes
        assert res.returncode == 0, res.stdout + res.stderr
        assert "(continuing)" in res.stdout and "1 worker of this study already queued or running" in res.stdout
        [(n, tasks)] = WORKERS.findall(res.stdout)
        assert n == "1", res.stdout
        return tasks.split(", ")

    def done(self, status: dict, jobs: dict) -> bool:
        return self.chain.done() and not set(jobs) & {*self.workers, *self.chain.result}

    def check(self) -> None:
        done = self.trials()
        assert sorted(t.state.name for t in done) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"], job_logs(self.ws)
        killed_run, killed_job = self.killed
        [taken] = [t for t in done[2:] if t.user_attrs["run_id"] == killed_run]
        [other] = [t for t in done[2:] if t is not taken]
        runs_of = {t.number: starts(self.ws, t.user_attrs["run_id"]) for t in done[2:]}
        # resumed, not started again, by another worker: the survivor or the one the rerun added
        assert [job_of(s) for s in runs_of[taken.number]][0] == killed_job and len(runs_of[taken.number]) == 2
        assert job_of(runs_of[taken.number][1]) in {*self.workers, *self.chain.result} - {killed_job}
        assert taken.user_attrs["worker"].split("@")[0] != killed_job and sorted(taken.intermediate_values) == [1, 2, 3]
        assert events(self.ws, killed_run)[-1]["status"] == "pruned"
        assert len(runs_of[other.number]) == 1 and sorted(other.intermediate_values) == [1, 2, 3]  # pruned at 3
        row = studies(self.ws, here=True)[self.STUDY]
        assert row["by_status"] == {"pruned": 2} and len(row["spec"]["workers"]) == 3  # 2, then 1 more


class AutoSeedsWorkers:
    """Two groups, at most MAX_SEEDS seeds each, a target no group can reach (each group is resolved
    or capped): 2 x MAX_SEEDS runs. The worker training a run of the second group is killed (its job
    step) once that run started; another worker resumes the run; the command run again adds one
    worker. 2 seeds take the same decisions as 3 (the first seeds are the cap either way) in two
    runs less; what decide chooses past the first seeds is tests/unit/test_auto_seeds.py's."""

    STUDY, MAX_SEEDS = "auto", 2

    def __init__(self, ws: dict, slurm: Cluster, followed: Followed):
        self.ws, self.slurm, self.followed = ws, slurm, followed
        self.args = ["run", CONFIG, *set_args(fast(train__epochs=3)), "--set", "optim.lr=1e-3,2e-3", "--seeds", "auto",
                     "--max-seeds", str(self.MAX_SEEDS), "--target-ci", "0.01", "--study", self.STUDY,
                     "--launcher", "slurm", "--workers", "2", "--slurm-time", "5"]
        res = cli(env_for(ws, slow(1)), *self.args)  # each epoch's checkpoint a second: a kill lands while it trains (3 s)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"study {self.STUDY} (new): 2 groups" in res.stdout and "0 runs completed so far" in res.stdout
        [(n, tasks)] = WORKERS.findall(res.stdout)
        self.workers = tasks.split(", ")
        assert n == "2" and len(self.workers) == 2
        self.killed: tuple[str, str] | None = None  # (run id, its worker's job)
        self.chain = Once(self.kill_a_worker_of_lr_2e_3, self.rerun)

    def study_runs(self) -> list[dict]:
        store = Store(Path(self.ws["home"]))
        try:
            return store.study_runs(self.STUDY)
        finally:
            store.close()

    def kill_a_worker_of_lr_2e_3(self):
        for row in self.study_runs():
            if lr_of(row) == 2e-3 and row["status"] == "running":
                job = job_of(starts(self.ws, row["run_id"])[0])
                self.slurm.run("scancel", "--signal=KILL", f"{job}.0")  # the worker and its run
                return row["run_id"], job
        return None

    def status(self, run_id: str) -> str:
        store = Store(Path(self.ws["home"]))
        try:
            return store.run(run_id)["status"]
        finally:
            store.close()

    def rerun(self, killed) -> list[str]:
        self.killed = run_id, job = killed
        # crashed, as `runs` says (its process gone) until another worker resumes it: read here, a look may miss it
        wait_until(lambda: self.status(run_id) == "crashed", 60, "the killed worker's run to be crashed", 0.2)
        wait_until(lambda: job not in self.slurm.jobs(), 60, "the killed worker's job to end", 0.2)
        res = cli(env_for(self.ws, slow(1)), *self.args)  # the same command again: it continues, one more worker
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"study {self.STUDY} (continuing)" in res.stdout, res.stdout
        assert "1 worker of this study already queued or running" in res.stdout, res.stdout
        [(n, tasks)] = WORKERS.findall(res.stdout)
        assert n == "1", res.stdout
        return tasks.split(", ")

    def done(self, status: dict, jobs: dict) -> bool:
        return self.chain.done() and not set(jobs) & {*self.workers, *self.chain.result}

    def check(self) -> None:
        rows = self.study_runs()
        seeds = sorted((lr_of(r), r["seed"]) for r in rows)
        base = min(r["seed"] for r in rows)
        assert seeds == [(lr, base + k) for lr in (1e-3, 2e-3) for k in range(self.MAX_SEEDS)], seeds  # each once
        assert {r["status"] for r in rows} == {"completed"}, job_logs(self.ws)
        killed_run, killed_job = self.killed
        assert [r["run_id"] for r in rows if len(starts(self.ws, r["run_id"])) > 1] == [killed_run]
        resumed = starts(self.ws, killed_run)
        assert [job_of(s) for s in resumed][0] == killed_job and len(resumed) == 2
        assert job_of(resumed[1]) in {*self.workers, *self.chain.result} - {killed_job}  # another worker's
        everyone = [*self.workers, *self.chain.result]
        for job in set(everyone) - {killed_job}:  # each ended by itself: the study is done
            assert "done: every group resolved or capped" in worker_log(self.ws, job), worker_log(self.ws, job)
        row = studies(self.ws, here=True)[self.STUDY]
        assert row["by_status"] == {"completed": 2 * self.MAX_SEEDS} and row["spec"]["workers"] == everyone


def lr_of(row: dict) -> float:
    """optim.lr of a run, from its group (the config and its overrides)."""
    return float(next(p for p in row["group_key"].split() if p.startswith("optim.lr=")).split("=", 1)[1])


def refused_submissions_leave_nothing(ws: dict) -> None:
    """sbatch refusing: one line naming the option, exit 2, nothing queued, nothing in the store (the run
    dirs are checked at the end, `no_dir_but_runs`: other scenarios' runs come and go meanwhile)."""
    home = Path(ws["home"])
    for option, value in (("--slurm-partition", "nowhere"), ("--slurm-time", str(MAXTIME_MIN + 1))):
        res = cli(env_for(ws), "run", CONFIG, *set_args(fast()), "--launcher", "slurm", option, value, "--study", "refused")
        assert res.returncode == 2, res.stdout + res.stderr
        line = one_error_line(res.stderr)
        assert line.startswith(f"error: {option} {value}: "), line
    res = cli(env_for(ws), "tune", CONFIG, "--param", "optim.lr=log:1e-4:1e-1", "--trials", "2", "--workers", "2",
              "--launcher", "slurm", "--slurm-partition", "nowhere", "--study", "refused", *set_args(fast()))
    assert res.returncode == 2 and one_error_line(res.stderr).startswith("error: --slurm-partition nowhere: "), res.stderr
    res = cli(env_for(ws), "run", CONFIG, *set_args(fast()), "--set", "optim.lr=1e-3,2e-3", "--seeds", "auto",
              "--max-seeds", "2", "--target-ci", "1", "--launcher", "slurm", "--workers", "2",
              "--slurm-partition", "nowhere", "--study", "refused")
    assert res.returncode == 2 and one_error_line(res.stderr).startswith("error: --slurm-partition nowhere: "), res.stderr
    from cifar_tui.tune import best_trial
    from cifar_tui.workspace import Workspace

    assert best_trial(Workspace(home=home, data_root=Path(ws["data"])), "refused") is None  # no Optuna study either
    assert "refused" not in studies(ws) and '"not started"' not in cli(ws, "runs", "--json").stdout
    store = Store(home)
    try:  # not even rows no view shows
        assert store.conn.execute("SELECT count(*) FROM queue WHERE study='refused'").fetchone()[0] == 0
        assert store.conn.execute("SELECT count(*) FROM runs WHERE study='refused'").fetchone()[0] == 0
    finally:
        store.close()


def no_dir_but_runs(ws: dict) -> None:
    """Once every job ended: each run dir is a run `runs` lists (no dir left by a refused submission)."""
    home = Path(ws["home"])
    dirs = {p.name for p in home.iterdir() if p.is_dir() and p.name[0] != "."}
    listed = runs(ws)
    assert dirs == set(listed), dirs ^ set(listed)
    assert "refused" not in {r.get("study") for r in listed.values()}


def test_runs_and_study_workers_on_a_real_cluster(slurm, workspace):
    """Everything `--launcher slurm` promises, side by side (the module docstring says what and why)."""
    ws = workspace
    followed = Followed(ws)
    scenarios = [TimeLimit(ws, followed),  # first: its warning comes on slurmctld's timer
                 AutoSeedsWorkers(ws, slurm, followed), TuneWorkers(ws, slurm, followed), Sweep(ws, slurm, followed),
                 DistillationAndDdp(ws)]
    refusals = Once(lambda: True, lambda _: refused_submissions_leave_nothing(ws) or "checked")  # beside the looks
    deadline = time.monotonic() + TIMEOUT
    while True:
        status = {rid: r["status"] for rid, r in followed.look().items()}
        jobs = slurm.jobs()
        waiting = [type(s).__name__ for s in scenarios if not s.done(status, jobs)]
        if not waiting and refusals.done():
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{waiting or 'the refusals'} not done after {TIMEOUT}s: {dict(followed.statuses)}; "
                                 f"jobs {jobs}\n" + job_logs(ws))
        time.sleep(LOOK_EVERY_S)
    for s in scenarios:
        s.check()
    wait_until(lambda: not slurm.jobs(), 60, "every job to end (its task returns after the engine's end)", 0.2)
    no_dir_but_runs(ws)
