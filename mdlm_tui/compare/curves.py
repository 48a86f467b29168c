"""Overlaid curves of several runs: each run its own marker character as well as its own colour, so
the legend tells them apart under NO_COLOR or on a monochrome terminal; x ticks in the axis's units."""

from __future__ import annotations

from mdlm_tui.common import formatting as fmt
from mdlm_tui.common.curves import (
    CHROME_COLS,
    CHROME_ROWS,
    DOTS_PER_CELL,
    CurvePlot,
    thin,
    tick_labels,
    y_axis,
)

X_CHOICES = ("step", "tokens", "time")  # words too in `mdlm-tui compare --x`; the screen keeps three
MARKERS = ("•", "+", "x", "o", "*", "#", "=", "%")
X_LABELS = {"step": "step", "tokens": "tokens", "time": "training time"}


def smooth(values: list[float], weight: float) -> list[float]:
    """An exponential moving average, corrected for its start (as TensorBoard smooths): weight 0 is the
    curve itself, 0.9 averages over about ten points."""
    if not weight:
        return list(values)
    out, average = [], 0.0
    for n, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**n))
    return out


def x_ticks(lo: float, hi: float, columns: int, x: str) -> tuple[list[float], list[str]]:
    """About one tick per 12 columns from lo to hi, labelled as counts (1.2M) or durations (1h05m)."""
    count = max(2, min(6, columns // 12))
    ticks = [lo + i * (hi - lo) / (count - 1) for i in range(count)] if hi > lo else [lo]
    if x == "time":
        return ticks, [fmt.duration(t) for t in ticks]
    if x == "tokens":
        return ticks, [fmt.count(t) for t in ticks]
    return ticks, [f"{round(t):d}" for t in ticks]


class CompareCurves(CurvePlot):
    def show(self, series: list[tuple[str, list[float], list[float]]], x: str = "step") -> None:
        """Plot one curve a run; a legend names them, each by its marker."""
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        drawn = [(label, xs, ys) for label, xs, ys in series if xs]
        self.points = sum(len(xs) for _, xs, _ in drawn)
        if not drawn:
            plt.title(f"{self.title} (nothing to show yet)")
            self.refresh()
            return
        buckets = max(self.size.width, 40) * DOTS_PER_CELL
        for (label, xs, ys), marker in zip(drawn, _cycle(MARKERS, len(drawn))):
            plt.plot(*thin(xs, ys, buckets), label=label, marker=marker)
        self._ticks(drawn, x)
        plt.xlabel(X_LABELS[x])
        self.refresh()

    def _ticks(self, drawn: list, x: str) -> None:
        xs = [v for _, steps, _ in drawn for v in steps]
        ys = [v for _, _, values in drawn for v in values if v == v]
        rows = self.size.height - CHROME_ROWS - 1  # the x label's row
        if not ys or rows < 2:
            return
        room = len(drawn) if rows - len(drawn) >= 2 else 0  # the legend's rows stay clear of the curves
        ylim, yticks = y_axis(min(ys), max(ys), rows, room)
        ylabels = tick_labels(yticks)
        columns = self.size.width - CHROME_COLS - max(map(len, ylabels))
        ticks, labels = x_ticks(min(xs), max(xs), columns, x)
        self.plt.ylim(*ylim)
        self.plt.yticks(yticks, ylabels)
        self.plt.xlim(min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1)
        self.plt.xticks(ticks, labels)


def _cycle(items: tuple, n: int) -> list:
    return [items[i % len(items)] for i in range(n)]
