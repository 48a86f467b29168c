"""A terminal line plot of one or more metric series against the step (textual-plotext)."""

from __future__ import annotations

import math

from textual import events
from textual_plotext import PlotextPlot

from mdlm_tui.common.guard import Guarded

DOTS_PER_CELL = 2  # braille markers: two dots across each terminal cell
CHROME_ROWS = 4  # rows of a plot outside its canvas: the title, the two x axes and the x labels
CHROME_COLS = 2  # the two y axes
MAX_Y_TICKS = 5


def thin(xs: list[float], ys: list[float], buckets: int) -> tuple[list[float], list[float]]:
    """About 2 * `buckets` points that draw the same curve at that resolution: each bucket of
    consecutive points keeps its lowest and its highest, in step order, so a spike stays visible.

    Plotting costs time per point on the UI thread (5,000 points: about 65 ms a plot on 2 cores),
    while a plot 30 cells wide shows 60 columns of dots.
    """
    n = len(xs)
    if n <= 2 * buckets:
        return xs, ys
    out_x, out_y = [], []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        keep = {min(range(lo, hi), key=ys.__getitem__), max(range(lo, hi), key=ys.__getitem__)}
        keep |= {0, n - 1} & {lo, hi - 1}  # the ends too, so the x axis spans the same steps
        for i in sorted(keep):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def tick_labels(ticks: list[float]) -> list[str]:
    """Just enough digits for a tick gap to read right; a learning rate in scientific notation."""
    gap = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 0.0
    big = max(abs(t) for t in ticks)
    gap = gap or big or 1.0
    if big and (big < 1e-2 or big >= 1e5):
        digits = max(1, math.ceil(math.log10(10 * big / gap)) - 1)
        return [f"{t:.{digits}e}" for t in ticks]
    digits = max(0, math.ceil(-math.log10(gap / 10)))
    return [f"{t:.{digits}f}" for t in ticks]


def y_axis(lo: float, hi: float, rows: int, headroom: int = 0) -> tuple[tuple[float, float], list[float]]:
    """Limits and ticks for a canvas `rows` high, the data filling all but the top `headroom` rows.

    Each tick is the value of a row, every `gap` rows from the bottom: plotext rounds a tick to its
    row, so ticks between rows would land unevenly, and two on one row would hide a label."""
    if lo == hi:  # a flat series (a constant learning rate): on the bottom row, which is labelled
        hi = lo + (abs(lo) or 1.0)
    per_row = (hi - lo) / max(rows - 1 - headroom, 1)
    gap = max(2, math.ceil((rows - 1) / (MAX_Y_TICKS - 1)))
    return (lo, lo + per_row * (rows - 1)), [lo + row * per_row for row in range(0, rows, gap)]


def x_axis(lo: float, hi: float, columns: int) -> tuple[tuple[float, float], list[int]]:
    """Limits and whole-step ticks from the first step to the last, spaced so no label overlaps
    another (plotext drops a label that would touch its neighbour, the last one first)."""
    lo, hi = math.floor(lo), math.ceil(hi)
    if lo == hi:
        return (lo - 1, hi + 1), [lo]
    count = min(hi - lo + 1, max(2, 1 + (columns - 1) // (len(str(hi)) + 3)))
    return (lo, hi), sorted({round(lo + i * (hi - lo) / (count - 1)) for i in range(count)})


class CurvePlot(Guarded, PlotextPlot):
    def __init__(self, title: str, **kwargs):
        super().__init__(**kwargs)
        self.title = title
        self.points = 0  # how many points the last draw was given (tests and the empty hint read it)
        self._series: list[tuple[str, list[float], list[float]]] = []
        self._drawn: tuple | None = None  # what the plot shows now, to skip drawing it again

    def on_mount(self) -> None:
        self.draw([])

    def on_resize(self, event: events.Resize) -> None:
        if self._series:  # thinned for the old width: draw again for the new one
            self._drawn = None
            self.draw(self._series)

    def draw(self, series: list[tuple[str, list[float], list[float]]]) -> None:
        """Plot `series` [(label, steps, values)]; nothing to do when they end where they ended
        (a dev curve between evaluations): rendering a plot is the costly part of a live screen."""
        drawn = tuple((label, len(xs), xs[-1:], ys[-1:]) for label, xs, ys in series)
        if drawn == self._drawn:
            return
        self._series, self._drawn = series, drawn
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        self.points = 0
        drawn = [(label, xs, ys) for label, xs, ys in series if xs]
        legend = len(drawn) > 1  # one curve is named by the title
        buckets = max(self.size.width, 40) * DOTS_PER_CELL  # one per column of dots
        for label, xs, ys in drawn:
            plt.plot(*thin(xs, ys, buckets), label=label if legend else None, marker="braille")
            self.points += len(xs)
        if self.points == 0:
            plt.title(f"{self.title} (waiting)")
        else:
            self._set_ticks(drawn, legend)
        self.refresh()

    def _set_ticks(self, drawn: list, legend: bool) -> None:
        xs = _finite(x for _, steps, _ in drawn for x in steps)
        ys = _finite(y for _, _, values in drawn for y in values)
        rows = self.size.height - CHROME_ROWS
        if not xs or not ys or rows < 2:
            return
        # the legend sits in the canvas's top rows: the curves stay below it, so it hides none
        room = len(drawn) if legend and rows - len(drawn) >= 2 else 0
        ylim, yticks = y_axis(min(ys), max(ys), rows, room)
        ylabels = tick_labels(yticks)
        columns = self.size.width - CHROME_COLS - max(map(len, ylabels))
        xlim, xticks = x_axis(min(xs), max(xs), columns)
        self.plt.ylim(*ylim)
        self.plt.yticks(yticks, ylabels)
        self.plt.xlim(*xlim)
        self.plt.xticks(xticks, [str(x) for x in xticks])
