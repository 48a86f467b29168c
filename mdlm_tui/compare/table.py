"""The comparison as rich tables: each run's results, each run against the baseline, and with --fields
each suite's fields. Numbers as the Eval screen shows them: accuracies x100, one decimal."""

from __future__ import annotations

from core.compare import Comparison, Difference, FieldScore, SuiteScore
from mdlm_tui.eval.metrics import short_label

REAL = "*"  # 0 lies outside the interval
UNPAIRED = "~"  # the two were scored on different items


def interval(value: float, low: float | None, high: float | None) -> str:
    """'78.3 [77.1, 79.5]', or the value alone without an interval."""
    text = f"{100 * value:.1f}"
    return text if low is None else f"{text} [{100 * low:.1f}, {100 * high:.1f}]"


def difference(d: Difference | None, loss: bool = False) -> str:
    if d is None:
        return ""
    if loss:
        return f"{d.value:+.4f}"
    text = f"{100 * d.value:+.1f}"
    if d.low is not None:
        text += f" [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
        text += (REAL if d.real else "") + ("" if d.paired else UNPAIRED)
    return text


def suite_header(comparison: Comparison, suite: str) -> str:
    metric = next((s[suite].metric for s in comparison.scores.values() if suite in s), "accuracy")
    return suite if metric == "accuracy" else f"{suite} ({short_label(metric)})"


def score_cell(score: SuiteScore | FieldScore | None) -> str:
    if score is None:
        return ""
    value = score.macro if isinstance(score, SuiteScore) else score.value
    text = interval(value, score.low, score.high)
    return text + " (other settings)" if getattr(score, "other_settings", False) else text


def results_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """(header, rows): run, group (when a sweep is among them), step, dev loss, each suite."""
    grouped = bool(comparison.groups)
    header = ["run", *(["group"] if grouped else []), "step", "dev loss"]
    header += [suite_header(comparison, suite) for suite in comparison.suites]
    rows = []
    for run in comparison.runs:
        scores = comparison.scores[run.name]
        rows.append(
            [
                run.name + (" (baseline)" if run.name == comparison.baseline else ""),
                *([run.group or ""] if grouped else []),
                "" if run.step is None else f"{run.step:,}",
                "" if run.dev_loss is None else f"{run.dev_loss:.4f}",
                *(score_cell(scores.get(suite)) for suite in comparison.suites),
            ]
        )
    return header, rows


def difference_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """(header, rows): each run other than the baseline, minus the baseline."""
    header = ["run", "dev loss"] + [suite_header(comparison, suite) for suite in comparison.suites]
    rows = []
    for run in comparison.runs:
        if run.name in comparison.differences:
            found = comparison.differences[run.name]
            rows.append(
                [
                    run.name,
                    difference(found.get("dev_loss"), loss=True),
                    *(difference(found.get(suite)) for suite in comparison.suites),
                ]
            )
    return header, rows


def field_rows(comparison: Comparison, suite: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row a field of the suite, one column a run."""
    names = sorted(
        {f for scores in comparison.scores.values() if suite in scores for f in scores[suite].fields}
    )
    header = ["field"] + [run.name for run in comparison.runs]
    rows = [
        [name] + [score_cell(_field(comparison, run.name, suite, name)) for run in comparison.runs]
        for name in names
    ]
    return header, rows


def _field(comparison: Comparison, run: str, suite: str, name: str) -> FieldScore | None:
    score = comparison.scores[run].get(suite)
    return None if score is None else score.fields.get(name)


def print_comparison(comparison: Comparison, fields: bool, width: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=width)

    def show(title: str, header: list[str], rows: list[list[str]], legend: str | None = None) -> None:
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 or name == "group" else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        if legend:  # under the table, not as its caption: a narrow table would fold it into a column
            console.print(legend, style="dim", highlight=False)

    show("Runs", *results_rows(comparison), legend=_intervals_legend(comparison))
    header, rows = difference_rows(comparison)
    if rows:
        marks = f"{REAL} 0 lies outside the {100 * comparison.level:g} % interval: a real difference"
        if any(d.paired is False for found in comparison.differences.values() for d in found.values()):
            marks += f"; {UNPAIRED} scored on different items, so an unpaired interval"
        show(f"Against {comparison.baseline}", header, rows, legend=marks)
    if fields:
        for suite in comparison.suites:
            header, rows = field_rows(comparison, suite)
            if rows:
                show(f"{suite} by field", header, rows)


def _intervals_legend(comparison: Comparison) -> str | None:
    if not any(s.low is not None for scores in comparison.scores.values() for s in scores.values()):
        return None
    return (
        f"x100 [{100 * comparison.level:g} % interval from a bootstrap over items, "
        f"{comparison.resamples:,} resamples]"
    )
