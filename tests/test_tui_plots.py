"""The curve plots, rendered at fixed sizes: every y label at evenly spaced rows and values, whole
step numbers on x up to the last step, and a legend naming each series."""

from __future__ import annotations

import asyncio
import math
import re

import pytest
from textual.app import App

from mdlm_tui.common.curves import CurvePlot

STEPS = list(range(1, 316))
LOSS = [6.91 + 1.65 * math.exp(-s / 60) for s in STEPS]  # 8.56 down to 6.91, as in a short smoke run
DEV_STEPS = STEPS[9::10]
DEV = [y + 0.2 for y in LOSS[9::10]]


class PlotHost(App):
    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.plot_size = (width, height)

    def compose(self):
        plot = CurvePlot("loss", id="plot")
        plot.styles.width, plot.styles.height = self.plot_size
        yield plot


def rendered(width: int, height: int, series) -> list[str]:
    async def draw():
        app = PlotHost(width, height)
        async with app.run_test(size=(100, 40)) as pilot:
            plot = app.query_one(CurvePlot)
            while plot.size != (width, height):
                await pilot.pause()
            plot.draw(series)
            return plot.render().plain.splitlines()

    return asyncio.run(draw())


@pytest.mark.parametrize("size", [(26, 10), (26, 14), (40, 12), (40, 26), (60, 9)])
def test_plot_labels_are_even_whole_and_complete(size):
    lines = rendered(*size, [("train loss", STEPS, LOSS), ("dev loss", DEV_STEPS, DEV)])
    text = "\n".join(lines)
    # y: the labelled rows and their values are both evenly spaced: no label skipped
    labels = [(row, m[1]) for row, line in enumerate(lines) if (m := re.match(r"^\s*([-\d.e+]+)┤", line))]
    assert len(labels) >= 2, text
    ticks = [(row, float(label)) for row, label in labels]
    unit = 10.0 ** -len(labels[0][1].partition(".")[2])  # what rounding to the digits shown may move a label
    rows = {b[0] - a[0] for a, b in zip(ticks, ticks[1:])}
    assert len(rows) == 1, f"y labels at uneven rows:\n{text}"
    gaps = [a[1] - b[1] for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) - min(gaps) <= 1.01 * unit, f"y labels at uneven values {gaps}:\n{text}"
    assert abs(ticks[-1][1] - min(LOSS)) <= unit, text  # the lowest label is the lowest value
    # x: whole steps, from the first to the last
    xs = lines[-1].split()
    assert all(re.fullmatch(r"\d+", x) for x in xs), f"fractional step ticks {xs}:\n{text}"
    assert xs[0] == "1" and xs[-1] == "315" and len(xs) >= 2, f"x labels {xs}:\n{text}"
    # a legend inside the plot area names both series
    canvas = "\n".join(lines[1:-2])
    assert "train loss" in canvas and "dev loss" in canvas, f"no legend:\n{text}"


def test_a_single_point_and_a_flat_series_still_draw():
    lines = rendered(26, 10, [("lr", [5], [1e-3])])
    assert lines[-1].split() == ["5"], lines
    flat = rendered(26, 10, [("lr", STEPS, [1e-3] * len(STEPS))])
    assert flat[-1].split()[-1] == "315", flat
    assert any("1.0e-03" in line or "0.001" in line for line in flat), "\n".join(flat)
