"""`cifar-tui run NAME --set k=a,b --seeds auto --max-seeds N [--target-ci PP] [--vs GROUP] --launcher slurm
--workers W`: a `--seeds auto` study (cifar_tui/auto_seeds.py) run by W tasks of one SLURM job array, with
the machinery every study worker shares (cifar_tui/study_workers.py).

Each worker (`work`, pickled by submitit) reads the study from the store, as the command recorded it,
and follows its runs like the local CLI does (follow.follow_many), one run at a time. Whenever it has
none, it takes the next one under the study's lock: it reads the study's state from the store
(auto_seeds.study_state, counting as in flight every run another worker has queued, started, or is
training: its queue item, its lease, its row) and takes one unit of what auto_seeds.decide says: a
stopped or crashed run to resume, else the next (group, seed); it queues it before the lock is released,
so no other worker takes the same. It ends when decide says the study is done (every group resolved or
capped); while others' runs are in flight it waits, since their results may ask for more seeds.

A worker killed loses at most its current run: crashed (SIGKILL), or stopped with a checkpoint (scancel,
the time-limit warning: as Ctrl-C), it is resumed by the next free worker, or by the workers the command
submits when run again (it tops them up to W). The TUI's study tab and Studies screen read the store,
as for a study run on this host.
"""
from __future__ import annotations

import signal
from typing import Callable

from engine.config import ConfigError

from .auto_seeds import AutoSpec, Decision, decide, enqueue_run, plan_groups, recorded_study, study_state
from .study_workers import (STOP_SIGNALS, StudyLock, Submission, alive_workers, submit_workers, worker_name,
                            worker_supervisor)
from .workspace import Workspace


class AutoWorker:
    """What one worker does between runs (follow_many's `refill`): take the study's next unit under
    its lock, and say where the groups stand when that changes."""

    def __init__(self, sup, plan, spec: AutoSpec, lock: StudyLock, say: Callable[[str], None], nproc: int = 1):
        self.sup, self.plan, self.spec, self.lock, self.say, self.nproc = sup, plan, spec, lock, say, nproc
        self.labels = {g["group"]: g["label"] for g in plan_groups(plan)}
        self.unresumable: set[str] = set()      # resumes refused here (no checkpoint dir, ...): not tried again
        self.said: dict[str, str] = {}
        self.finished = False

    def refill(self) -> bool:
        """Take the next unit when this worker has no run; True while the study is not done (something
        taken, or other workers' runs in flight)."""
        if self.sup.children or self.sup.own_queued():
            return True
        with self.lock:
            state = study_state(self.sup.store, self.plan, starting=self.sup.starting())
            decision = decide(self.spec, state, 1)
            took = self._take(decision)
        self._report(decision)
        self.finished = decision.finished
        return took or any(g.pending for g in state)

    def _take(self, decision: Decision) -> bool:
        for run_id in decision.resume:  # a run a killed or stopped worker left
            if run_id in self.unresumable:
                continue
            status = self.sup.status(run_id)
            try:
                self.sup.resume(run_id)
            except ConfigError as exc:
                self.unresumable.add(run_id)
                self.say(f"{run_id} not resumed: {exc}")
                continue
            self.say(f"resuming {run_id} ({status})")
            return True
        if decision.start:
            group, seed = decision.start[0]
            enqueue_run(self.sup, self.plan, group, seed, self.nproc)
            self.say(f"{self.labels.get(group, group)}: seed {seed}")
            return True
        return False

    def _report(self, decision: Decision) -> None:
        for group, p in decision.groups.items():
            text = f"{p.state}: {p.why}" if p.why else p.state
            if self.said.get(group) != text:
                self.said[group] = text
                self.say(f"  {self.labels.get(group, group)}: {text}")

    def finish(self, reaped, code: int, end: dict | None) -> int:
        status = (end or {}).get("status") or ("refused" if reaped.refusal else f"exit {code}")
        best = (end or {}).get("best_acc")
        self.say(f"{reaped.run_id}: {status}" + (f", best test acc {best:.2f}" if best is not None else ""))
        return code


def work(ws: Workspace, study: str, nproc: int, index: int) -> int:  # noqa: ARG001 - index: the task's place
    """One worker: a SLURM array task (submitit pickles this function). 0 when the study is done,
    130 when stopped, 2 when the study cannot be read; else the first run's failure code."""
    from rich.console import Console

    from .follow import follow_many

    name = worker_name()
    console = Console(highlight=False, soft_wrap=True)

    def say(line: str) -> None:
        console.print(f"[{name}] {line}", markup=False)

    sup = worker_supervisor(ws)
    try:
        try:
            plan, spec = recorded_study(sup.store.study(study), study, ws.configs)
        except ConfigError as exc:
            say(f"study {study}: {exc}")
            return 2
        worker = AutoWorker(sup, plan, spec, StudyLock(ws, study), say, nproc)
        code = follow_many(sup, json_mode=False, console=console, finish=worker.finish, refill=worker.refill,
                           stop_signals=(signal.SIGINT, *STOP_SIGNALS))
        say("done: every group resolved or capped" if worker.finished else
            f"stopped (exit {code}); the study's command run again submits workers that continue it")
        return code
    finally:
        sup.close()


def submit_study(ws: Workspace, plan, spec: AutoSpec, record: dict, workers: int, launcher, *, nproc: int = 1,
                 command: str | None = None) -> Submission:
    """Record the study (before its workers read it) and submit as many workers as are missing for
    `workers` of it to be queued or running (none when it is done): one job array. ConfigError for
    another kind of study of that name; SubmissionRefused (one line) when sbatch refuses: then the
    study is as it was (a new one is not kept)."""
    store = ws.store()
    try:
        recorded = store.study(plan.study)
        if recorded is not None and recorded["kind"] != "sweep":
            raise ConfigError(f"--study {plan.study}: already a {recorded['kind']} study; choose another name")
        state = study_state(store, plan)
        earlier, alive = alive_workers((recorded or {}).get("spec") or {})
        finished = decide(spec, state, workers).finished
        missing = 0 if finished else workers - len(alive)
        spec_now = {**record, **spec.to_dict(), "launcher": "slurm", "nproc": nproc}
        store.save_study(plan.study, "sweep", ",".join(plan.names), {**spec_now, "workers": earlier}, command=command)
        try:
            job_ids = submit_workers(ws, launcher, work, (plan.study, nproc), missing, first_index=len(earlier),
                                     on_cpu=all(r.cfg.train.device == "cpu" for r in plan.runs))
        except ConfigError:
            if recorded is None:
                store.delete_study(plan.study)
            else:
                store.save_study(plan.study, recorded["kind"], recorded["config"], recorded["spec"],
                                 command=recorded.get("command"))
            raise
        if job_ids:
            store.save_study(plan.study, "sweep", ",".join(plan.names), {**spec_now, "workers": earlier + job_ids},
                             command=command)
    finally:
        store.close()
    return Submission(plan.study, recorded is not None, sum(len(g.done) for g in state), job_ids, alive, finished)


__all__ = ["AutoWorker", "submit_study", "work"]
