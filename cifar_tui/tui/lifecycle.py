"""The run lifecycle as the TUI drives it: what the panes ask (start, stop, resume, delete, cancel)
goes to the run supervisor (cifar_tui.supervisor), and what the supervisor answers goes to the tabs,
the lists and notifications.

`RunLifecycle` is an object the App owns (`app.lifecycle`, made on mount) and routes the panes'
messages to. It holds the supervisor calls and what follows them; the supervisor holds the logic
(the queue, the GPU leases every launcher on the machine shares, reaping, statuses). It reaches the
App only through `RunDisplay`, the few things a lifecycle outcome shows on (the App is one); nothing
here imports Textual.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from engine.config import ConfigError
from engine.record.status import CRASHED, LIVE

from ..auto_seeds import AutoSpec
from ..launch import resume_point
from ..studies import queue_plan
from ..supervisor import Refused, Started
from .study_queue import PlanQueue, queued_summary
from .support import short_run

if TYPE_CHECKING:
    from ..supervisor import Supervisor
    from ..sweep import Plan
    from .auto_driver import AutoDriver
    from .panes.run_view import RunView
    from .runs_index import Changes, RunsIndex
    from .screens.launch import LaunchPlan


class RunDisplay(Protocol):
    """Where the lifecycle's outcomes show: the open run tabs, the study tabs, the Runs list, the
    footer's keys and notifications."""

    views: Mapping[str, RunView]  # run id -> the view of its open tab

    def notify(self, message: str, *, title: str = "", severity: str = "information",
               timeout: float | None = None) -> None: ...

    def refresh_store(self, force: bool = False) -> Changes:
        """Read what changed in the store and show it (force: after our own writes, which do not move
        our connection's data_version)."""

    async def open_run(self, run_id: str, activate: bool = True) -> RunView: ...

    async def close_run(self, run_id: str) -> None: ...

    async def open_study(self, study: str, activate: bool = True, *, planned: list[str] | None = None) -> None:
        """The study's tab (a study's runs get no tab of their own)."""

    def show_label(self, run_id: str) -> None:
        """The run's tab label follows its view's status (its Runs row and the keys do not, yet)."""

    def show_status(self, run_id: str) -> None:
        """The run's status changed: its tab label, its Runs row and the footer's keys follow."""

    def show_blocked(self, reason: str | None) -> None:
        """Why the queue's next item waits (None: it does not)."""

    def marks_spent(self) -> None:
        """The experiments marked for a launch were launched: their marks go."""


