"""The studies of the workspace (sweeps, Optuna searches, the seed's experiments), what each asked
for, and for a search its best trial and settings; a study's runs or groups on the leaderboard.
Followed live: a study that runs elsewhere (SLURM jobs, tune workers, another shell) shows its runs
and its best trial as they arrive (the store's data_version, the Optuna journal's size)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ...names import short_settings
from ...table_rows import fmt_acc


@dataclass
class StudyChoice:
    """What the leaderboard shows next: one study's runs (None: every run), by run or by group."""

    study: str | None
    by_group: bool | None = None   # None: as it is
    tab: bool = False              # the study's own tab instead (its groups x seeds grid)


def load_studies(store) -> list[dict]:
    """`studies.list_studies` with each recorded study's command line."""
    from ...studies import list_studies

    out = []
    for s in list_studies(store):
        recorded = store.study(s["name"]) or {}
        out.append(dict(s, command=recorded.get("command")))
    return out


def spec_text(study: dict) -> str:
    """What the study asked for, in the CLI's words."""
    spec = study.get("spec") or {}
    if study["kind"] == "tune":
        parts = [f"--param {p}" for p in spec.get("params") or []]
        parts += [f"--trials {spec['trials']}"] if spec.get("trials") else []
        parts += [f"--prune {spec['prune']}"] if spec.get("prune") not in (None, "none") else []
        parts += [f"--set {o}" for o in spec.get("overrides") or []]
        return " ".join(parts)
    parts = [f"--set {o}" for o in [*(spec.get("sets") or []), *(spec.get("extra") or [])]]
    if spec.get("seeds") == "auto":
        parts.append(f"--seeds auto --max-seeds {spec.get('max_seeds')}")
        parts += [f"--target-ci {spec['target_ci']:g}"] if spec.get("target_ci") is not None else []
        parts += [f"--vs {spec['vs']!r}"] if spec.get("vs") else []
    elif isinstance(spec.get("seeds"), int) and spec["seeds"] > 1:
        parts.append(f"--seeds {spec['seeds']}")
    return " ".join(parts)


def trial_text(trial: dict | None) -> Text:
    """An Optuna study's best trial (studies.best_trial) in one or two lines."""
    text = Text()
    if trial is None:
        return text.append("no Optuna study of this name in the workspace", style="dim")
    states = ", ".join(f"{n} {s}" for s, n in sorted(trial["states"].items())) or "no trials"
    if trial["number"] is None:
        return text.append(f"no trial completed yet ({states})", style="dim")
    text.append("best trial ", style="bold")
    text.append(f"#{trial['number']}: ", style="bold")
    text.append(f"{fmt_acc(trial['value'])}%", style="bold green")
    if trial.get("run_id"):
        text.append(f"  run {trial['run_id']}", style="dim")
    text.append(f"  ({states})\n  ", style="dim")
    text.append(short_settings(dict(sorted(trial["params"].items()))), style="cyan")
    return text


FOLLOW_S = 1.0  # how often the screen looks whether the store or the Optuna journal changed


