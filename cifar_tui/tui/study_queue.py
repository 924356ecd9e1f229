"""`studies.queue_plan` on the App's supervisor.

queue_plan asks a supervisor for `store`, `enqueue(...)` and `resume(run_id)`. New runs go straight
to the supervisor's queue; resumes are kept for the App, which resumes each one (the study's tab
shows it)."""
from __future__ import annotations

from typing import Sequence


class PlanQueue:
    def __init__(self, sup):
        self.sup = sup
        self.store = sup.store
        self.resumes: list[str] = []   # run ids the App resumes after queueing

    def enqueue(self, config: str, overrides: Sequence[str] = (), nproc: int = 1, *, cfg=None,
                study: str | None = None, group: str | None = None) -> int:
        return self.sup.enqueue(config, list(overrides), nproc, cfg=cfg, study=study, group=group)

    def resume(self, run_id: str) -> None:
        self.resumes.append(run_id)


def queued_summary(study: str, queued: dict) -> str:
    """What queue_plan did, in one line (a notification)."""
    resumed = len(queued["resumed"])
    done = len(queued["notes"]) - resumed
    return (f"study {study}: {len(queued['items'])} queued" + (f", {resumed} resumed" if resumed else "")
            + (f", {done} done or running already" if done else ""))
