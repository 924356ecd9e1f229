"""`--seeds auto` studies decided from this TUI: once a second each one's state is read from the
store and cifar_tui.auto_seeds.decide says what to queue (on the shared queue: any TUI on the
machine may start it) and what to resume; its tab shows where each group stands. The decision is
the store's, so closing the TUI loses nothing: `a` in the study's tab (or the CLI command
recorded with the study) continues it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.config import ConfigError

from ..auto_seeds import AutoSpec, decide, planned_run, study_state

if TYPE_CHECKING:
    from ..sweep import Plan
    from .app import CifarTUI


@dataclass
class Driven:
    plan: Plan
    spec: AutoSpec
    nproc: int = 1


class AutoDriver:
    def __init__(self, app: CifarTUI):
        self.app = app
        self.studies: dict[str, Driven] = {}

    def add(self, plan: Plan, spec: AutoSpec, nproc: int = 1) -> None:
        self.studies[plan.study] = Driven(plan, spec, nproc)

    def continue_recorded(self, study: str) -> str | None:
        """Drive a recorded auto study again (its plan made from what it recorded); an error in words."""
        from ..sweep import make_plan

        recorded = self.app.store.study(study) or {}
        spec = recorded.get("spec") or {}
        auto = AutoSpec.from_dict(spec)
        if auto is None:
            return f"{study} is not a --seeds auto study"
        try:
            plan = make_plan(spec.get("names") or [], spec.get("sets") or [], 1, extra=spec.get("extra") or [],
                             configs_dir=self.app.ws.configs, study=study)
        except ConfigError as exc:
            return str(exc)
        self.add(plan, auto)
        return None

    def tick(self) -> bool:
        """Queue what each driven study needs now; True when something was queued or resumed."""
        sup, moved = self.app.sup, False
        for study, d in list(self.studies.items()):
            state = study_state(sup.store, d.plan, starting=sup.children)
            pending = sum(len(g.pending) for g in state)
            decision = decide(d.spec, state, max(0, sup.max_parallel - pending))
            for run_id in decision.resume:
                try:
                    sup.resume(run_id)
                    moved = True
                except ConfigError as exc:
                    self.app.notify(f"{run_id} not resumed: {exc}", severity="warning", timeout=6)
            for group, seed in decision.start:
                overrides, cfg = planned_run(d.plan, group, seed)
                config = next(r.config for r in d.plan.runs if r.group == group)
                try:
                    sup.enqueue(config, overrides, d.nproc, cfg=cfg, study=study, group=group)
                    moved = True
                except ConfigError as exc:
                    self.app.notify(str(exc), severity="error", timeout=10)
                    decision.finished = True
                    break
            view = self.app.study_tabs.views.get(study)
            if view is not None:
                view.driven = not decision.finished
                view.set_plans(decision.groups)
            if decision.finished:
                del self.studies[study]
                self.app.notify(f"study {study}: every group resolved or capped", title="Seeds auto", timeout=8)
        return moved
