"""The Experiments tab: every config, a filter, marks, the highlighted config as YAML; `l` asks
to launch the highlighted (or marked) experiments."""
from __future__ import annotations

import gc
from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Static

from engine.config import ConfigError, load_config

from ...table_rows import experiment_rows, fmt_acc, fmt_ref
from ..messages import LaunchRequested
from ..runs_index import Changes, RunsIndex
from ..support import best_by_config, matches_filter
from ..widgets.focus import focus_now
from ..widgets.table_sync import Column, SyncedTable, TableSync
from ..widgets.text import show

# priority: 0 always shown; the larger, the sooner a column goes on a narrow terminal
EXP_COLUMNS = (Column("mark", " "), Column("name", "name"), Column("model", "model", 3), Column("input", "input", 5),
               Column("pretrained", "pre", 6), Column("head_loss", "head/loss", 4), Column("seed", "ref acc", 2),
               Column("best", "best", 1))
BEST_CELL_WIDTH = len("100.00 syn")
WIDE = 120  # narrower than this: the config (YAML) goes below the list, shown with `y`


class FilterInput(Input):
    BINDINGS = [
        Binding("escape", "clear_filter", "Clear filter"),
        Binding("down", "to_list", "To the list", show=False),
    ]

    def action_clear_filter(self) -> None:
        self.value = ""
        self.action_to_list()

    def action_to_list(self) -> None:
        self.query_ancestor(ExperimentsPane).focus_main()


def exp_values(r: dict, marked: bool, best: dict) -> tuple:
    """One experiment row as plain values, one per column (compared to decide what to redraw)."""
    best_cell = (best.get("cifar100"), best.get("synthetic"))
    if r.get("error"):
        return (marked, (r["name"], True), None, "", None, "", None, best_cell)
    return (marked, (r["name"], False), r["model"], r["input"], bool(r["pretrained"]), r["head_loss"],
            fmt_ref(r["ref_acc"], r["ref_kind"]), best_cell)


def exp_cells(values: tuple) -> list:
    marked, (name, error), model, size, pretrained, head_loss, reference, (cifar, synthetic) = values
    mark = Text("●", style="bold magenta") if marked else Text(" ")
    if error:
        return [mark, Text(name, style="red"), Text("invalid config", style="red"), "", "", "", "", ""]
    if cifar is not None:
        best_cell = Text(fmt_acc(cifar), style="bold green")
    elif synthetic is not None:
        best_cell = Text(f"{fmt_acc(synthetic)} syn", style="magenta")
    else:
        best_cell = Text("-", style="dim")
    return [mark, Text(name, style="bold"), model.replace("/cifar-stem", "·cifar"), size,
            Text("✔", style="green") if pretrained else Text("·", style="dim"), head_loss,
            Text(reference, style="italic" if reference.startswith("goal") else ""),
            best_cell]


