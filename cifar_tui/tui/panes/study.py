"""A study's tab: its groups x seeds grid, each cell a run (status and best accuracy, filling in
as the runs report), each group's n, mean and 95% interval, its difference to the baseline group
(`b`), what `--seeds auto` still wants of it, and the study's time left. `enter` on a run's cell
opens the run; `a` continues an auto study from this TUI; `x` closes the tab (the runs go on).

A study launched from the TUI opens this one tab, never a tab per run. Redrawn from the store's
changes of its own runs only, and only the cells that changed (study_data, TableSync)."""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from engine.record.status import COMPLETED, LIVE, QUEUED

from ...table_rows import fmt_ci, fmt_duration, vs_cells
from ..messages import CloseStudy, DriveStudy, OpenRun
from ..runs_index import Changes, RunsIndex
from ..study_data import StudyGrid, study_grid
from ..support import STATUS_ICON, STATUS_RICH
from ..widgets.focus import focus_now
from ..widgets.table_sync import Column, SyncedTable, TableSync
from ..widgets.text import show

# every column stays (priority 0): a wide grid scrolls sideways, the group's name fixed on the left;
# fixed widths: a cell that grows as its run reports is never cut
STATS = (Column("n", "n", width=3), Column("mean", "mean [95%]", width=27), Column("vs", "vs baseline [95%]", width=24),
         Column("verdict", "verdict", width=20), Column("resolve", "to resolve", width=10),
         Column("auto", "seeds auto", width=12))
CELL_WIDTH = 12
VERDICT_STYLE = {"better": "bold green", "worse": "bold red"}


def seed_column(seed: int) -> Column:
    return Column(f"s{seed}", f"seed {seed}", width=CELL_WIDTH)


def columns_for(seeds: list[int]) -> list[Column]:
    return [Column("group", "group"), *(seed_column(s) for s in seeds), *STATS]


def cell_text(cell) -> Text:
    """A run's cell: `✔ 41.20`, `▶ 38.10 30%` (best so far, epochs done), `◷ queued`, `■ 20%`."""
    if cell is None:
        return Text("·", style="dim")
    status, best, done, total = cell[:4]
    text = Text(STATUS_ICON.get(status, "?"), style=STATUS_RICH.get(status, ""))
    if status == QUEUED:
        return text.append(" queued", style="dim")
    if best is not None:
        text.append(f" {best:.2f}", style="bold" if status == COMPLETED else "")
    if status != COMPLETED and total:
        text.append(f" {min(100, round(100 * done / total))}%", style="dim")
    return text


def grid_values(grid: StudyGrid, group: str, plans: dict) -> tuple:
    g = grid.stats.get(group)
    n = "0" if g is None else str(g["n"])
    mean = "-" if g is None or g["mean_acc"] is None else f"{g['mean_acc']:.2f}"
    if g is not None and g["ci95"] is not None:
        mean += " " + fmt_ci(g["ci95"], g.get("ci95_clamped", False), g.get("ci95_wide", False))
    vs, p, verdict, seeds = vs_cells(g) if g is not None and grid.baseline else ("-", "-", "-", "-")
    if verdict not in ("-",):
        verdict = f"{verdict.replace(' (n<2)', '')} {p.split(' ')[0]}" if p != "-" else verdict
    plan = plans.get(group)
    auto = "-" if plan is None else (plan.state if plan.state != "needs" else f"needs ~{plan.need}")
    cells = tuple(None if (c := grid.cells.get((group, s))) is None else (c.status, c.best, c.done, c.total, c.run_id)
                  for s in grid.seeds)
    return (grid.labels.get(group, group), *cells, n, mean, vs, verdict, seeds, auto)


def render_row(_key: str, values: tuple) -> list:
    label, *cells = values[:-6]
    n, mean, vs, verdict, seeds, auto = values[-6:]
    head = verdict.split(" ")[0]
    return [Text(label, style="bold"), *[cell_text(c) for c in cells], Text(n),
            Text(mean, style="yellow" if mean.endswith(("wide", "clamped")) else ""),
            Text(vs, style="bold yellow" if vs == "baseline" else ""),
            Text(verdict, style=VERDICT_STYLE.get(head, "dim" if verdict == "-" else "")), Text(seeds, style="dim"),
            Text(auto, style="green" if auto in ("resolved", "baseline") else "dim")]


