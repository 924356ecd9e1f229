"""The run view's loss and accuracy charts (plotext): train curves per step (the running mean of the
epoch), test points per epoch.

The legend is in each chart's top border (`━ train  • test`), never inside the plot where it would
sit on the data, and it is there however small the chart is. Test points always use the same glyph.
On a short terminal only one chart is shown (`show_only`), at a height where it still has room
for its axes."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual_plotext import PlotextPlot

from ..support import RunState

MAX_PLOT_POINTS = 400         # a terminal chart has ~2 points per cell: more only costs time
TRAIN_COLOR, TEST_COLOR = "cyan", "orange"
CHARTS = (("loss", "Loss", 1, "test_loss"), ("acc", "Accuracy %", 2, "test_acc"))  # id, title, step field, test key


def thin(items: list, limit: int) -> list:
    """At most `limit` evenly spaced items, always keeping the last."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    out = [items[int(i * step)] for i in range(limit - 1)]
    out.append(items[-1])
    return out


def legend_title(title: str) -> Text:
    text = Text(f"{title}  ")
    text.append("━ train", style=TRAIN_COLOR)
    text.append("  ")
    text.append("• test", style="yellow")  # plotext's "orange" is colour 3, the terminal's yellow
    return text


class RunCharts(Vertical):
    """The two charts, one above the other; `show_only(name)` hides the other one."""

    def compose(self) -> ComposeResult:
        for name, title, _, _ in CHARTS:
            plot = PlotextPlot(id=f"{name}-plot", classes="chart")
            plot.border_title = legend_title(title)
            yield plot

    def show_only(self, name: str | None) -> None:
        """Only this chart (`loss`, `acc`); None: both."""
        for chart, *_ in CHARTS:
            self.query_one(f"#{chart}-plot").display = name is None or name == chart

    def draw(self, st: RunState) -> None:
        epochs = thin([st.epochs[k] for k in sorted(st.epochs)], MAX_PLOT_POINTS)
        pts = thin(st.step_points, MAX_PLOT_POINTS)
        for name, _, step_idx, test_key in CHARTS:
            plot = self.query_one(f"#{name}-plot", PlotextPlot)
            plt = plot.plt
            plt.clear_data()
            plt.clear_figure()
            xs = [p[0] for p in pts if p[step_idx] is not None]
            ys = [p[step_idx] for p in pts if p[step_idx] is not None]
            if xs:
                plt.plot(xs, ys, marker="braille", color=TRAIN_COLOR)
            ex = [e["epoch"] for e in epochs if e.get(test_key) is not None]
            ey = [e[test_key] for e in epochs if e.get(test_key) is not None]
            if ex:
                plt.scatter(ex, ey, marker="dot", color=TEST_COLOR)  # one • per epoch, never joined
            if not xs and not ex:
                plt.title("waiting for the first steps")
            elif name == "acc":
                top = max(ys + ey + [1.0])
                plt.ylim(0, min(100.0, top * 1.05))
            plt.xlabel("epoch")
            plot.refresh()
