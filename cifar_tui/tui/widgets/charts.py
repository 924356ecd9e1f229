"""The run view's loss and accuracy charts (plotext): train curves per step (the running mean of the
epoch), test points per epoch.

The legend is in each chart's top border (`━ train  • test`), never inside the plot where it would
sit on the data, and it is there however small the chart is. Test points always use the same glyph.
On a short terminal only one chart is shown (`show_only`), at a height where it still has room
for its axes."""
from __future__ import annotations

import math

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


NICE_STEPS = (1, 2, 2.5, 5)   # times a power of ten
AXIS_ROWS = 4                 # a plot's rows that are not the canvas: two borders, the x labels, the x title


def nice_step(span: float, intervals: int) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k that covers `span` in at most `intervals` steps."""
    if span <= 0 or intervals < 1:
        return 1.0
    raw = span / intervals
    power = 10 ** math.floor(math.log10(raw))
    return next((f * power for f in NICE_STEPS if f * power >= raw * (1 - 1e-9)), 10 * power)


def even_y_axis(lo: float, hi: float, rows: int) -> tuple[float, float, list[float]] | None:
    """(axis bottom, axis top, ticks) for a canvas of `rows` rows: round ticks exactly `k` rows
    apart (k >= 2), the data's [lo, hi] inside. plotext puts a value on the row nearest to it and
    picks its own ticks at fractions of the range, which at a few rows left labels missing or
    unevenly spaced (55.0, 45.9, 36.7, 18.3). None: too few rows for two labels."""
    if rows < 3:
        return None
    hi = max(hi, lo + 1e-9)
    for intervals in range((rows - 1) // 2, 0, -1):
        step = nice_step(hi - lo, intervals)
        bottom = math.floor(lo / step + 1e-9) * step
        needed = max(1, math.ceil((hi - bottom) / step - 1e-9))
        k = (rows - 1) // needed
        if k >= 2:
            top = bottom + step * (rows - 1) / k
            return bottom, top, [bottom + i * step for i in range((rows - 1) // k + 1)]
    return None


def integer_ticks(lo: float, hi: float, at_most: int) -> list[int]:
    """Whole epochs for the x axis, a round step apart, at most `at_most` of them."""
    step = max(1, int(nice_step(hi - lo, max(1, at_most - 1))))
    first = math.ceil(lo / step) * step
    return list(range(int(first), int(math.floor(hi)) + 1, step))


def fmt_tick(value: float, step: float) -> str:
    """A tick label with as many decimals as the step has (2.5 -> 1, 0.25 -> 2, 10 -> 0)."""
    decimals = next((d for d in range(6) if abs(step * 10 ** d - round(step * 10 ** d)) < 1e-6), 6)
    return f"{value:.{decimals}f}"


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
        self.call_after_refresh(self.redraw_last)

    _last: RunState | None = None  # what was drawn last (drawn again at a new size)

    def draw(self, st: RunState) -> None:
        self._last = st
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
            else:
                self._axes(plot, ys + ey, xs + ex, floor_zero=name == "acc")
            plt.xlabel("epoch")
            plot.refresh()

    def _axes(self, plot: PlotextPlot, values: list[float], epochs: list[float], floor_zero: bool) -> None:
        """Round ticks, evenly spaced, for the chart's size now (redrawn on resize)."""
        plt = plot.plt
        lo, hi = (0.0 if floor_zero else min(values)), max(values)
        axis = even_y_axis(lo, hi, plot.size.height - AXIS_ROWS)
        if axis is not None:
            bottom, top, ticks = axis
            step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
            plt.ylim(bottom, top)
            plt.yticks(ticks, [fmt_tick(t, step) for t in ticks])
        if epochs:
            ticks = integer_ticks(min(epochs), max(epochs), max(2, (plot.size.width - 8) // 7))
            if len(ticks) >= 2:
                plt.xticks(ticks, [str(t) for t in ticks])

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw_last)  # the charts have their new sizes by then

    def redraw_last(self) -> None:
        if self._last is not None:
            self.draw(self._last)
