"""The Eval screen's per-UID table: one row per paradigm as its score lands, next to an earlier
report's accuracy and the difference. Differences carry a sign, so they read without colour; the
comparison column's header names the step compared with ("vs step-80"), or "vs none"."""

from __future__ import annotations

from textual.widgets import DataTable

from core.saved_reports import SavedReport
from mdlm_tui.common.guard import Guarded
from mdlm_tui.eval.metrics import short_label

COLUMNS = (("UID", "uid"), ("n", "n"), ("acc %", "now"), ("vs none", "earlier"), ("Δ", "delta"))


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def signed_points(now: float | None, earlier: float | None) -> str:
    if now is None or earlier is None:
        return ""
    return f"{100 * (now - earlier):+.1f}"


def step_name(report: SavedReport) -> str:
    return f"step-{'?' if report.step is None else report.step}"


class EvalTable(Guarded, DataTable):
    """Rows keyed by suite/uid; `compare_with` picks, per suite, the report in the earlier column."""

    DEFAULT_CSS = "EvalTable { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.results: dict[tuple[str, str], dict] = {}  # (suite, uid) -> {"accuracy", "n", ...}
        self.earlier: dict[str, SavedReport | None] = {}  # suite -> report compared with

    def on_mount(self) -> None:
        if not self.columns:  # a reset before mounting added them
            self._add_columns(self.compared_label())

    def _add_columns(self, compared: str) -> None:
        for label, key in COLUMNS:
            self.add_column(compared if key == "earlier" else label, key=key)

    def compared_label(self) -> str:
        """The comparison column's header: the one step compared with, else "earlier" or "none"."""
        steps = {step_name(report) for report in self.earlier.values() if report is not None}
        return f"vs {steps.pop() if len(steps) == 1 else 'earlier' if steps else 'none'}"

    def reset(self) -> None:
        self.clear()
        self.results.clear()
        self.earlier.clear()
        self._relabel()

    def _relabel(self) -> None:
        """A new header is a new column: the table is rebuilt from its results."""
        label = self.compared_label()
        if self.columns and self.columns["earlier"].label.plain == label:
            return
        self.clear(columns=True)
        self._add_columns(label)
        for (suite, uid), result in self.results.items():
            self.add_result(suite, uid, result)

    def earlier_accuracy(self, suite: str, uid: str) -> float | None:
        report = self.earlier.get(suite)
        row = report.per_uid.get(uid) if report is not None else None
        return None if row is None else row.get("accuracy")

    def compare_with(self, suite: str, report: SavedReport | None) -> None:
        self.earlier[suite] = report
        self._relabel()
        for (row_suite, uid), result in self.results.items():
            if row_suite == suite:
                self._update(row_suite, uid, result)

    def add_result(self, suite: str, uid: str, result: dict) -> None:
        key = f"{suite}/{uid}"
        self.results[(suite, uid)] = result
        if key in self.rows:
            self._update(suite, uid, result)
            return
        earlier = self.earlier_accuracy(suite, uid)
        metric = result.get("metric") or "accuracy"  # a correlation or an R^2 gain says so after its UID
        label = uid if metric == "accuracy" else f"{uid} ({short_label(metric)})"
        self.add_row(
            label,
            str(result["n"]),
            percent(result["accuracy"]),
            percent(earlier),
            signed_points(result["accuracy"], earlier),
            key=key,
        )
        self.move_cursor(row=self.row_count - 1)  # follow the newest row

    def _update(self, suite: str, uid: str, result: dict) -> None:
        key = f"{suite}/{uid}"
        earlier = self.earlier_accuracy(suite, uid)
        self.update_cell(key, "earlier", percent(earlier))
        self.update_cell(key, "delta", signed_points(result["accuracy"], earlier))
