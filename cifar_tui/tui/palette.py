"""Command palette (ctrl+p) entries of the app: the main actions plus one per run/experiment."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from engine.record.status import RESUMABLE

from .panes.run_actions import STOPPABLE

if TYPE_CHECKING:
    from .app import CifarTUI


class CifarCommands(Provider):
    """Launch, tabs, leaderboard, compare, and stop / resume / open / delete for each run."""

    def _commands(self, with_items: bool) -> list[tuple[str, Callable, str]]:
        app: CifarTUI = self.app  # type: ignore[assignment]
        experiments = app.experiments_pane

        def on_experiments(action: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                app.action_show_tab("experiments")
                action()
            return run

        def on_leaderboard(action: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                app.action_show_tab("leaderboard")
                action()
            return run

        cmds: list[tuple[str, Callable, str]] = [
            ("Launch experiment", on_experiments(experiments.action_launch),
             "Open the launch form for the highlighted (or marked) experiments"),
            ("Show experiments", partial(app.action_show_tab, "experiments"), "The experiment list (1)"),
            ("Show runs", partial(app.action_show_tab, "runs"), "Every run with its status, and the queue (2)"),
            ("Show leaderboard", partial(app.action_show_tab, "leaderboard"), "Best accuracy per run (3)"),
            ("Compare marked runs", app.leaderboard_pane.action_compare,
             "Overlay accuracy curves and diff the configs of marked runs (or groups)"),
            ("Show studies", app.leaderboard_pane.action_studies,
             "Sweeps and searches: what each asked, an Optuna study's best trial; show one on the leaderboard (f)"),
            ("Leaderboard by group", on_leaderboard(partial(app.leaderboard_pane.set_mode, True)),
             "One row per group: n, mean ± std, 95% interval, the seed's reference inside or not (g)"),
            ("Leaderboard by run", on_leaderboard(partial(app.leaderboard_pane.set_mode, False)),
             "One row per run (g)"),
            ("Stop run", partial(app.pane_action, "stop"), "Stop the current run gracefully (checkpoint + end event)"),
            ("Resume run", partial(app.pane_action, "resume"), "Continue the current stopped or crashed run"),
            ("Delete run", partial(app.pane_action, "delete"), "Delete the current run's directory and rows (asks first)"),
            ("Filter experiments", on_experiments(experiments.action_filter), "Type to filter the experiment list (/)"),
        ]
        if not with_items:
            return cmds
        for row in experiments.experiments:
            if not row.get("error"):
                cmds.append((f"Launch {row['name']}", partial(experiments.launch, [row["name"]]),
                             f"{row['model']} · {row['head_loss']} · {row['input']}px"))
        lifecycle = app.lifecycle
        for rid in app.index.newest_first():
            status = app.index.runs[rid]["status"]
            cmds.append((f"Open run {rid}", partial(app.open_run, rid, True), f"status {status}"))
            if status in STOPPABLE:
                cmds.append((f"Stop run {rid}", partial(lifecycle.stop_run, rid), "graceful stop: checkpoint, then end"))
            if status in RESUMABLE:
                cmds.append((f"Resume run {rid}", partial(lifecycle.resume_run, rid), f"continue this {status} run"))
        for q in app.index.queue:
            cmds.append((f"Cancel queued {q['config']} #{q['id']}", partial(lifecycle.cancel_queue_item, q["id"]),
                         "remove it from the queue"))
        return cmds

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands(with_items=False):
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands(with_items=True):
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