class ExperimentsPane(Horizontal):
    BINDINGS = [
        Binding("l", "launch", "Launch"),
        Binding("space", "mark", "Mark"),
        Binding("slash", "filter", "Filter"),
        Binding("y", "config(True)", "Config"),       # a narrow terminal: the YAML below the list, or not
        Binding("y", "config(False)", "Hide config"),
    ]

    def __init__(self, configs_dir: Path | None, **kw):
        super().__init__(classes="split", **kw)
        self.configs_dir = configs_dir
        self.experiments: list[dict] = []
        self.loaded = False
        self.marked: set[str] = set()         # experiment names
        self.yaml_text = ""                   # the resolved YAML shown (highlighted) on the right
        self._yaml_for: str | None = None
        self._best: dict[str, dict] = {}      # config name -> best accuracy per data source
        self._values: dict[str, tuple] = {}
        self.show_config = False              # a narrow terminal: the YAML is shown below the list

    def compose(self) -> ComposeResult:
        with Vertical(id="exp-left"):
            yield FilterInput(placeholder="/ filter: type words (name, model, loss)…", id="filter")
            yield SyncedTable(id="exp-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="exp-hint", classes="hint")
        with Vertical(id="exp-right"):
            yield Static("", id="exp-title", classes="pane-title")
            with VerticalScroll(id="yaml-scroll"):
                yield Static("", id="yaml")

    def on_mount(self) -> None:
        self.table = self.query_one("#exp-table", DataTable)
        self.sync = TableSync(self.table, lambda _key, values: exp_cells(values), EXP_COLUMNS)
        self._columns()
        self.fill()
        # validating every config takes a few hundred ms: off the main thread, after the first frame
        self.run_worker(self._load, thread=True, name="load experiments")

    def focus_main(self) -> None:
        focus_now(self.table)

    # ------------------------------------------------------------------ data
    def _load(self) -> None:
        rows = experiment_rows(self.configs_dir)
        try:
            self.app.call_from_thread(self._loaded, rows)
        except RuntimeError:  # quitting already
            pass

    def _loaded(self, rows: list[dict]) -> None:
        self.experiments = rows
        self.loaded = True
        self._columns()
        self.fill()
        self.app.update_bindings()
        # Start-up objects (widgets, styles, configs) live as long as the app: move them out of
        # the collector's reach, so full collections triggered by parsing events stay short
        # (they were the UI's longest pauses while events stream in).
        self.app.call_after_refresh(gc.freeze)

    def _columns(self) -> None:
        """The table's columns, sized to the experiments' cells. Fixed widths: the table does not
        depend on DataTable measuring new rows when it next goes idle (once, in CI, the first
        screen kept the header widths and cut every name to four letters)."""
        cells = [exp_cells(exp_values(r, False, {})) for r in self.experiments]
        columns = []
        for i, col in enumerate(EXP_COLUMNS):
            width = max([len(col.label)] + [len(c.plain if isinstance(c, Text) else str(c)) for c in
                                             (row[i] for row in cells)])
            columns.append(Column(col.key, col.label, col.priority,
                                  max(width, BEST_CELL_WIDTH) if col.key == "best" else width))
        self.sync.set_columns(columns)

    def on_resize(self) -> None:
        narrow = self.size.width < WIDE
        self.set_class(narrow, "-narrow")
        self.set_class(narrow and self.show_config, "-config")
        self.app.update_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "config":  # only a narrow terminal hides the config; the key shows what it switches to
            return self.has_class("-narrow") and parameters[0] != self.show_config
        return True

    def action_config(self, shown: bool) -> None:
        self.show_config = shown
        self.set_class(shown and self.has_class("-narrow"), "-config")
        self.app.update_bindings()

    def runs_changed(self, index: RunsIndex, changes: Changes) -> None:
        """The best-result column follows the store."""
        if not (changes.runs or changes.removed):
            return
        best = best_by_config(list(index.runs.values()))
        if best != self._best:
            self._best = best
            self.fill()

    def fill(self) -> None:
        query = self.query_one("#filter", Input).value
        self._values = {r["name"]: exp_values(r, r["name"] in self.marked, self._best.get(r["name"], {}))
                        for r in self.experiments}
        order = [r["name"] for r in self.experiments
                 if matches_filter(query, r["name"], r.get("model"), r.get("head_loss"), r.get("input"),
                                   "pretrained" if r.get("pretrained") else "scratch")]
        self.sync.show(order, self._values)
        n, total = len(order), len(self.experiments)
        hint = f"{n}/{total} experiments" if query else f"{total} experiments"
        if not self.loaded:
            hint = "loading experiments…"
        if self.marked:  # what `l` will queue, before the form opens
            names = [r["name"] for r in self.experiments if r["name"] in self.marked]
            text = Text(f"● {len(names)} marked: ", style="bold magenta")
            text.append(", ".join(names), style="")
            text.append(" · l queues them, space unmarks", style="dim")
        else:
            text = Text(hint + (" · space marks several" if self.loaded else ""))
        show(self.query_one("#exp-hint", Static), text)
        self._show_yaml()

    def highlighted(self) -> str | None:
        return self.sync.cursor_key()

    def _show_yaml(self) -> None:
        name = self.highlighted()
        if name == self._yaml_for:
            return
        self._yaml_for = name
        title = self.query_one("#exp-title", Static)
        yaml_view = self.query_one("#yaml", Static)
        if name is None:
            title.update(Text("no experiment matches the filter" if self.loaded else "loading…", style="dim"))
            yaml_view.update("")
            self.yaml_text = ""
            return
        row = next((r for r in self.experiments if r["name"] == name), None)
        try:
            text = load_config(row["path"] if row else name, [], self.configs_dir).to_yaml()
        except ConfigError as exc:
            self.yaml_text = str(exc)
            title.update(Text(f"{name}: invalid config", style="bold red"))
            yaml_view.update(Text(str(exc), style="red"))
            return
        head = Text(name, style="bold")
        if row:
            path = Path(row["path"])
            head.append(f"  {path.parent.name}/{path.name}", style="dim")
        title.update(head)
        self.yaml_text = text
        bg = self.app.theme_variables.get("surface") or "default"
        yaml_view.update(Syntax(text, "yaml", theme="monokai", background_color=bg, word_wrap=True))

    # ------------------------------------------------------------------ events and keys
    @on(DataTable.RowHighlighted, "#exp-table")
    def _highlighted(self) -> None:
        self._show_yaml()

    @on(DataTable.RowSelected, "#exp-table")
    def _selected(self) -> None:
        self.action_launch()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.fill()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.focus_main()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_mark(self) -> None:
        name = self.highlighted()
        if name is None:
            return
        self.marked.symmetric_difference_update({name})
        self.fill()  # the cursor stays on the row: the next key acts on what the user sees

    def clear_marks(self) -> None:
        if self.marked:
            self.marked.clear()
            self.fill()

    def action_launch(self) -> None:
        if self.marked:
            names = [r["name"] for r in self.experiments if r["name"] in self.marked]
        else:
            name = self.highlighted()
            if name is None:
                self.notify("No experiment highlighted", severity="warning")
                return
            names = [name]
        self.launch(names)

    def launch(self, names: list[str]) -> None:
        bad = [r["name"] for r in self.experiments if r["name"] in names and r.get("error")]
        if bad:
            self.notify(f"invalid config: {', '.join(bad)} (see the YAML pane)", severity="error")
            return
        self.post_message(LaunchRequested(names))
