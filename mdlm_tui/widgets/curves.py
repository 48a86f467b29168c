"""A terminal line plot of one or more metric series against the step (textual-plotext)."""

from __future__ import annotations

from textual import events
from textual_plotext import PlotextPlot

from mdlm_tui.widgets.guard import Guarded

DOTS_PER_CELL = 2  # braille markers: two dots across each terminal cell


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
        legend = self.size.width >= 40  # in a narrow plot the legend would hide the curves; the title names them
        buckets = max(self.size.width, 40) * DOTS_PER_CELL  # one per column of dots
        for label, xs, ys in series:
            if xs:
                plt.plot(*thin(xs, ys, buckets), label=label if legend else None, marker="braille")
                self.points += len(xs)
        if self.points == 0:
            plt.title(f"{self.title} (waiting)")
        self.refresh()
