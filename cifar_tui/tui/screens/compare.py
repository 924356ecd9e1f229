"""Several runs side by side: accuracy curves overlaid and the config keys that differ."""
from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ...report import fmt_acc
from ..support import config_diff, fmt_value, short_run


class CompareScreen(Screen):
    """Accuracy curves of several runs overlaid, and the config keys that differ."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, runs: list[dict], epochs: dict[str, list[dict]]):
        super().__init__()
        self.runs = runs
        self.epochs = epochs

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        with Vertical(classes="compare"):
            yield Static(Text(f"Comparing {len(self.runs)} runs", style="bold"), classes="compare-title")
            summary = DataTable(id="compare-summary", cursor_type="none", zebra_stripes=True)
            summary.border_title = "Runs"
            yield summary
            plot = PlotextPlot(id="compare-plot")
            plot.border_title = "Test accuracy % per epoch"
            yield plot
            diff = DataTable(id="compare-diff", cursor_type="row", zebra_stripes=True)
            diff.border_title = "Config keys that differ"
            yield diff
        yield Footer()

    def on_mount(self) -> None:
        from textual_plotext import PlotextPlot

        colors = ["cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white"]
        summary = self.query_one("#compare-summary", DataTable)
        summary.add_columns("", "run", "config", "data", "best acc", "best ep", "epochs", "status")
        for i, r in enumerate(self.runs):
            syn = r.get("data_source") == "synthetic"
            summary.add_row(Text("━━", style=colors[i % len(colors)]), r["run_id"], r["config_name"],
                            Text(r.get("data_source") or "?", style="magenta" if syn else "cyan"),
                            fmt_acc(r.get("best_acc")), str(r.get("best_epoch") or "-"),
                            f"{r.get('epochs_done') or 0}/{r.get('epochs_total') or '?'}", r.get("status") or "-")
        plot = self.query_one("#compare-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        for i, r in enumerate(self.runs):
            eps = [e for e in self.epochs.get(r["run_id"], []) if e.get("test_acc") is not None]
            if eps:
                plt.plot([e["epoch"] for e in eps], [e["test_acc"] for e in eps], marker="braille" if len(eps) > 1 else "hd",
                         color=colors[i % len(colors)], label=short_run(r["run_id"]))
        plt.xlabel("epoch")
        plot.refresh()
        diff = self.query_one("#compare-diff", DataTable)
        configs = []
        for r in self.runs:
            try:
                configs.append(json.loads(r.get("config_json") or "{}"))
            except json.JSONDecodeError:
                configs.append({})
        rows = config_diff(configs)
        diff.add_column("key", key="key")
        for i, r in enumerate(self.runs):
            diff.add_column(Text(short_run(r["run_id"]), style=colors[i % len(colors)]), key=f"r{i}")
        if not rows:
            diff.add_row("(the configs are identical)", *[""] * len(self.runs))
        for key, values in rows:
            diff.add_row(Text(key, style="bold"), *[fmt_value(v) for v in values], key=key)
        self.diff_rows = rows
