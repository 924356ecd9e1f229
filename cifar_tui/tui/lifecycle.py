"""The run lifecycle as the App drives it: what the panes ask (start, stop, resume, delete, cancel)
goes to the run supervisor (cifar_tui.supervisor), and what the supervisor answers goes to the tabs,
the lists and notifications. A mixin of the App (it uses the App's views, panes and notify); the
supervisor holds the logic: the queue, the GPU leases every launcher on the machine shares,
reaping and statuses.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.config import ConfigError
from engine.record.status import LIVE

from ..auto_seeds import AutoSpec
from ..launch import resume_point
from ..studies import queue_plan
from ..supervisor import Refused, Started
from . import messages as msg
from .screens.launch import LaunchPlan, LaunchScreen
from .study_queue import PlanQueue, queued_summary
from .support import short_run

if TYPE_CHECKING:
    from ..sweep import Plan
    from .app import CifarTUI


class Lifecycle:
    """Mixed into CifarTUI."""

    # ------------------------------------------------------------------ processes
    def reap_engines(self: CifarTUI) -> None:
        """Engines this app started that exited: one that never started says why, in its tab and in
        the Runs tab (the refused item, listed until dismissed)."""
        for reaped in self.sup.reap():
            if reaped.refusal:
                self.refresh_store(force=True)  # the refused item, as the supervisor marked it
                item = next((q for q in self.index.refused if q["id"] == reaped.item_id), None)
                self.notify(f"{short_run(reaped.run_id)} did not start (its tab and the Runs tab say why; l retries "
                            "with changed settings)", severity="error", timeout=8)
                view = self.views.get(reaped.run_id)
                if view is not None:
                    view.refused(reaped.refusal, item)
                    self.run_tabs.relabel(reaped.run_id)
            self.runs_pane.status_changed(reaped.run_id)

    # ------------------------------------------------------------------ refused launches
    def on_dismiss_refused(self: CifarTUI, event: msg.DismissRefused) -> None:
        self.dismiss_refused(event.item_id)

    def dismiss_refused(self: CifarTUI, item_id: int) -> None:
        """A refused launch put away: no longer listed (its tab, if open, stays until closed)."""
        self.sup.dismiss(item_id)
        self.refresh_store(force=True)  # our own writes do not move our connection's data_version

    def on_retry_launch(self: CifarTUI, event: msg.RetryLaunch) -> None:
        """The launch form again, with the refused launch's settings to change; what it launches
        replaces the refused item (and its tab)."""
        item = next((q for q in self.index.refused if q["id"] == event.item_id), {})
        form = LaunchScreen([event.config], self.ws.configs, self.ws.data_root, gpus=len(self.sup.gpus),
                            overrides=event.overrides, note=item.get("error"), data=self.last_data())

        async def done(plan: LaunchPlan | None) -> None:
            if plan is not None:
                await self.queue_plan(plan)
            if form.launched:
                self.dismiss_refused(event.item_id)
                if item.get("run_id") in self.views:
                    await self.run_tabs.close(item["run_id"])

        self.push_screen(form, done)

    # ------------------------------------------------------------------ status
    def run_status(self: CifarTUI, run_id: str) -> str:
        """What the app shows for a run: its view's status (the supervisor's, kept current by the
        events it reads), else the supervisor's."""
        view = self.views.get(run_id)
        if view is not None and view.loaded:
            return view.status
        return self.sup.status(run_id)

    def shown_status(self: CifarTUI, run_id: str, row: dict) -> str:
        """A listed run's status: the store row's (effective) status, unless the supervisor knows more
        (a tab, an engine it started, a live run it may be stopping, a queued resume)."""
        if (run_id in self.views or run_id in self.sup.children or row["status"] in LIVE
                or any(q.get("resume_of") == run_id for q in self.index.queue)):
            return self.run_status(run_id)
        return row["status"]

    def live_runs(self: CifarTUI) -> list[str]:
        """Runs with a live process (this app's engines and every other launcher's), less those whose
        `end` event was read already (done, while their process exits)."""
        self.refresh_store()
        ended, running = self.run_tabs.ended(), self.index.running()
        live = [rid for rid in self.index.newest_first() if rid in running and rid not in ended]
        live += [rid for rid, child in self.sup.children.items()
                 if child.launched.process.poll() is None and rid not in live and rid not in ended]
        return live

    # ------------------------------------------------------------------ queue
    async def pump_queue(self: CifarTUI) -> list[int]:
        """Start queued items while GPUs and slots are free (the supervisor's leases: every TUI and
        CLI on the machine counts). Returns the queue ids started."""
        if not self.index.queue:
            self.runs_pane.set_blocked(None)
            return []
        study_of = {q["id"]: q.get("study") or (self.index.runs.get(q.get("resume_of") or "") or {}).get("study")
                    for q in self.index.queue}
        pumped = self.sup.pump()
        self.runs_pane.set_blocked(self.sup.blocked)
        for out in pumped:
            if isinstance(out, Refused):
                self.notify(f"queued {out.config} cannot start: {out.reason}", severity="error", timeout=10)
                continue
            activate = out.item_id in self._activate
            self._activate.discard(out.item_id)
            study = study_of.get(out.item_id)
            if study and out.run_id not in self.views:  # a study's run: its study's tab, not a tab of its own
                await self.study_tabs.open(study, activate)
                continue
            view = await self.open_run(out.run_id, activate)
            view.set_supervised(self.sup.status(out.run_id))
            self.run_tabs.relabel(out.run_id)
            self.notify(f"{'resumed' if out.resumed else 'started'} {out.run_id} on {out.label}", title="Launched",
                        timeout=4)
        if pumped:
            self.refresh_store(force=True)
        return [out.item_id for out in pumped if isinstance(out, Started)]

    async def queue_plan(self: CifarTUI, plan: LaunchPlan, activate: bool = True) -> list[int]:
        """Put the plan's experiments in the persistent queue and start what the slots allow."""
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

    async def queue_study(self: CifarTUI, plan: Plan, *, spec: dict, nproc: int, command: str | None) -> None:
        """A study from the launch form: recorded, and what it still lacks queued (each run with its
        study and group) or resumed, by `studies.queue_plan` on the supervisor; a `--seeds auto` one
        is decided by the auto driver from now on. Its tab opens (one tab for the study, none per run)."""
        auto = AutoSpec.from_dict(spec)
        if auto is not None:
            recorded = self.store.study(plan.study)
            if recorded is not None and recorded["kind"] != "sweep":
                self.notify(f"--study {plan.study}: already a {recorded['kind']} study; choose another name",
                            severity="error", timeout=10)
                return
            self.sup.store.save_study(plan.study, "sweep", ",".join(plan.names), spec, command=command)
            self.auto_driver.add(plan, auto, nproc)
            self._queued([], plan.names, activate=False)
            await self.study_tabs.open(plan.study, True, planned=plan.groups())
            self.auto_driver.tick()
            self.refresh_store(force=True)
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
        await self.study_tabs.open(plan.study, True, planned=plan.groups())
        for run_id in target.resumes:
            try:
                self.sup.resume(run_id)  # its study's tab shows it; no tab of its own
            except ConfigError as exc:
                self.notify(str(exc), severity="warning", timeout=8)
        self.refresh_store(force=True)
        await self.pump_queue()
        self.notify(queued_summary(plan.study, queued), title="Study", timeout=6)

    def _queued(self: CifarTUI, ids: list[int], names: list[str], activate: bool) -> None:
        """After queueing from the form: the first run's tab comes to the front when it starts, the
        marks that chose the experiments are spent, and the lists show the new items."""
        if activate and ids:
            self._activate.add(ids[0])
        if len(names) > 1:
            self.experiments_pane.clear_marks()
        self.refresh_store(force=True)  # our own writes do not move our connection's data_version

    def cancel_queue_item(self: CifarTUI, item_id: int) -> None:
        self.sup.cancel(item_id)
        self.refresh_store(force=True)
        self.notify(f"removed #{item_id} from the queue")

    # ------------------------------------------------------------------ stop / resume / delete
    def stop_run(self: CifarTUI, run_id: str) -> bool:
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

    def _status_changed(self: CifarTUI, run_id: str) -> None:
        """After a request to the supervisor: the run's tab and row show its new status now."""
        view = self.views.get(run_id)
        if view is not None:
            view.set_supervised(self.sup.status(run_id))
            self.run_tabs.relabel(run_id)
        self.runs_pane.status_changed(run_id)
        self.update_bindings()

    async def resume_run(self: CifarTUI, run_id: str) -> bool:
        """Queue the run's continuation from its last checkpoint (same run id, same tab); it starts
        at once when a slot and its GPUs are free."""
        view = self.views.get(run_id)
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
        self._activate.add(item_id)
        self.refresh_store(force=True)  # our own writes do not move our connection's data_version
        started = await self.pump_queue()
        if item_id not in started:
            await self.open_run(run_id, True)
            self.notify(f"{short_run(run_id)} resumes when a slot frees ({self.sup.blocked or 'queued'})",
                        title="Resume", timeout=6)
        else:
            self.notify(f"resuming {short_run(run_id)} {resume_point(self.ws.home / run_id)}", title="Resume",
                        timeout=6)
        self._status_changed(run_id)
        return True

    async def resume_exited(self: CifarTUI) -> None:
        """Resumes asked for while the run's process was still exiting, now that it is gone."""
        for run_id in list(self.resume_pending):
            if self.sup.status(run_id) not in LIVE:
                self.resume_pending.discard(run_id)
                await self.resume_run(run_id)

    async def delete_run(self: CifarTUI, run_id: str) -> None:
        try:
            self.sup.delete(run_id)
        except ConfigError as exc:  # it came alive meanwhile
            self.notify(str(exc), severity="error")
            return
        await self.run_tabs.close(run_id)
        self.refresh_store(force=True)
        self.notify(f"deleted {run_id}", title="Delete", timeout=4)

    def gpu_holders(self: CifarTUI) -> dict[str, str]:
        """GPU id -> the run holding its lease (any launcher's: the store's leases)."""
        return {lease["slot"].split(":", 1)[1]: lease["run_id"] for lease in self.sup.leases.held()
                if lease["slot"].startswith("gpu:")}