class StudiesScreen(Screen[StudyChoice | None]):
    """Every study, newest first; the highlighted one's request, command and best trial below."""

    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("enter", "runs", "Its runs", priority=True),  # before the table's own enter
        Binding("g", "groups", "Its groups"),
        Binding("t", "tab", "Its tab"),
        Binding("a", "all", "All runs"),
    ]

    def __init__(self, ws, studies: list[dict], current: str | None = None):
        super().__init__()
        self.ws = ws
        self.studies = {s["name"]: s for s in studies}
        self.current = current
        self.trials: dict[str, dict | None] = {}   # study -> best trial, once read
        self._stale: set[str] = set()              # studies whose best trial may have changed since

    def compose(self) -> ComposeResult:
        with Vertical(classes="studies"):
            yield Static(Text(f"Studies in {self.ws.home}", style="bold"), classes="compare-title")
            table = DataTable(id="studies-table", cursor_type="row", zebra_stripes=True)
            yield table
            detail = Static("", id="study-detail")
            detail.border_title = "Study"
            yield detail
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#studies-table", DataTable)
        for key, label in (("name", "study"), ("kind", "kind"), ("config", "config"), ("runs", "runs"),
                           ("groups", "groups"), ("best", "best acc"), ("created", "created"), ("best_run", "best run")):
            table.add_column(label, key=key)
        self._fill(table)
        if self.current in self.studies:
            table.move_cursor(row=table.get_row_index(self.current), animate=False)
        table.focus()
        self._show(self.highlighted())
        self._seen = self._stamp()
        self.set_interval(FOLLOW_S, self._follow)

    def _cells(self, s: dict) -> list:
        counts = ", ".join(f"{n} {st}" for st, n in sorted(s["by_status"].items())) or "0"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["created_at"])) if s["created_at"] else "-"
        name = Text(s["name"], style="bold magenta" if s["name"] == self.current else "bold")
        return [name, s["kind"], s["config"] or "-", counts, str(s["groups"]), fmt_acc(s["best_acc"]), created,
                s["best_run"] or "-"]  # the widest last: a narrow terminal cuts it

    def _fill(self, table: DataTable) -> None:
        """The rows as `self.studies` has them: changed cells updated in place, new studies added."""
        keys = [column.key for column in table.columns.values()]
        for s in self.studies.values():
            cells = self._cells(s)
            if s["name"] not in table.rows:
                table.add_row(*cells, key=s["name"])
                continue
            for key, old, new in zip(keys, table.get_row(s["name"]), cells):
                if str(old) != str(new):
                    table.update_cell(s["name"], key, new)

    def _stamp(self) -> tuple:
        from ...tune import storage_path

        try:
            journal = storage_path(self.ws).stat()
            size = (journal.st_size, journal.st_mtime_ns)
        except OSError:
            size = None
        return self.app.store.data_version(), size

    def _follow(self) -> None:
        """Runs of a study arriving (tune workers on SLURM, another shell) and its trials: re-read only on
        a change (a commit by another connection; the journal written)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return
        store_moved, self._seen = stamp[0] != self._seen[0], stamp
        if store_moved:
            self.studies = {s["name"]: s for s in load_studies(self.app.store)}
            self._fill(self.query_one("#studies-table", DataTable))
        self._stale = set(self.trials)  # a search's best trial is read again when shown (the old one meanwhile)
        self._show(self.highlighted())

    def highlighted(self) -> str | None:
        table = self.query_one("#studies-table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @on(DataTable.RowHighlighted, "#studies-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.row_key.value)

    def _show(self, name: str | None) -> None:
        detail = self.query_one("#study-detail", Static)
        if name is None:
            detail.update(Text("No studies yet. Sweep from the launch form (comma lists, Seeds) or run "
                               "`cifar-tui run NAME --set optim.lr=1e-3,3e-3 --seeds 3` or `cifar-tui tune NAME ...`.",
                               style="dim"))
            return
        s = self.studies[name]
        text = Text()
        text.append(f"{name}", style="bold")
        text.append(f"  {s['kind']} of {s['config'] or '?'}", style="dim")
        asked = spec_text(s)
        if asked:
            text.append("\n  asked: ", style="dim")
            text.append(asked)
        if s.get("command"):
            text.append("\n  command: ", style="dim")
            text.append(s["command"])
        workers = (s.get("spec") or {}).get("workers")
        if workers:  # tune --launcher slurm: its workers' array tasks (logs in runs/.jobs/)
            text.append("\n  SLURM workers: ", style="dim")
            text.append(", ".join(workers))
        if s["best_run"]:
            text.append("\n  best run: ", style="dim")
            text.append(f"{s['best_run']} ({fmt_acc(s['best_acc'])}%)")
        if s["kind"] == "tune":
            text.append("\n  ")
            if name in self.trials:
                text.append_text(trial_text(self.trials[name]))
                if name in self._stale:
                    self._stale.discard(name)
                    self._read_trial(name)
            else:
                text.append("reading the Optuna study…", style="dim")
                self._read_trial(name)
        text.append("\n  enter: its runs on the leaderboard · g: its groups · t: its tab (groups x seeds) · a: every run",
                    style="dim")
        detail.update(text)

    @work(thread=True, exclusive=True, group="trial")
    def _read_trial(self, name: str) -> None:
        from ...studies import best_trial

        try:
            trial = best_trial(self.ws, name)
        except Exception as exc:  # noqa: BLE001 - a damaged Optuna storage: say so, never crash the app
            trial = {"number": None, "states": {f"unreadable: {exc}".splitlines()[0][:80]: 1}}
        self.app.call_from_thread(self._trial_read, name, trial)

    def _trial_read(self, name: str, trial: dict | None) -> None:
        self.trials[name] = trial
        try:
            if self.highlighted() == name:
                self._show(name)
        except NoMatches:  # the screen was closed meanwhile
            pass

    # ------------------------------------------------------------------ choices
    def action_back(self) -> None:
        self.dismiss(None)

    def action_runs(self) -> None:
        if (name := self.highlighted()) is not None:
            self.dismiss(StudyChoice(name, by_group=False))

    def action_groups(self) -> None:
        if (name := self.highlighted()) is not None:
            self.dismiss(StudyChoice(name, by_group=True))

    def action_tab(self) -> None:
        if (name := self.highlighted()) is not None:
            self.dismiss(StudyChoice(name, tab=True))

    def action_all(self) -> None:
        self.dismiss(StudyChoice(None))

    @on(DataTable.RowSelected, "#studies-table")
    def _selected(self) -> None:
        self.action_runs()


