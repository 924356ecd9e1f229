"""Several runs (or groups of runs) side by side: accuracy curves overlaid (a group: its mean curve
between two thin lines, ±1 std), the config keys that differ, and the provenance keys that differ."""
from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ...studies import groups_title
from ..compare_data import GROUP_SUMMARY, RUN_SUMMARY, Compared, diff_rows, provenance_rows, run_provenance
from ..support import fmt_value

# (line, band) per item: the band a darker shade of the line's colour
COLORS = [((0, 215, 255), (0, 95, 135)), ((255, 160, 40), (135, 80, 0)), ((95, 215, 95), (40, 110, 40)),
          ((215, 95, 215), (110, 40, 110)), ((255, 95, 95), (135, 40, 40)), ((95, 135, 255), (40, 60, 135)),
          ((235, 215, 80), (120, 110, 30)), ((220, 220, 220), (110, 110, 110))]


def rich_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


class CompareScreen(Screen):
    """Accuracy curves of several runs or groups overlaid, and the config and provenance keys that differ.

    `runs`: the store rows compared (runs mode); `groups`: the `group_stats` rows (groups mode)."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, items: list[Compared], *, runs: list[dict] | None = None, groups: list[dict] | None = None):
        super().__init__()
        self.items = items
        self.runs = runs or []
        self.groups = groups or []
        self.by_group = groups is not None
        self.shared = groups_title(self.groups) if len(self.groups) > 1 else ""  # what all compared groups share
        self.diff_rows = diff_rows(items)
        self.provenance: list[tuple[str, list[str]]] | None = None  # read off the UI thread

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        what = "groups" if self.by_group else "runs"
        title = Text(f"Comparing {len(self.items)} {what}", style="bold")
        if self.by_group and self.shared:
            title.append("  every group: ", style="dim")
            title.append(self.shared)
        with Vertical(classes="compare"):
            yield Static(title, classes="compare-title")
            summary = DataTable(id="compare-summary", cursor_type="none", zebra_stripes=True)
            summary.border_title = "Groups (completed runs)" if self.by_group else "Runs"
            yield summary
            plot = PlotextPlot(id="compare-plot")
            plot.border_title = ("Test accuracy % per epoch: mean of each group, ±1 std between the thin lines"
                                 if self.by_group else "Test accuracy % per epoch")
            yield plot
            with Horizontal(classes="compare-diffs"):
                diff = DataTable(id="compare-diff", cursor_type="row", zebra_stripes=True)
                diff.border_title = "Config keys that differ"
                yield diff
                prov = DataTable(id="compare-provenance", cursor_type="row", zebra_stripes=True)
                prov.border_title = "Provenance that differs"
                yield prov
        yield Footer()

    def on_mount(self) -> None:
        self._summary()
        self._plot()
        self._diff()
        prov = self.query_one("#compare-provenance", DataTable)
        prov.add_column("key", key="key")
        prov.add_row(Text("reading the runs' start events…", style="dim"))
        self._read_provenance()

    def _swatch(self, i: int) -> Text:
        return Text("━━", style=rich_color(COLORS[i % len(COLORS)][0]))

    def _summary(self) -> None:
        summary = self.query_one("#compare-summary", DataTable)
        summary.add_columns("", *(GROUP_SUMMARY if self.by_group else RUN_SUMMARY))
        for i, item in enumerate(self.items):
            cells = list(item.summary)
            at = 2  # the data column (runs and groups alike)
            cells[at] = Text(cells[at], style="magenta" if cells[at] == "synthetic" else "cyan")
            summary.add_row(self._swatch(i), *cells)

    def _plot(self) -> None:
        from textual_plotext import PlotextPlot

        plot = self.query_one("#compare-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        for i, item in enumerate(self.items):
            line, band = COLORS[i % len(COLORS)]
            x, curve = item.curve["epochs"], item.curve
            if not x:
                continue
            marker = "braille" if len(x) > 1 else "hd"
            if curve.get("low") is not None and curve["low"] != curve["high"]:  # a band where 2+ runs agree to differ
                plt.plot(x, curve["low"], marker=marker, color=band)
                plt.plot(x, curve["high"], marker=marker, color=band)
            plt.plot(x, curve["mean"], marker=marker, color=line, label=item.label[:40])
        plt.xlabel("epoch")
        plot.refresh()

    def _diff(self) -> None:
        diff = self.query_one("#compare-diff", DataTable)
        diff.add_column("key", key="key")
        for i, item in enumerate(self.items):
            diff.add_column(Text(item.label[:24], style=rich_color(COLORS[i % len(COLORS)][0])), key=f"r{i}")
        if not self.diff_rows:
            diff.add_row("(the configs are identical)", *[""] * len(self.items))
        for key, values in self.diff_rows:
            diff.add_row(Text(key, style="bold"), *[fmt_value(v) for v in values], key=key)

    @work(thread=True, exclusive=True, group="provenance")
    def _read_provenance(self) -> None:
        per_item = [[run_provenance(d) for d in item.run_dirs] for item in self.items]
        recorded = any(p for runs in per_item for p in runs)
        self.app.call_from_thread(self._show_provenance, provenance_rows(per_item), recorded)

    def _show_provenance(self, rows: list[tuple[str, list[str]]], recorded: bool = True) -> None:
        self.provenance = rows
        try:
            prov = self.query_one("#compare-provenance", DataTable)
        except NoMatches:  # the screen was closed meanwhile
            return
        prov.clear(columns=True)
        if not rows:
            prov.add_column("key", key="key")
            note = "(the same commit, versions, GPUs and host)" if recorded else "(no provenance recorded by these runs)"
            prov.add_row(Text(note, style="dim"))
            return
        prov.add_column("key", key="key")
        for i, item in enumerate(self.items):
            prov.add_column(Text(item.label[:24], style=rich_color(COLORS[i % len(COLORS)][0])), key=f"r{i}")
        for key, cells in rows:
            prov.add_row(Text(key, style="bold"), *cells, key=key)
