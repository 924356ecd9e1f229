"""`studies.queue_plan` on the App's run lifecycle object.

queue_plan asks a supervisor for `store`, `enqueue(config, overrides, nproc, *, cfg, study, group)
-> item id` and `resume(run_id)`. RunControl queues by config names and resumes at once (opening
the run's tab is the App's part), so this keeps the resumes for the App to do after queueing.
Once the lifecycle object is the Supervisor itself, queue_plan can be given it directly.
"""
from __future__ import annotations

from typing import Sequence


class PlanQueue:
    def __init__(self, control):
        self.control = control
        self.store = control.store
        self.resumes: list[str] = []   # run ids the App resumes after queueing

    def enqueue(self, config: str, overrides: Sequence[str] = (), nproc: int = 1, *, cfg=None,
                study: str | None = None, group: str | None = None) -> int:
        return self.control.enqueue([config], list(overrides), nproc, study=study, group=group)[0]

    def resume(self, run_id: str) -> None:
        self.resumes.append(run_id)


def queued_summary(study: str, queued: dict) -> str:
    """What queue_plan did, in one line (a notification)."""
    resumed = len(queued["resumed"])
    done = len(queued["notes"]) - resumed
    return (f"study {study}: {len(queued['items'])} queued" + (f", {resumed} resumed" if resumed else "")
            + (f", {done} done or running already" if done else ""))