class StudyPane(Vertical):
    BINDINGS = [
        Binding("enter", "open_run", "Open run"),
        Binding("b", "baseline", "Baseline"),
        Binding("a", "drive", "Continue seeds"),
        Binding("x", "close", "Close tab"),
    ]

    def __init__(self, study: str, *, kind: str = "sweep", auto=None, baseline: str | None = None,
                 planned: list[str] | None = None, **kw):
        super().__init__(**kw)
        self.study = study
        self.kind = kind
        self.auto = auto                        # its AutoSpec (a --seeds auto study), or None
        self.baseline = baseline
        self.planned = list(planned or [])      # groups the study plans (listed before they ran)
        self.driven = False                     # this TUI decides its next seeds (tui/auto_driver)
        self.plans: dict = {}                   # group -> auto_seeds.GroupPlan, from the driver
        self.slurm_workers: list[str] = []      # the SLURM workers that run it (--launcher slurm --workers)
        self.grid: StudyGrid | None = None
        self.stale = True
        self.redraws = 0                        # grids computed (bench, tests)
        self._index: RunsIndex | None = None
        self._values: dict[str, tuple] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="study-head", classes="study-head")
        yield Static("", id="study-counts", classes="study-head")
        yield SyncedTable(id="study-grid", cursor_type="cell", zebra_stripes=True, fixed_columns=1)
        yield Static("", id="study-note", classes="hint")

    def on_mount(self) -> None:
        self.table = self.query_one("#study-grid", DataTable)
        self.sync = TableSync(self.table, render_row, columns_for([]))

    def focus_main(self) -> None:
        focus_now(self.table)

    @property
    def in_front(self) -> bool:
        return self.app.active_tab == self.parent.id if self.parent is not None else False

    # ------------------------------------------------------------------ data
    def runs_changed(self, index: RunsIndex, changes: Changes) -> None:
        """Stale when one of its runs (or the queue) changed; redrawn now if in front."""
        self._index = index
        if not self.stale:
            mine = lambda rid: (index.runs.get(rid) or {}).get("study") == self.study  # noqa: E731
            self.stale = changes.queue or any(mine(rid) for rid in changes.runs) or bool(changes.removed)
        if self.in_front:
            self.redraw()

    def set_plans(self, plans: dict) -> None:
        if plans != self.plans:
            self.plans = dict(plans)
            self.stale = True
            if self.in_front:
                self.redraw()

    def set_slurm_workers(self, workers: list[str]) -> None:
        if workers != self.slurm_workers:
            self.slurm_workers = list(workers)
            self.stale = True
            if self.in_front:
                self.redraw()

    def redraw(self, force: bool = False) -> None:
        if self._index is None or not (self.stale or force):
            return
        self.stale = False
        index = self._index
        rows = index.group_rows(self.study)
        queued = [q for q in index.queue if q.get("study") == self.study]
        parallel = max(1, len([r for r in rows if r["status"] in LIVE]) or getattr(self.app.sup, "max_parallel", 1))
        self.grid = grid = study_grid(self.study, rows, queued, baseline=self.baseline, parallel=parallel,
                                      groups=self.planned)
        self.redraws += 1
        columns = columns_for(grid.seeds)
        if [c.key for c in columns] != [c.key for c in self.sync.columns]:  # a new seed: a column more
            self.sync.reset()
            self.sync.set_columns(columns)
        self._values = {g: grid_values(grid, g, self.plans) for g in grid.groups}
        self.sync.show(list(grid.groups), self._values)
        self._head()

    def _head(self) -> None:
        grid = self.grid
        head = Text()
        head.append(f"study {self.study}", style="bold yellow")
        head.append(f"  {self.kind}", style="dim")
        if grid.title:
            head.append(" · every group: ", style="dim")
            head.append(grid.title)
        line2 = Text()
        line2.append(f"{grid.runs} runs", style="bold")
        for status in (COMPLETED, "running", QUEUED, "stopped", "failed", "crashed", "pruned", "stalled"):
            if grid.counts.get(status):
                line2.append(f"  {STATUS_ICON.get(status, '?')} {grid.counts[status]} {status}",
                             style=STATUS_RICH.get(status, ""))
        unfinished = any(c.status != COMPLETED for c in grid.cells.values())
        if unfinished:
            left = "unknown until a run finishes an epoch" if grid.eta_s is None else f"~{fmt_duration(grid.eta_s)}"
            line2.append(f" · time left {left}" + (" (for the runs planned so far)" if self.auto else ""), style="cyan")
        if grid.baseline:
            line2.append(" · vs ", style="dim")
            line2.append(grid.labels.get(grid.baseline, grid.baseline), style="bold yellow")
        for line, where in ((head, "#study-head"), (line2, "#study-counts")):
            line.no_wrap, line.overflow = True, "ellipsis"  # one line each, cut at the edge: the grid keeps its rows
            show(self.query_one(where, Static), line)
        note = Text()
        if self.auto is not None:
            note.append("seeds auto: ", style="bold")
            if self.slurm_workers and not self.driven:  # first: a long description is cut at the edge
                note.append(f"run by SLURM workers {', '.join(self.slurm_workers)} · ", style="cyan")
            note.append(self.auto.describe(grid.labels.get(self.auto.vs)), style="dim")
            note.append(" · driven by this TUI" if self.driven else " · a: continue it here", style="cyan")
        else:
            note.append("enter: open the run · b: baseline group (the others against it)", style="dim")
        note.no_wrap, note.overflow = True, "ellipsis"
        show(self.query_one("#study-note", Static), note)

    # ------------------------------------------------------------------ keys
    def _cursor(self) -> tuple[str | None, str | None]:
        """(group, column key) under the cursor."""
        if not self.table.row_count:
            return None, None
        try:
            key = self.table.coordinate_to_cell_key(self.table.cursor_coordinate)
        except Exception:  # noqa: BLE001 - a changing table
            return None, None
        return key.row_key.value, key.column_key.value

    def current_run(self) -> str | None:
        group, column = self._cursor()
        if group is None or not column or column[0] != "s" or not column[1:].lstrip("-").isdigit():
            return None
        cell = self.grid.cells.get((group, int(column[1:]))) if self.grid else None
        return cell.run_id if cell is not None else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "drive":
            return self.auto is not None and not self.driven
        if action == "open_run":
            return True if self.current_run() else None
        return True

    def action_open_run(self) -> None:
        run_id = self.current_run()
        if run_id is None:
            self.notify("Move to a run's cell (a seed column) to open it", severity="warning")
            return
        self.post_message(OpenRun(run_id))

    @on(DataTable.CellSelected)
    def _selected(self) -> None:
        self.action_open_run()

    @on(DataTable.CellHighlighted)
    def _highlighted(self) -> None:
        self.app.update_bindings()

    def action_baseline(self) -> None:
        group, _ = self._cursor()
        if group is None:
            return
        self.baseline = None if self.baseline == group else group
        self.sync.reset()  # the groups' figures against another baseline: the rows afresh
        self.redraw(force=True)

    def action_drive(self) -> None:
        self.post_message(DriveStudy(self.study))

    def action_close(self) -> None:
        self.post_message(CloseStudy(self.study))
