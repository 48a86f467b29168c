"""A run's evaluation reports on disk, and the arithmetic to assemble one from per-UID parts.

Plain JSON and Python: no torch here, so the Eval screen lists reports at once; `mdlm-tui compare`
reads them too.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.eval_report import EvalReport, compact_credits, summarise, time_from_name
from core.runs import is_number

# <suite>-step-<N>-<backend><settings>[-<UTC time>[-<k>]], as core.evaluate.save_report names a report;
# reports saved before names had a time end at their settings
_REPORT_NAME = re.compile(
    r"^(?P<suite>.+)-step-(?P<step>\d+|x)-(?P<made>(?P<backend>[a-z]+)(-[^-]+)*?)"
    r"(-(?P<time>\d{8}T\d{6})(-\d+)?)?$"
)
# What besides the checkpoint changes a report's numbers (core.evaluate.report_settings writes them)
SETTINGS = ("backend", "limit", "weights", "rate_value", "draws")


@dataclass
class SavedReport:
    path: Path
    suite: str
    step: int | None
    backend: str
    macro: float
    per_uid: dict[str, dict]
    settings: dict | None = None  # None: a report from before reports recorded their settings
    metric: str = "accuracy"  # what macro and per-UID numbers are (mdlm_tui.eval.metrics.METRICS)
    per_field: dict[str, float] = field(default_factory=dict)
    time: float = 0.0  # unix seconds when it was made (the file's time for a report that does not say)
    made: str = ""  # the backend and the settings that are not the defaults, as its name says: "pll-limit20"
    # uid -> each item's credit as saved (core.eval_report), unchecked; None in reports from before them
    credits: dict | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """Suite, step, settings and time (UTC, as in file names), then the macro."""
        made = self.made or self.backend
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.time)) if self.time else "time unknown"
        unknown = "" if self.settings else ", settings unknown"
        step = "x" if self.step is None else self.step
        return f"{self.suite} step-{step} {made} {when} ({100 * self.macro:.1f}{unknown})"


def read_reports(run: Path, problems: list[str] | None = None) -> list[SavedReport]:
    """The run's suite reports (eval/*.json with per-UID results), newest first. Dev reports (a NELBO,
    no UIDs) are left out; so is a file that is not such a report, with a sentence in `problems`."""
    reports, unreadable = [], []
    for path in sorted((Path(run) / "eval").glob("*.json")):
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: anything may sit in a run folder
            data = None
        if isinstance(data, dict) and "per_uid" not in data:
            continue  # a dev report
        if not _is_report(data):
            unreadable.append(path.name)
            continue
        reports.append(_saved_report(path, data))
    if unreadable and problems is not None:
        problems.append(
            f"{len(unreadable)} unreadable report{'s' if len(unreadable) > 1 else ''} skipped "
            f"({', '.join(unreadable[:3])})"
        )
    # newest step first; at one step, the report made last
    return sorted(reports, key=lambda r: (r.step is None, -(r.step or 0), -r.time))


def _saved_report(path: Path, data: dict) -> SavedReport:
    match = _REPORT_NAME.match(path.stem)
    # the step its name says, which a person sees; else the one it records
    step = int(match["step"]) if match and match["step"].isdigit() else data.get("step")
    step = step if isinstance(step, int) and not isinstance(step, bool) else None
    when = data.get("time")
    if not (is_number(when) and 0 <= when < 1e11):  # a time a clock can show; else its name's, or its file's
        when = (time_from_name(match["time"]) if match and match["time"] else None) or _mtime(path)
    per_field = data.get("per_field")
    return SavedReport(
        path,
        str(data.get("suite", path.stem)),
        step,
        str(data.get("backend", "")),
        float(data.get("macro", float("nan"))),
        data["per_uid"],
        {key: data[key] for key in SETTINGS} if all(key in data for key in SETTINGS) else None,
        str(data.get("metric") or "accuracy"),
        {k: v for k, v in per_field.items() if is_number(v)} if isinstance(per_field, dict) else {},
        float(when),
        match["made"] if match else "",
        data.get("credits"),
    )


def _is_report(data) -> bool:
    """What the Eval screen's table and macro line need: per-UID dicts with a numeric n and accuracy."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("per_uid"), dict)
        and is_number(data.get("macro", 0.0))
        and all(
            isinstance(r, dict) and is_number(r.get("n")) and is_number(r.get("accuracy"))
            for r in data["per_uid"].values()
        )
    )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def earlier_report(
    reports: list[SavedReport], suite: str, step: int | None, settings: dict | None
) -> SavedReport | None:
    """The report to compare a new one with: the same suite and settings at the nearest lower step.
    None when there is none; a later step, or settings unknown on either side, never compare."""
    if step is None or settings is None:
        return None
    earlier = [
        r
        for r in reports
        if r.suite == suite and r.settings == settings and r.step is not None and r.step < step
    ]
    return max(earlier, key=lambda r: r.step, default=None)


def history(
    reports: list[SavedReport], suite: str, settings: dict | None, made: str = ""
) -> list[tuple[str, list, list]]:
    """The suite's macro and per-field numbers against the step, from its reports made with these
    settings: [("macro", steps, values), (field, steps, values) ...], one point a step, from the
    newest report of that step (reports come newest first, as read_reports gives them). Reports that
    do not record their settings go together only when their names say the same (`made`)."""
    newest: dict[int, SavedReport] = {}
    for report in reports:
        alike = report.settings == settings and (settings is not None or report.made == made)
        if report.suite == suite and alike and report.step is not None:
            newest.setdefault(report.step, report)
    chosen = [newest[step] for step in sorted(newest)]
    series = [("macro", [r.step for r in chosen], [r.macro for r in chosen])]
    for name in sorted({name for report in chosen for name in report.per_field}):
        points = [(r.step, r.per_field[name]) for r in chosen if name in r.per_field]
        field_series = (name, [step for step, _ in points], [value for _, value in points])
        if field_series[1:] != series[0][1:]:  # a field that holds every UID would repeat the macro
            series.append(field_series)
    return series


def assemble_report(
    suite: str,
    per_uid: dict[str, dict],
    seconds: float,
    checkpoint: str,
    settings: dict,
    skipped: int = 0,
    credits: dict[str, list[float]] | None = None,
) -> EvalReport:
    """An EvalReport from UIDs scored one at a time, with the same per-field and macro averages as
    core.evaluate.evaluate computes for a whole suite; settings as core.evaluate.report_settings,
    credits as evaluate saves them (uid -> each item's credit)."""
    per_field, macro = summarise(per_uid)
    return EvalReport(
        suite=suite,
        per_uid=per_uid,
        per_field=per_field,
        macro=macro,
        n=sum(r["n"] for r in per_uid.values()),
        seconds=seconds,
        checkpoint=checkpoint,
        skipped=skipped,  # items too long for the model, as core.evaluate.evaluate reports them
        time=time.time(),
        credits=None if credits is None else compact_credits(credits),
        **settings,
    )
