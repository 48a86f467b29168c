"""The Configure screen's three plots. Each keeps the data it last drew in `shown`, so what a
person sees can also be checked by a test without reading terminal cells.

Series differ by marker as well as colour, so the plots read the same with NO_COLOR.
"""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

from mdlm_tui.common.guard import Guarded
from mdlm_tui.configure.previews import FrequencyPreview, SchedulePreview


class _PreviewPlot(Guarded, PlotextPlot):
    shown: object | None = None

    def on_mount(self) -> None:
        super().on_mount()
        self.plt.title("waiting for a valid config")

    def _start(self, title: str) -> None:
        self.plt.clear_figure()
        self.plt.title(title)


class MaskRateHistogram(_PreviewPlot):
    """How often each mask rate r is drawn: the schedule's law of r, at progress 0."""

    def show_preview(self, preview: SchedulePreview) -> None:
        self.shown = preview
        if preview.rates_end is None:
            self._start(f"mask rate r ({preview.name}), E[r] = {preview.mean_rate:.3f}")
            self.plt.hist(preview.rates, bins=25, marker="hd")
        else:  # the bimodal right mode moves during training: show where it starts and ends
            self._start(
                f"mask rate r ({preview.name}), E[r] {preview.mean_rate:.3f} -> {preview.mean_rate_end:.3f}"
            )
            self.plt.hist(preview.rates, bins=25, marker="hd", label="start")
            self.plt.hist(preview.rates_end, bins=25, marker="x", label="end")
        self.plt.xlabel("mask rate r")
        self.refresh()


class WeightVsRate(_PreviewPlot):
    """The NELBO weight |alpha'|^p / r against r, log scale: where p tames (or not) the tails.

    The logarithm is taken here, not by plotext's log axis: plotext takes it in place each time the
    figure is built, so the second build (a resize) took the log of a log and of negative numbers."""

    def show_preview(self, preview: SchedulePreview) -> None:
        self.shown = preview
        self._start(
            f"weight, p = {preview.power:g}: median {preview.weight_p50:.3g}, p99 {preview.weight_p99:.3g}"
        )
        # every 4th draw is enough points for a terminal and keeps redrawing cheap; a weight of 0 (or
        # not finite) has no place on a log axis
        points = [
            (r, math.log10(w))
            for r, w in zip(preview.rates[::4], preview.weights[::4])
            if w > 0 and math.isfinite(w)
        ]
        if points:
            rates, logs = zip(*points)
            self.plt.scatter(rates, logs, marker="dot")
            low, high = min(logs), max(logs)
            ticks = list(range(math.ceil(low), math.floor(high) + 1))  # the decades the data spans
            ticks = ticks if len(ticks) > 1 else sorted({low, high})
            self.plt.yticks(ticks, [f"{10.0**tick:.3g}" for tick in ticks])
        self.plt.xlabel("mask rate r")
        self.refresh()


class FrequencyRankPlot(_PreviewPlot):
    """Mean masking probability per frequency-rank bucket on one real batch, against uniform masking."""

    def on_mount(self) -> None:
        super().on_mount()
        self.plt.title("press f (or the button) to preview masking on a real batch")

    def show_preview(self, preview: FrequencyPreview) -> None:
        """Masking probability relative to the sequence's rate, per rank bucket: 1 everywhere for
        uniform masking; above 1 for rare tokens and below for frequent ones when frequency-informed."""
        self.shown = preview
        self._start(
            f"q / r by frequency rank: {preview.kind}, p = {preview.power:g}, {preview.sequences} seqs"
        )
        x = preview.bucket_centres
        self.plt.plot(x, preview.relative, marker="*", label=preview.kind)
        if preview.kind != "uniform":
            self.plt.plot(x, [1.0] * len(x), marker="·", label="uniform")
        self.plt.xlabel("rank percentile (0 = most frequent)")
        self.refresh()

    def show_message(self, text: str) -> None:
        self._start(text)
        self.refresh()
