"""A terminal line plot of one or more metric series against the step (textual-plotext)."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class CurvePlot(PlotextPlot):
    def __init__(self, title: str, **kwargs):
        super().__init__(**kwargs)
        self.title = title
        self.points = 0  # how many points the last draw showed (tests and the empty hint read it)

    def on_mount(self) -> None:
        self.draw([])

    def draw(self, series: list[tuple[str, list[float], list[float]]]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        self.points = 0
        legend = self.size.width >= 40  # in a narrow plot the legend would hide the curves; the title names them
        for label, xs, ys in series:
            if xs:
                plt.plot(xs, ys, label=label if legend else None, marker="braille")
                self.points += len(xs)
        if self.points == 0:
            plt.title(f"{self.title} (waiting)")
        self.refresh()
