"""What a report's numbers mean, for the Eval screen and `mdlm-tui eval`: accuracy for most suites,
Spearman's rho for the wug tests, the gain in R^2 for reading; all shown x100, as the BabyLM pipeline
prints its results. Plain Python, and rich only when a table is printed."""

from __future__ import annotations

# metric -> (column header, short label after a UID or suite name)
METRICS = {
    "accuracy": ("accuracy", "acc"),
    "spearman": ("Spearman rho x100", "rho"),
    "delta_r2": ("R^2 gain %", "ΔR²"),
}
# The pipeline's summary lines (calculate_results_from_pred.py), in its order: suite, per-field key or None
SUMMARY_ROWS = (
    ("BLiMP", "blimp", None),
    ("BLiMP supplement", "supplement", None),
    ("EWoK", "ewok", None),
    ("entity tracking", "entity_tracking", None),
    ("wug adj", "wug_adj", None),
    ("wug past", "wug_past", None),
    ("reading (SPR)", "reading", "self_paced_reading"),
    ("reading (ET)", "reading", "eye_tracking"),
)


def metric_of(report) -> str:
    metric = report.get("metric") if isinstance(report, dict) else getattr(report, "metric", None)
    return metric if metric in METRICS else "accuracy"


def short_label(metric: str | None) -> str:
    return METRICS.get(metric or "accuracy", METRICS["accuracy"])[1]


def points(value) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def summary_rows(reports: list) -> list[tuple[str, str, str, str]]:
    """(task, metric, n, score) for each pipeline task among the reports, in the pipeline's order."""
    by_suite = {getattr(report, "suite", None): report for report in reports}
    rows = []
    for label, suite, part in SUMMARY_ROWS:
        report = by_suite.get(suite)
        if report is not None:
            value = report.per_field.get(part) if part else report.macro
            rows.append((label, METRICS[metric_of(report)][0], f"{report.n:,}", points(value)))
    return rows


def print_report(report, width: int | None) -> None:
    """A suite whose numbers are not accuracies: per-UID rows under the metric's own header."""
    from rich.console import Console
    from rich.table import Table

    metric = metric_of(report)
    limit = f", at most {report.limit} items a UID" if report.limit else ""
    table = Table(
        title=f"{report.suite} ({report.backend}, {report.n:,} items{limit}, {report.seconds:.0f} s)"
    )
    extra = metric == "delta_r2"  # reading: the two fits behind each gain
    for name in ("UID", "field", "n", METRICS[metric][0]) + (("R^2 baseline", "R^2 model") if extra else ()):
        table.add_column(name, justify="left" if name in ("UID", "field") else "right")
    for uid, row in report.per_uid.items():
        fits = (f"{row['r2_baseline']:.4f}", f"{row['r2_model']:.4f}") if extra else ()
        table.add_row(uid, row.get("field") or "", str(row["n"]), points(row["accuracy"]), *fits)
    table.add_section()
    for field, value in report.per_field.items():
        table.add_row(f"field: {field}", "", "", points(value), *(("", "") if extra else ()))
    table.add_row(
        "macro", "", str(report.n), points(report.macro), *(("", "") if extra else ()), style="bold"
    )
    Console(width=width).print(table)


def print_summary(reports: list, width: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="BabyLM zero-shot summary")
    for name in ("task", "metric", "n", "score"):
        table.add_column(name, justify="left" if name in ("task", "metric") else "right")
    for row in summary_rows(reports):
        table.add_row(*row)
    Console(width=width).print(table)