class RunLifecycle:
    def __init__(self, sup: Supervisor, index: RunsIndex, display: RunDisplay, auto: AutoDriver):
        self.sup = sup
        self.index = index
        self.display = display
        self.auto = auto
        self.activate: set[int] = set()        # queue ids whose tab opens in front when they start
        self.resume_pending: set[str] = set()  # runs to resume once their exiting process is gone

    def notify(self, message: str, **kwargs) -> None:
        self.display.notify(message, **kwargs)

    async def reattach(self) -> None:
        """On start: the runs that crashed while no TUI watched are reported, and every live run gets
        its tab back (a study's runs: their study's tab)."""
        newest = self.index.newest_first()
        crashed = [rid for rid in newest if self.index.runs[rid]["status"] == CRASHED]
        if crashed:
            runs = "1 run" if len(crashed) == 1 else f"{len(crashed)} runs"
            self.notify(f"{runs} crashed (process gone): {', '.join(map(short_run, crashed[:3]))}"
                        f"{' …' if len(crashed) > 3 else ''}. Resume from the Runs tab with r.", severity="warning",
                        timeout=8)
        for rid in newest:
            row = self.index.runs.get(rid)
            if row is not None and row["status"] in LIVE:
                if row.get("study"):
                    await self.display.open_study(row["study"], False)
                else:
                    await self.display.open_run(rid, False)

    async def tick(self) -> None:
        """Once a second: exited engines reaped, the auto studies decided, the store's changes read,
        waiting resumes and the queue started."""
        self.reap_engines()
        if self.auto.tick():
            self.display.refresh_store(force=True)
        self.display.refresh_store()
        await self.resume_exited()
        await self.pump_queue()

    # ------------------------------------------------------------------ processes
    def reap_engines(self) -> None:
        """Engines this app started that exited: one that never started says why, in its tab and in
        the Runs tab (the refused item, listed until dismissed)."""
        for reaped in self.sup.reap():
            if reaped.refusal:
                self.display.refresh_store(force=True)  # the refused item, as the supervisor marked it
                self.notify(f"{short_run(reaped.run_id)} did not start (its tab and the Runs tab say why; l retries "
                            "with changed settings)", severity="error", timeout=8)
                view = self.display.views.get(reaped.run_id)
                if view is not None:
                    view.refused(reaped.refusal, self.refused_item(reaped.item_id))
            self.display.show_status(reaped.run_id)

    def starting_runs(self) -> list[str]:
        """Runs this app started whose engine has not written its store row yet (seconds: torch, data)."""
        return [rid for rid, child in self.sup.children.items()
                if rid not in self.index.runs and child.launched.process.poll() is None]

    def live_runs(self) -> list[str]:
        """Runs with a live process (this app's engines and every other launcher's), less those whose
        `end` event was read already (done, while their process exits)."""
        self.display.refresh_store()
        ended = {rid for rid, view in self.display.views.items() if view.state.end is not None}
        running = self.index.running()
        live = [rid for rid in self.index.newest_first() if rid in running and rid not in ended]
        live += [rid for rid, child in self.sup.children.items()
                 if child.launched.process.poll() is None and rid not in live and rid not in ended]
        return live

    def gpu_holders(self) -> dict[str, str]:
        """GPU id -> the run holding its lease (any launcher's: the store's leases)."""
        return {lease["slot"].split(":", 1)[1]: lease["run_id"] for lease in self.sup.leases.held()
                if lease["slot"].startswith("gpu:")}

    # ------------------------------------------------------------------ refused launches
    def refused_item(self, item_id: int) -> dict | None:
        """The queue item of a launch refused before it started (its settings, its error)."""
        return next((q for q in self.index.refused if q["id"] == item_id), None)

    def dismiss_refused(self, item_id: int) -> None:
        """A refused launch put away: no longer listed (its tab, if open, stays until closed)."""
        self.sup.dismiss(item_id)
        self.display.refresh_store(force=True)

    async def retried(self, item: dict) -> None:
        """A refused launch launched again (the launch form with its settings): what it launched
        replaces it, so its item and its tab go."""
        self.dismiss_refused(item["id"])
        if item.get("run_id") in self.display.views:
            await self.display.close_run(item["run_id"])

    # ------------------------------------------------------------------ status
    def run_status(self, run_id: str) -> str:
        """What the app shows for a run: its view's status (the supervisor's, kept current by the
        events it reads), else the supervisor's."""
        view = self.display.views.get(run_id)
        if view is not None and view.loaded:
            return view.status
        return self.sup.status(run_id)

    def shown_status(self, run_id: str, row: dict) -> str:
        """A listed run's status: the store row's (effective) status, unless the supervisor knows more
        (a tab, an engine it started, a live run it may be stopping, a queued resume)."""
        if (run_id in self.display.views or run_id in self.sup.children or row["status"] in LIVE
                or any(q.get("resume_of") == run_id for q in self.index.queue)):
            return self.run_status(run_id)
        return row["status"]

    def _status_changed(self, run_id: str) -> None:
        """After a request to the supervisor: the run's tab and row show its new status now."""
        view = self.display.views.get(run_id)
        if view is not None:
            view.set_supervised(self.sup.status(run_id))
        self.display.show_status(run_id)

    # ------------------------------------------------------------------ queue
    async def pump_queue(self) -> list[int]:
        """Start queued items while GPUs and slots are free (the supervisor's leases: every TUI and
        CLI on the machine counts). Returns the queue ids started."""
        if not self.index.queue:
            self.display.show_blocked(None)
            return []
        study_of = {q["id"]: q.get("study") or (self.index.runs.get(q.get("resume_of") or "") or {}).get("study")
                    for q in self.index.queue}
        pumped = self.sup.pump()
        self.display.show_blocked(self.sup.blocked)
        for out in pumped:
            if isinstance(out, Refused):
                self.notify(f"queued {out.config} cannot start: {out.reason}", severity="error", timeout=10)
                continue
            activate = out.item_id in self.activate
            self.activate.discard(out.item_id)
            study = study_of.get(out.item_id)
            if study and out.run_id not in self.display.views:  # a study's run: its study's tab, no tab of its own
                await self.display.open_study(study, activate)
                continue
            view = await self.display.open_run(out.run_id, activate)
            view.set_supervised(self.sup.status(out.run_id))
            self.display.show_label(out.run_id)  # the tab; its Runs row follows the view (RunStatusChanged)
            self.notify(f"{'resumed' if out.resumed else 'started'} {out.run_id} on {out.label}", title="Launched",
                        timeout=4)
        if pumped:
            self.display.refresh_store(force=True)
        return [out.item_id for out in pumped if isinstance(out, Started)]

    async def queue_plan(self, plan: LaunchPlan, activate: bool = True) -> list[int]:
        """Put the launch form's plan in the persistent queue and start what the slots allow."""
        try:
            ids = [self.sup.enqueue(name, plan.overrides, plan.nproc) for name in plan.names]
        except ConfigError as exc:  # more processes than GPUs (the form checks it first)
            self.notify(str(exc), severity="error", timeout=10)
            return []
        self._queued(ids, plan.names, activate)
        started = await self.pump_queue()
        waiting = [i for i in ids if i not in started]
        if waiting:
            self.notify(f"{len(waiting)} queued: starts when a slot frees ({self.sup.blocked or 'next in line'})",
                        title="Queued", timeout=5)
        return ids

    async def queue_study(self, plan: Plan, *, spec: dict, nproc: int, command: str | None) -> None:
        """A study from the launch form: recorded, and what it still lacks queued (each run with its
        study and group) or resumed, by `studies.queue_plan` on the supervisor; a `--seeds auto` one
        is decided by the auto driver from now on. Its tab opens (one tab for the study, none per run)."""
        auto = AutoSpec.from_dict(spec)
        if auto is not None:
            recorded = self.sup.store.study(plan.study)
            if recorded is not None and recorded["kind"] != "sweep":
                self.notify(f"--study {plan.study}: already a {recorded['kind']} study; choose another name",
                            severity="error", timeout=10)
                return
            self.sup.store.save_study(plan.study, "sweep", ",".join(plan.names), spec, command=command)
            self.auto.add(plan, auto, nproc)
            self._queued([], plan.names, activate=False)
            await self.display.open_study(plan.study, True, planned=plan.groups())
            self.auto.tick()
            self.display.refresh_store(force=True)
            await self.pump_queue()
            self.notify(f"study {plan.study}: seeds auto, {len(plan.groups())} groups", title="Study", timeout=6)
            return
        target = PlanQueue(self.sup)
        try:
            queued = queue_plan(target, plan, kind="sweep", spec=spec, nproc=nproc, command=command)
        except ConfigError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self._queued(list(queued["items"]), plan.names, activate=False)
        await self.display.open_study(plan.study, True, planned=plan.groups())
        for run_id in target.resumes:
            try:
                self.sup.resume(run_id)  # its study's tab shows it; no tab of its own
            except ConfigError as exc:
                self.notify(str(exc), severity="warning", timeout=8)
        self.display.refresh_store(force=True)
        await self.pump_queue()
        self.notify(queued_summary(plan.study, queued), title="Study", timeout=6)

    def _queued(self, ids: list[int], names: list[str], activate: bool) -> None:
        """After queueing from the form: the first run's tab comes to the front when it starts, the
        marks that chose the experiments are spent, and the lists show the new items."""
        if activate and ids:
            self.activate.add(ids[0])
        if len(names) > 1:
            self.display.marks_spent()
        self.display.refresh_store(force=True)

    def cancel_queue_item(self, item_id: int) -> None:
        self.sup.cancel(item_id)
        self.display.refresh_store(force=True)
        self.notify(f"removed #{item_id} from the queue")

    # ------------------------------------------------------------------ stop / resume / delete
    def stop_run(self, run_id: str) -> bool:
        status = self.run_status(run_id)
        if status not in LIVE:
            self.notify(f"{short_run(run_id)} is not running ({status})", severity="warning")
            return False
        try:
            self.sup.stop(run_id)
        except ConfigError as exc:  # not live (any more), its process gone
            self.notify(str(exc), severity="warning")
            return False
        self._status_changed(run_id)
        self.notify(f"stopping {short_run(run_id)}: it writes a checkpoint, then ends", title="Stop", timeout=4)
        return True

    async def resume_run(self, run_id: str) -> bool:
        """Queue the run's continuation from its last checkpoint (same run id, same tab); it starts
        at once when a slot and its GPUs are free."""
        view = self.display.views.get(run_id)
        if view is not None and view.state.end is not None and self.sup.status(run_id) in LIVE:
            # its `end` is written but its process is still exiting (and holds its GPUs): once it is gone
            self.resume_pending.add(run_id)
            self.notify(f"{short_run(run_id)} resumes once its process has exited", title="Resume", timeout=4)
            return True
        try:
            item_id = self.sup.resume(run_id)
        except ConfigError as exc:  # live, queued already, not resumable, its GPUs not visible
            self.notify(str(exc), severity="warning", timeout=10)
            return False
        self.activate.add(item_id)
        self.display.refresh_store(force=True)
        started = await self.pump_queue()
        if item_id not in started:
            await self.display.open_run(run_id, True)
            self.notify(f"{short_run(run_id)} resumes when a slot frees ({self.sup.blocked or 'queued'})",
                        title="Resume", timeout=6)
        else:
            self.notify(f"resuming {short_run(run_id)} {resume_point(self.sup.ws.home / run_id)}", title="Resume",
                        timeout=6)
        self._status_changed(run_id)
        return True

    async def resume_exited(self) -> None:
        """Resumes asked for while the run's process was still exiting, now that it is gone."""
        for run_id in list(self.resume_pending):
            if self.sup.status(run_id) not in LIVE:
                self.resume_pending.discard(run_id)
                await self.resume_run(run_id)

    def delete_refusal(self, run_id: str) -> str | None:
        """Why the run cannot be deleted now (None: it can, once confirmed)."""
        status = self.run_status(run_id)
        return f"{short_run(run_id)} is {status}: stop it first (s)" if status in LIVE else None

    async def delete_run(self, run_id: str) -> None:
        try:
            self.sup.delete(run_id)
        except ConfigError as exc:  # it came alive meanwhile
            self.notify(str(exc), severity="error")
            return
        await self.display.close_run(run_id)
        self.display.refresh_store(force=True)
        self.notify(f"deleted {run_id}", title="Delete", timeout=4)
