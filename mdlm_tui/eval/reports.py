"""A run's evaluation reports on disk, and the arithmetic to assemble one from per-UID parts.

Plain JSON and Python: no torch here, so the Eval screen can list and compare reports at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.runs import is_number

_REPORT_NAME = re.compile(r"^(?P<suite>.+)-step-(?P<step>\d+|x)-(?P<backend>[a-z]+)(-[^-]+)*$")
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

    @property
    def label(self) -> str:
        # the file name says the step and the settings that are not the defaults
        return f"{self.path.stem} ({100 * self.macro:.1f}){'' if self.settings else ', settings unknown'}"


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
        match = _REPORT_NAME.match(path.stem)
        step = int(match["step"]) if match and match["step"].isdigit() else None
        settings = {key: data[key] for key in SETTINGS} if all(key in data for key in SETTINGS) else None
        reports.append(
            SavedReport(
                path,
                str(data.get("suite", path.stem)),
                step,
                str(data.get("backend", "")),
                float(data.get("macro", float("nan"))),
                data["per_uid"],
                settings,
                str(data.get("metric") or "accuracy"),
            )
        )
    if unreadable and problems is not None:
        problems.append(
            f"{len(unreadable)} unreadable report{'s' if len(unreadable) > 1 else ''} skipped "
            f"({', '.join(unreadable[:3])})"
        )
    # newest step first; at one step, the file written last
    return sorted(reports, key=lambda r: (r.step is None, -(r.step or 0), -_mtime(r.path)))


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


def assemble_report(
    suite: str, per_uid: dict[str, dict], seconds: float, checkpoint: str, settings: dict, skipped: int = 0
):
    """An EvalReport from UIDs scored one at a time, with the same per-field and macro averages as
    core.evaluate.evaluate computes for a whole suite; settings as core.evaluate.report_settings."""
    from core.evaluate import EvalReport  # the report type saved by the CLI; imported when one is built

    by_field: dict[str, list[float]] = {}
    for result in per_uid.values():
        if result.get("field") is not None:
            by_field.setdefault(result["field"], []).append(result["accuracy"])
    return EvalReport(
        suite=suite,
        per_uid=per_uid,
        per_field={field: sum(values) / len(values) for field, values in sorted(by_field.items())},
        macro=sum(r["accuracy"] for r in per_uid.values()) / len(per_uid) if per_uid else float("nan"),
        n=sum(r["n"] for r in per_uid.values()),
        seconds=seconds,
        checkpoint=checkpoint,
        skipped=skipped,  # items too long for the model, as core.evaluate.evaluate reports them
        **settings,
    )
