"""The Compare screen: the runs marked on the Runs screen side by side. Their curves overlaid (each
run its own marker, so the legend reads without colour), smoothed on request, against the step,
tokens or training time; below, each run's dev loss and suite results with bootstrap intervals and
each run against the baseline, as `mdlm-tui compare` prints them. A sweep's runs carry its name.

The comparison is computed in a worker thread (a bootstrap over tens of thousands of items takes a
moment); core.compare and numpy load there, not when the app starts.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from mdlm_tui.common.guard import Guarded
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.compare.curves import X_CHOICES, CompareCurves, smooth

SMOOTHING = (0.0, 0.6, 0.8, 0.9, 0.95)  # the weight of an exponential moving average, as TensorBoard's
CURVE_TITLES = {"loss": "training loss", "dev_loss": "dev loss"}


class CompareScreen(Guarded, Screen):
    class Loaded(Message):
        def __init__(self, comparison, curves: dict) -> None:
            super().__init__()
            self.comparison, self.curves = comparison, curves

    class Failed(Message):
        def __init__(self, sentence: str) -> None:
            super().__init__()
            self.sentence = sentence

    BINDINGS = [
        Binding("v", "next_curve", "Curve"),
        Binding("x", "next_x", "X axis"),
        Binding("m", "next_smoothing", "Smoothing"),
        Binding("f5", "reload", "Reload", show=False),
        Binding("escape", "back", "Back", show=False),
    ]
    DEFAULT_CSS = """
    CompareScreen #compare-title { height: 1; padding: 0 1; text-style: bold; }
    CompareScreen #compare-controls { height: 1; padding: 0 1; color: $text-muted; }
    CompareScreen CompareCurves { height: 1fr; min-height: 8; }
    CompareScreen #compare-tables { height: auto; max-height: 45%; }
    CompareScreen DataTable { height: auto; max-height: 12; }
    CompareScreen #compare-notes { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, paths: list[Path]):
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.comparison = None
        self.curves: dict[str, dict] = {}  # x axis -> {curve name: [Series]}
        self.curve_names: list[str] = []
        self.curve = "loss"
        self.x = "step"
        self.smoothing = 0.0
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"Comparing {_runs(len(self.paths))} ...", id="compare-title")
        yield Static("", id="compare-controls")
        yield CompareCurves("training loss", id="compare-curves")
        with Vertical(id="compare-tables"):
            yield DataTable(id="compare-results", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="compare-differences", cursor_type="row", zebra_stripes=True)
        yield Static("", id="compare-notes")
        yield KeyBar()

    def on_mount(self) -> None:
        self._show_controls()
        self.action_reload()

    # ------------------------------------------------------------ loading (a worker thread)

    def action_reload(self) -> None:
        self.load(self.paths)

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def load(self, paths: list[Path]) -> None:
        from core.compare import compare_runs, curves, load_runs, with_baseline
        from core.errors import UserError

        notes: list[str] = []
        try:
            runs = load_runs(paths, notes)
            runs, baseline = with_baseline(runs, None, notes)
            comparison = compare_runs(runs, baseline, notes=notes)
            drawn = {}
            for x in X_CHOICES:
                try:
                    drawn[x] = curves(comparison, x)
                except UserError:  # no run counted this axis: it is not offered
                    continue
        except UserError as e:
            self.post_message(self.Failed(str(e)))
            return
        self.post_message(self.Loaded(comparison, drawn))

    def on_compare_screen_failed(self, message: Failed) -> None:
        self.error = message.sentence
        self.query_one("#compare-title", Static).update(f"Cannot compare: {message.sentence}")

    def on_compare_screen_loaded(self, message: Loaded) -> None:
        from mdlm_tui.compare.table import difference_rows, results_rows

        self.error = None
        self.comparison, self.curves = message.comparison, message.curves
        names = {name for drawn in self.curves.values() for name in drawn}
        self.curve_names = [n for n in ("loss", "dev_loss") if n in names] + sorted(
            n for n in names if n not in CURVE_TITLES
        )
        if self.curve not in self.curve_names and self.curve_names:
            self.curve = self.curve_names[0]
        groups = self.comparison.groups
        grouped = (
            f", {len(groups)} sweep{'s' if len(groups) > 1 else ''}: {', '.join(groups)}" if groups else ""
        )
        self.query_one("#compare-title", Static).update(
            f"Comparing {_runs(len(self.comparison.runs))}{grouped}; baseline {self.comparison.baseline}"
        )
        _fill(self.query_one("#compare-results", DataTable), *results_rows(self.comparison))
        differences = self.query_one("#compare-differences", DataTable)
        header, rows = difference_rows(self.comparison)
        differences.display = bool(rows)
        _fill(differences, [f"against {self.comparison.baseline}", *header[1:]], rows)
        self.query_one("#compare-notes", Static).update(_notes(self.comparison))
        self._draw()

    # ------------------------------------------------------------ the controls

    def action_next_curve(self) -> None:
        if self.curve_names:
            self.curve = _next(self.curve_names, self.curve)
            self._draw()

    def action_next_x(self) -> None:
        offered = [x for x in X_CHOICES if x in self.curves] or list(X_CHOICES)
        self.x = _next(offered, self.x)
        self._draw()

    def action_next_smoothing(self) -> None:
        self.smoothing = _next(list(SMOOTHING), self.smoothing)
        self._draw()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def _draw(self) -> None:
        self._show_controls()
        evaluation = self.curve not in CURVE_TITLES
        series = self.curves.get("step" if evaluation else self.x, {}).get(self.curve, [])
        weight = 0.0 if evaluation else self.smoothing  # a macro per checkpoint is not a noisy curve
        title = CURVE_TITLES.get(self.curve) or f"{self.curve.removeprefix('eval-')}: macro x100"
        plot = self.query_one(CompareCurves)
        plot.title = title
        plot.show(
            [
                (one.name, one.xs, [100 * y for y in one.ys] if evaluation else smooth(one.ys, weight))
                for one in series
            ],
            x="step" if evaluation else self.x,
        )

    def _show_controls(self) -> None:
        evaluation = self.curve not in CURVE_TITLES
        shown = CURVE_TITLES.get(self.curve, self.curve)
        parts = [
            f"v curve: {shown}",
            f"x axis: {'step' if evaluation else self.x}",
            f"m smoothing: {'off' if not self.smoothing else f'{self.smoothing:g}'}",
        ]
        self.query_one("#compare-controls", Static).update("   ".join(parts))


def _runs(count: int) -> str:
    return f"{count} run{'' if count == 1 else 's'}"


def _next(choices: list, current):
    return choices[(choices.index(current) + 1) % len(choices)] if current in choices else choices[0]


def _fill(table: DataTable, header: list[str], rows: list[list[str]]) -> None:
    table.clear(columns=True)
    for name in header:
        table.add_column(name, key=name)
    for row in rows:
        table.add_row(*row)


def _notes(comparison) -> str:
    from mdlm_tui.compare.table import REAL, UNPAIRED

    lines = []
    if any(s.low is not None for scores in comparison.scores.values() for s in scores.values()):
        lines.append(
            f"[low, high]: {100 * comparison.level:g} % interval, bootstrap over items; "
            f"{REAL} 0 outside it; {UNPAIRED} unpaired (other items)"
        )
    lines += comparison.notes[:2]
    return "\n".join(lines)
