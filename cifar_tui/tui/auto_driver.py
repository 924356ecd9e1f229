"""`--seeds auto` studies decided from this TUI: once a second each one's state is read from the
store and cifar_tui.auto_seeds.decide says what to queue (on the shared queue: any TUI on the
machine may start it) and what to resume; its tab shows where each group stands. The decision is
the store's, so closing the TUI loses nothing: `a` in the study's tab (or the CLI command
recorded with the study) continues it. It decides under the study's lock (study_workers.StudyLock),
like the CLI and SLURM workers, taken only when free: a tick that finds it held waits for the next."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.config import ConfigError

from ..auto_seeds import AutoSpec, decide, enqueue_run, recorded_study, study_state
from ..study_workers import StudyLock

if TYPE_CHECKING:
    from ..sweep import Plan
    from .app import CifarTUI


@dataclass
class Driven:
    plan: Plan
    spec: AutoSpec
    lock: StudyLock
    nproc: int = 1


class AutoDriver:
    def __init__(self, app: CifarTUI):
        self.app = app
        self.studies: dict[str, Driven] = {}
        self._plans: dict[str, Plan | None] = {}   # auto studies shown, not driven here (None: unreadable)

    def add(self, plan: Plan, spec: AutoSpec, nproc: int = 1) -> None:
        self.studies[plan.study] = Driven(plan, spec, StudyLock(self.app.ws, plan.study), nproc)

    def continue_recorded(self, study: str) -> str | None:
        """Drive a recorded auto study again (its plan made from what it recorded); an error in words."""
        try:
            plan, auto = recorded_study(self.app.store.study(study), study, self.app.ws.configs)
        except ConfigError as exc:
            return str(exc)
        self.add(plan, auto)
        return None

    def tick(self) -> bool:
        """Queue what each driven study needs now; True when something was queued or resumed."""
        sup, moved = self.app.sup, False
        for study, d in list(self.studies.items()):
            if not d.lock.try_acquire():
                continue  # another driver is deciding: next tick
            try:
                state = study_state(sup.store, d.plan, starting=sup.starting())
                pending = sum(len(g.pending) for g in state)
                decision = decide(d.spec, state, max(0, sup.max_parallel - pending))
                for run_id in decision.resume:
                    try:
                        sup.resume(run_id)
                        moved = True
                    except ConfigError as exc:
                        self.app.notify(f"{run_id} not resumed: {exc}", severity="warning", timeout=6)
                for group, seed in decision.start:
                    try:
                        enqueue_run(sup, d.plan, group, seed, d.nproc)
                        moved = True
                    except ConfigError as exc:
                        self.app.notify(str(exc), severity="error", timeout=10)
                        decision.finished = True
                        break
            finally:
                d.lock.release()
            view = self.app.study_tabs.views.get(study)
            if view is not None:
                view.driven = not decision.finished
                view.set_plans(decision.groups)
            if decision.finished:
                del self.studies[study]
                self.app.notify(f"study {study}: every group resolved or capped", title="Seeds auto", timeout=8)
        self.show_others()
        return moved

    def show_others(self) -> None:
        """The open tab of an auto study driven elsewhere (a CLI, SLURM workers) shows where its groups
        stand, as its drivers decide it from the store (read here; nothing queued), and its workers."""
        for study, view in list(self.app.study_tabs.views.items()):
            if view.auto is None or study in self.studies:
                continue
            recorded = self.app.store.study(study)
            if study not in self._plans:
                try:
                    self._plans[study] = recorded_study(recorded, study, self.app.ws.configs)[0]
                except ConfigError:
                    self._plans[study] = None
            plan = self._plans[study]
            if plan is None:
                continue
            view.set_slurm_workers(((recorded or {}).get("spec") or {}).get("workers") or [])
            state = study_state(self.app.store, plan, starting=self.app.sup.starting())
            view.set_plans(decide(view.auto, state, 0).groups)
