"""The run view's chart axes: round y labels exactly the same number of rows apart at every chart
height (plotext's own left labels out or unevenly spaced on a short chart: 55.0, 45.9, 36.7, 18.3),
whole epochs on the x axis."""
from __future__ import annotations

import re

import plotext
import pytest

from cifar_tui.tui.widgets.charts import AXIS_ROWS, even_y_axis, fmt_tick, integer_ticks

LABEL = re.compile(r"^\s*(-?\d+(?:\.\d+)?)┤")


def labelled_rows(lo: float, hi: float, height: int, use_axis: bool) -> list[tuple[int, float]]:
    """(row, value) of each y label plotext draws for points from lo to hi in a chart `height` rows high."""
    plt = plotext
    plt.clear_figure()
    plt.limit_size(False, False)  # as in the app (textual-plotext): the chart's size, not the terminal's
    plt.plotsize(60, height)
    plt.theme("clear")
    xs = [1, 2, 3, 4, 5, 6]
    plt.scatter(xs, [lo + (hi - lo) * i / 5 for i in range(6)])
    if use_axis:
        bottom, top, ticks = even_y_axis(lo, hi, height - AXIS_ROWS)
        plt.ylim(bottom, top)
        plt.yticks(ticks, [fmt_tick(t, ticks[1] - ticks[0]) for t in ticks])
    plt.xlabel("epoch")
    rows = re.sub(r"\x1b\[[0-9;]*m", "", plt.build()).splitlines()
    return [(i, float(m.group(1))) for i, line in enumerate(rows) if (m := LABEL.match(line))]


def evenly_spaced(labels: list[tuple[int, float]]) -> bool:
    gaps = {b[0] - a[0] for a, b in zip(labels, labels[1:])}
    steps = {round(a[1] - b[1], 6) for a, b in zip(labels, labels[1:])}
    return len(labels) >= 2 and len(gaps) == 1 and len(steps) == 1


@pytest.mark.parametrize("lo,hi", [(0.0, 55.0), (0.0, 8.3), (1.31, 4.6), (0.0, 99.0), (2.2, 2.9)])
def test_y_labels_are_round_and_evenly_spaced_at_every_height(lo, hi):
    for height in range(AXIS_ROWS + 3, 40):
        labels = labelled_rows(lo, hi, height, use_axis=True)
        assert evenly_spaced(labels), (height, labels)
        assert labels[-1][1] <= lo + 1e-9 and labels[0][1] >= hi - (labels[0][1] - labels[1][1])  # data inside


def test_plotexts_own_labels_are_uneven_on_a_short_chart():
    # the break this fixes: the 80x24 run view's accuracy chart has 6 canvas rows
    assert not evenly_spaced(labelled_rows(0.0, 55.0, 6 + AXIS_ROWS, use_axis=False))


def test_x_ticks_are_whole_epochs_a_round_step_apart():
    assert integer_ticks(0.25, 20, 9) == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert integer_ticks(0.1, 3, 9) == [1, 2, 3]
    assert integer_ticks(1, 200, 6) == [50, 100, 150, 200]
