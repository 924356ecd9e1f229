"""`cifar-tui tune NAME ... --launcher slurm --workers N`: the search as N tasks of one SLURM job array.

Each task is a worker (`work`, pickled by submitit): the Tuner of cifar_tui/tune.py inside the job,
one trial at a time, its engine a child process of the task (what every kind of study worker shares,
its supervisor, lock, name, stop signals and submission, is cifar_tui/study_workers.py). Every worker
shares the study's Optuna storage (runs/optuna.journal: a file log with an NFS-safe lock) and the
workspace's store.

A worker takes work under the study's lock (study_workers.StudyLock), in this order:

1. a trial another worker left: RUNNING, its run neither alive, queued nor starting (no lease), and
   no sign of life for CLAIM_GRACE_S (its claim, its run's last heartbeat or end): the crashed run
   of a killed worker, the stopped run of a cancelled one. Its run is resumed from its last
   checkpoint (a trial its pruner had already condemned is told pruned); a trial whose run never
   started, or cannot be resumed, is told failed and its settings enqueued again (re-run);
2. else a new trial, while the study has fewer finished + running trials than --trials.

A worker with nothing to take ends (once no trial whose run is gone is still within its claim's
grace); the command run again submits workers that take up what is left.
Pruning works across workers: each worker's pruner reads every trial's intermediate values from the
shared storage. scancel (SIGTERM) and SLURM's warning before the time limit (SIGUSR2) stop the
worker's run with a checkpoint; its trial stays RUNNING for the next worker.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from engine.config import ConfigError, load_config
from engine.record.status import LIVE, QUEUED, STARTING

from .study_workers import (StudyLock, Submission, alive_workers, on_stop_signals, submit_workers, worker_name,
                            worker_supervisor)
from .tune import TuneSpec, Tuner, parse_param
from .tune_storage import open_storage as _storage
from .workspace import Workspace

CLAIM_GRACE_S = 10.0               # a trial claimed this recently is its worker's, whatever its run says
WORKER_ATTR, CLAIMED_ATTR = "worker", "claimed_at"
SEED_STRIDE = 1000                 # worker i samples with --sampler-seed + (i + 1) * SEED_STRIDE


def spec_from_dict(d: dict) -> TuneSpec:
    return TuneSpec(config=d["config"], params=[parse_param(p) for p in d["params"]], trials=int(d["trials"]),
                    study=d["study"], prune=d.get("prune") or "none", prune_warmup=int(d.get("prune_warmup") or 0),
                    prune_startup=int(d.get("prune_startup", 5)), overrides=list(d.get("overrides") or []),
                    sampler_seed=d.get("sampler_seed"), nproc=int(d.get("nproc") or 1))


class WorkerTuner(Tuner):
    """A Tuner that shares its study with other workers: one trial at a time, taken as the module
    docstring says; ends when there is nothing to take."""

    def __init__(self, ws: Workspace, sup, spec: TuneSpec, say: Callable[[str], None], name: str):
        super().__init__(ws, sup, spec, say)
        self.parallel = 1
        self.name = name
        self.lock = StudyLock(ws, spec.study)
        self._nothing_left = False

    def _recover(self) -> None:
        """Nothing at start: trials left RUNNING are taken one at a time, when this worker is free."""

    def _search_done(self) -> bool:
        return self._nothing_left

    def _take_work(self) -> bool:
        from optuna.trial import TrialState

        with self.lock:
            while True:
                left, unsure = self._left_trials()
                if not left:
                    break
                self._claim(left[0]._trial_id)
                if self._adopt(left[0]):
                    self.say(f"trial {left[0].number}: taken over from worker {left[0].user_attrs.get(WORKER_ATTR)}")
                    return True
                self.study.enqueue_trial(dict(left[0].params), user_attrs={"rerun_of": left[0].number})  # re-run it
            finished = self._finished()
            running = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if finished + running >= self.spec.trials:
                # done, unless a trial whose run is not alive may soon be ours to take (its claim is recent)
                self._nothing_left = not unsure
                return False
            self._start_trial()
            self._claim(max(self.watched.values(), key=lambda w: w.trial.number).trial._trial_id)
            return True

    def _claim(self, trial_id: int) -> None:
        self.storage.set_trial_user_attr(trial_id, WORKER_ATTR, self.name)
        self.storage.set_trial_user_attr(trial_id, CLAIMED_ATTR, time.time())

    def _left_trials(self) -> tuple[list, bool]:
        """RUNNING trials no live worker follows (see the module docstring), and whether others may
        turn out so: their run is not alive, but its last sign of life (the claim, a heartbeat, its
        end: a worker about to tell the result) is recent."""
        from optuna.trial import TrialState

        now, left, unsure = time.time(), [], False
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in self.watched:
                continue
            signs = [t.user_attrs.get(CLAIMED_ATTR) or (t.datetime_start.timestamp() if t.datetime_start else 0)]
            run_id = t.user_attrs.get("run_id")
            if run_id:
                status = self.sup.status(run_id)
                if status in LIVE or status in (QUEUED, STARTING) or self.sup.leases.held_by(run_id):
                    continue
                row = self.sup.store.run(run_id) or {}
                signs += [row.get("heartbeat_at") or 0, row.get("ended_at") or 0]
            if now - max(signs) < CLAIM_GRACE_S:
                unsure = True
            else:
                left.append(t)
        return left, unsure


def work(ws: Workspace, spec: dict, index: int) -> int:
    """One worker: a SLURM array task (submitit pickles this function). Returns 0 when it found
    nothing more to take, 130 when stopped, 1 when trials kept failing."""
    tune_spec = spec_from_dict(spec)
    if tune_spec.sampler_seed is not None:  # workers must not all sample the same settings
        tune_spec = replace(tune_spec, sampler_seed=tune_spec.sampler_seed + (index + 1) * SEED_STRIDE)
    name = worker_name()
    sup = worker_supervisor(ws)
    try:
        tuner = WorkerTuner(ws, sup, tune_spec, lambda line: print(f"[{name}] {line}", flush=True), name)
        on_stop_signals(tuner._interrupt)  # scancel, the time-limit warning: as Ctrl-C
        code = tuner.run()
        print(f"[{name}] done: the study has {tuner._finished()} finished trials of {tune_spec.trials}", flush=True)
        return code
    finally:
        sup.close()


# ---------------------------------------------------------------- submitting


def submit_search(ws: Workspace, spec: TuneSpec, workers: int, launcher, *, command: str | None = None) -> Submission:
    """Check the search, create (or continue) its study, and submit as many workers as are missing
    for `workers` to be queued or running: one job array. ConfigError for bad input (nothing
    submitted); SubmissionRefused (one line) when sbatch refuses."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec.check(ws)
    storage = _storage(ws)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    study = optuna.create_study(study_name=spec.study, storage=storage, direction="maximize", load_if_exists=True)
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    store = ws.store()
    try:
        earlier, alive = alive_workers((store.study(spec.study) or {}).get("spec") or {})
        missing = workers - len(alive) if finished < spec.trials else 0
        on_cpu = load_config(spec.config, spec.overrides, ws.configs).train.device == "cpu"
        try:
            job_ids = submit_workers(ws, launcher, work, ({**spec.to_dict(), "study": spec.study},), missing,
                                     first_index=len(earlier), on_cpu=on_cpu)
        except ConfigError:  # sbatch refused: a study made just now goes too (nothing left)
            if spec.study not in existing:
                optuna.delete_study(study_name=spec.study, storage=storage)
            raise
        store.save_study(spec.study, "tune", spec.config,
                         {**spec.to_dict(), "launcher": "slurm", "workers": earlier + job_ids}, command=command)
    finally:
        store.close()
    return Submission(spec.study, spec.study in existing, finished, job_ids, alive)


__all__ = ["CLAIM_GRACE_S", "Submission", "WorkerTuner", "submit_search", "work"]
