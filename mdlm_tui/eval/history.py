"""The Eval screen's history: a suite's macro and per-field numbers against the checkpoint's step,
from the run's saved reports made with the same settings (core.saved_reports.history).

Each series has a marker of its own as well as a colour, so the plot reads the same with NO_COLOR.
It keeps what it last drew in `shown`, so a test can check what a person sees without reading cells.
"""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

from mdlm_tui.common.curves import CHROME_COLS, CHROME_ROWS, tick_labels, x_axis, y_axis
from mdlm_tui.common.guard import Guarded
from mdlm_tui.eval.metrics import METRICS

MARKERS = ("*", "o", "x", "+", "#", "@", "%", "&", "$", "=")  # macro first, then the fields in turn


class HistoryPlot(Guarded, PlotextPlot):
    DEFAULT_CSS = "HistoryPlot { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = "no saved report to plot yet"
        self.shown: list[tuple[str, list, list]] = []  # (label, steps, values x100) as drawn

    def on_mount(self) -> None:
        self.plt.title(self.title)

    def on_resize(self) -> None:
        self._draw()  # the axes' ticks are fitted to the size

    def show_history(
        self, title: str, series: list[tuple[str, list, list]], metric: str = "accuracy"
    ) -> None:
        """Plot `series` [(label, steps, values)], values as fractions shown x100 like every number here."""
        self.title = f"{title}: {METRICS.get(metric, METRICS['accuracy'])[0]} by step"
        self.shown = []
        for label, xs, ys in series:
            points = [(x, 100 * y) for x, y in zip(xs, ys) if math.isfinite(y)]  # NaN: nothing scored
            if points:
                self.shown.append((label, [x for x, _ in points], [y for _, y in points]))
        self._draw()

    def show_message(self, text: str) -> None:
        self.title, self.shown = text, []
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        for (label, xs, ys), marker in zip(self.shown, MARKERS):
            # a thin line to follow a series, and on each report's step the series' own marker
            plt.plot(xs, ys, marker="braille")
            plt.scatter(xs, ys, label=label, marker=marker)
        if len(self.shown) > len(MARKERS):
            plt.title(f"{self.title} (first {len(MARKERS) - 1} fields)")
        self._set_ticks()
        self.refresh()

    def _set_ticks(self) -> None:
        xs = [x for _, steps, _ in self.shown for x in steps]
        ys = [y for _, _, values in self.shown for y in values]
        rows = self.size.height - CHROME_ROWS
        if not xs or not ys or rows < 2:
            return
        # the legend takes the canvas's top rows: the points stay below it
        room = min(len(self.shown), len(MARKERS)) if rows - len(self.shown) >= 2 else 0
        ylim, yticks = y_axis(min(ys), max(ys), rows, room)
        labels = tick_labels(yticks)
        columns = self.size.width - CHROME_COLS - max(map(len, labels))
        xlim, xticks = x_axis(min(xs), max(xs), columns)
        steps = sorted(set(xs))
        if len(steps) > 1 and len(steps) * (len(str(steps[-1])) + 3) <= columns:
            xticks = steps  # few reports: a tick on each step evaluated, not between them
        self.plt.ylim(*ylim)
        self.plt.yticks(yticks, labels)
        self.plt.xlim(*xlim)
        self.plt.xticks(xticks, [str(x) for x in xticks])
