"""Comparing runs: each run's final dev loss and, per evaluated suite, its macro with a bootstrap
interval; each run against a baseline; and the curves to overlay. Plain Python and numpy, so that
`mdlm-tui compare` and the TUI show the same numbers.

The reports are the runs' saved evaluation reports as core.saved_reports reads them (the Eval screen
reads them the same way).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import bootstrap
from core.errors import UserError
from core.runs import RunDir, is_number
from core.saved_reports import read_reports

SWEEP_INDEX = "sweep.json"  # written by `mdlm-tui sweep`: {"runs": [{"name", "path", "overrides"}, ...]}
X_AXES = ("step", "tokens", "words", "time")


@dataclass
class RunData:
    name: str
    path: Path
    group: str | None  # the sweep it came from
    records: list[dict]  # metrics.jsonl
    reports: list  # its suite reports, newest first
    overrides: dict = field(default_factory=dict)  # what its sweep changed

    def _last(self, key: str) -> dict | None:
        return next((r for r in reversed(self.records) if is_number(r.get(key))), None)

    @property
    def dev_loss(self) -> float | None:
        record = self._last("dev_loss")
        return None if record is None else float(record["dev_loss"])

    @property
    def dev_step(self) -> int | None:
        record = self._last("dev_loss")
        return None if record is None else record.get("step")

    @property
    def step(self) -> int | None:
        record = self._last("step")
        return None if record is None else record["step"]


@dataclass
class FieldScore:
    value: float
    low: float | None = None
    high: float | None = None


@dataclass
class SuiteScore:
    """A run's result on one suite: the report chosen for it, and the interval of its macro."""

    suite: str
    metric: str
    macro: float
    n: int
    step: int | None
    report: Path
    settings: dict | None
    low: float | None = None
    high: float | None = None
    other_settings: bool = False  # made with other settings than the suite's usual ones
    fields: dict[str, FieldScore] = field(default_factory=dict)
    credits: dict[str, list] | None = field(default=None, repr=False)
    weights: dict[str, float] | None = field(default=None, repr=False)  # a macro over fields


@dataclass
class Difference:
    """A run minus the baseline; low and high only when both hold credits for the same items' suite."""

    value: float
    low: float | None = None
    high: float | None = None
    paired: bool | None = None

    @property
    def real(self) -> bool | None:
        """0 lies outside the interval."""
        return None if self.low is None else self.low > 0 or self.high < 0


@dataclass
class Comparison:
    runs: list[RunData]
    baseline: str
    suites: list[str]
    scores: dict[str, dict[str, SuiteScore]]  # run name -> suite -> score
    differences: dict[str, dict[str, Difference]]  # run name -> "dev_loss" or suite -> difference
    level: float = 0.95
    resamples: int = 1000
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def groups(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for run in self.runs:
            if run.group is not None:
                found.setdefault(run.group, []).append(run.name)
        return found

    def settings(self, suite: str) -> dict | None:
        """The settings of the suite's reports that most runs share."""
        usual = [s for scores in self.scores.values() if (s := scores.get(suite)) and not s.other_settings]
        return usual[0].settings if usual else None

    def run(self, name: str) -> RunData:
        return next(run for run in self.runs if run.name == name)


# ---------------------------------------------------------------- finding and loading runs


def find_runs(paths: list[Path], notes: list[str]) -> list[tuple[Path, str | None, str | None, dict]]:
    """(run folder, group, name from its sweep, overrides) of each run the paths name: a run folder,
    a sweep folder (its sweep.json) or a folder whose subfolders are runs."""
    found = []
    for path in map(Path, paths):
        if RunDir(path).is_run():
            found.append((path, None, None, {}))
        elif (path / SWEEP_INDEX).is_file():
            found += _sweep_runs(path, notes)
        elif path.is_dir() and (inner := sorted(p for p in path.iterdir() if RunDir(p).is_run())):
            found += [(run, path.resolve().name, None, {}) for run in inner]
        elif not path.exists():
            raise UserError(f"{path} does not exist; give run folders or sweep folders.")
        else:
            raise UserError(
                f"{path} is neither a run (no config.yaml) nor a sweep "
                f"(no {SWEEP_INDEX}, no run folders in it)."
            )
    return found


def _sweep_runs(folder: Path, notes: list[str]) -> list[tuple[Path, str, str | None, dict]]:
    index = folder / SWEEP_INDEX
    try:
        data = json.loads(index.read_bytes())
    except (OSError, ValueError):
        data = None
    entries = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("path") for e in entries):
        raise UserError(f"{index} is not a sweep index (a JSON object whose runs each have a path).")
    group = str(data.get("name") or folder.resolve().name)
    runs, missing = [], 0
    for entry in entries:
        path = Path(str(entry["path"]))
        if not path.is_absolute() and (RunDir(folder / path).is_run() or not RunDir(path).is_run()):
            path = folder / path  # relative to the sweep folder, or else to where the command runs
        if RunDir(path).is_run():
            overrides = entry.get("overrides") if isinstance(entry.get("overrides"), dict) else {}
            runs.append((path, group, str(entry.get("name") or path.name), overrides))
        else:
            missing += 1
    if missing:
        verb = "has not started and is" if missing == 1 else "have not started and are"
        notes.append(f"{group}: {missing} of its {len(entries)} runs {verb} left out.")
    return runs


def load_runs(paths: list[Path], notes: list[str]) -> list[RunData]:
    """The runs the paths name, each once, with their metrics and reports. A run given itself must have
    metrics; a sweep's run that has none yet is left out with a note."""
    runs: list[RunData] = []
    seen: set[Path] = set()
    for path, group, name, overrides in find_runs(paths, notes):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        problems: list[str] = []
        records = RunDir(path).read_metrics(problems)
        notes += [f"{path.name}: {problem}" for problem in problems]
        if not records:
            if group is not None:
                notes.append(f"{group}: {path.name} has no metrics yet and is left out.")
                continue
            if problems:
                raise UserError(f"{path} has no readable metrics ({problems[0]}).")
            raise UserError(f"{path} has no metrics yet (metrics.jsonl is missing or empty).")
        problems = []
        reports = read_reports(path, problems)
        notes += [f"{path.name}: {problem}" for problem in problems]
        runs.append(RunData(name or path.name, path, group, records, reports, overrides))
    if not runs:
        raise UserError("There are no runs with metrics to compare.")
    return _unique_names(runs)


def _unique_names(runs: list[RunData]) -> list[RunData]:
    """Names are keys: the same name twice (one folder name in two sweeps, or in two places) is told
    apart by the group or the folder above, and a number if that is not enough."""
    for longer in (
        lambda run: f"{run.group}/{run.name}" if run.group else run.name,
        lambda run: f"{run.path.resolve().parent.name}/{run.name}",
    ):
        names = Counter(run.name for run in runs)
        for run in runs:
            if names[run.name] > 1:
                run.name = longer(run)
    seen: Counter = Counter()
    for run in runs:
        seen[run.name] += 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
    return runs


def with_baseline(runs: list[RunData], baseline: str | None, notes: list[str]) -> tuple[list[RunData], str]:
    """(runs, baseline name): the first run by default; a name among the runs or one's folder; or
    another run folder, which joins the runs first."""
    if baseline is None:
        return runs, runs[0].name
    for run in runs:
        if baseline == run.name or Path(baseline).resolve() == run.path.resolve():
            return runs, run.name
    if not RunDir(Path(baseline)).is_run():
        raise UserError(f"--baseline {baseline} is neither one of the runs compared nor a run folder.")
    (added,) = load_runs([Path(baseline)], notes)
    runs = _unique_names([added, *runs])  # may rename it: its name is read after
    return runs, added.name


# ---------------------------------------------------------------- the comparison


def compare_runs(
    runs: list[RunData],
    baseline: str | None = None,
    fields: bool = False,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    notes: list[str] | None = None,
) -> Comparison:
    """Per run and suite, the report at its latest step with the settings most reports of the suite
    share, the macro's interval from the report's credits, and each run minus the baseline. Notes
    (what was left out, and why) go to `notes`, which the comparison keeps."""
    notes = [] if notes is None else notes
    if baseline is not None and baseline not in {run.name for run in runs}:
        raise UserError(f"--baseline {baseline} is not one of the runs compared.")
    suites = sorted({report.suite for run in runs for report in run.reports})
    scores: dict[str, dict[str, SuiteScore]] = {run.name: {} for run in runs}
    for suite in suites:
        usual = _usual_settings(runs, suite)
        for run in runs:
            score = _score(run, suite, usual, fields, level, resamples, seed, notes)
            if score is not None:
                scores[run.name][suite] = score
    comparison = Comparison(runs, baseline or runs[0].name, suites, scores, {}, level, resamples, seed, notes)
    base = comparison.run(comparison.baseline)
    for run in runs:
        if run is not base:
            comparison.differences[run.name] = _differences(run, base, comparison)
    return comparison


def _key(settings: dict | None) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _usual_settings(runs: list[RunData], suite: str) -> str:
    """The settings most of the suite's reports were made with (on a tie, the first run's newest)."""
    counts = Counter(_key(r.settings) for run in runs for r in run.reports if r.suite == suite)
    return counts.most_common(1)[0][0]


def _score(run, suite, usual, fields, level, resamples, seed, notes) -> SuiteScore | None:
    mine = [r for r in run.reports if r.suite == suite]
    if not mine:
        return None
    alike = [r for r in mine if _key(r.settings) == usual]
    report = (alike or mine)[0]  # newest first: the latest step, and at that step the latest made
    if not alike:
        notes.append(f"{run.name}: its {suite} reports were made with other settings than the other runs'.")
    score = SuiteScore(
        suite,
        report.metric,
        report.macro,
        int(sum(r["n"] for r in report.per_uid.values())),
        report.step,
        Path(report.path),
        report.settings,
        other_settings=not alike,
    )
    if report.metric == "accuracy":
        score.credits = _credits(report, run.name, notes)
    if score.credits is not None:
        score.weights = _field_weights(report)
        score.low, score.high = bootstrap.macro_interval(score.credits, level, resamples, seed, score.weights)
    if fields:
        score.fields = _field_scores(report, score.credits, level, resamples, seed)
    return score


def _credits(report, run: str, notes: list[str]) -> dict[str, list] | None:
    """uid -> each item's credit, from the saved report; None for a report from before reports held
    them, or one whose credits do not match its per-UID counts."""
    credits = report.credits  # as read with the report: the file is not read again
    if credits is None:
        return None
    good = (
        isinstance(credits, dict)
        and credits
        and credits.keys() == report.per_uid.keys()
        and all(
            isinstance(values, list)
            and values
            and len(values) == report.per_uid[uid]["n"]
            and all(is_number(v) and 0 <= v <= 1 for v in values)
            for uid, values in credits.items()
        )
    )
    if not good:
        notes.append(f"{run}: the credits in {Path(report.path).name} do not match its results; no interval.")
        return None
    return {uid: credits[uid] for uid in report.per_uid}


def _field_weights(report) -> dict[str, float] | None:
    """Weights for a suite whose macro is the mean of its fields' means (entity tracking), else None."""
    per_uid = [r["accuracy"] for r in report.per_uid.values()]
    per_field = list(report.per_field.values())
    if not per_field or math.isclose(report.macro, sum(per_uid) / len(per_uid), abs_tol=1e-9):
        return None
    if not math.isclose(report.macro, sum(per_field) / len(per_field), abs_tol=1e-9):
        return None
    return bootstrap.uid_weights({uid: r.get("field") for uid, r in report.per_uid.items()})


def _field_scores(report, credits, level, resamples, seed) -> dict[str, FieldScore]:
    uids: dict[str, list[str]] = {}
    for uid, result in report.per_uid.items():
        if result.get("field") is not None:
            uids.setdefault(str(result["field"]), []).append(uid)
    scores = {}
    for name, members in sorted(uids.items()):
        value = report.per_field.get(name)
        if value is None:
            value = sum(report.per_uid[u]["accuracy"] for u in members) / len(members)
        score = FieldScore(float(value))
        if credits is not None:
            score.low, score.high = bootstrap.macro_interval(
                {u: credits[u] for u in members}, level, resamples, seed
            )
        scores[name] = score
    return scores


def _differences(run: RunData, base: RunData, comparison: Comparison) -> dict[str, Difference]:
    found = {}
    if run.dev_loss is not None and base.dev_loss is not None:
        found["dev_loss"] = Difference(run.dev_loss - base.dev_loss)
    mine, theirs = comparison.scores[run.name], comparison.scores[base.name]
    for suite in comparison.suites:
        a, b = mine.get(suite), theirs.get(suite)
        if a is None or b is None:
            continue
        difference = Difference(a.macro - b.macro)
        if a.credits is not None and b.credits is not None and _key(a.settings) == _key(b.settings):
            _, difference.low, difference.high = bootstrap.paired_difference(
                a.credits,
                b.credits,
                comparison.level,
                comparison.resamples,
                comparison.seed,
                a.weights,
                b.weights,
            )
            difference.paired = bootstrap.pairable(a.credits, b.credits)
            if not difference.paired:
                comparison.notes.append(
                    f"{run.name} and {base.name} were scored on different items of {suite}: "
                    "its interval is unpaired, so wider."
                )
        found[suite] = difference
    return found


# ---------------------------------------------------------------- JSON


def to_json(comparison: Comparison) -> dict:
    """Everything the comparison holds, as plain JSON (a number that is not finite becomes null)."""
    runs = []
    for run in comparison.runs:
        suites = {}
        for suite, s in comparison.scores[run.name].items():
            suites[suite] = {
                "metric": s.metric,
                "macro": s.macro,
                "low": s.low,
                "high": s.high,
                "n": s.n,
                "step": s.step,
                "report": str(s.report),
                "settings": s.settings,
                "other_settings": s.other_settings,
                "has_credits": s.credits is not None,
                **({"fields": {f: vars(v) for f, v in s.fields.items()}} if s.fields else {}),
            }
        differences = {
            key: {"value": d.value, "low": d.low, "high": d.high, "paired": d.paired, "real": d.real}
            for key, d in comparison.differences.get(run.name, {}).items()
        }
        runs.append(
            {
                "name": run.name,
                "path": str(run.path),
                "group": run.group,
                "overrides": run.overrides,
                "step": run.step,
                "dev_loss": run.dev_loss,
                "dev_step": run.dev_step,
                "suites": suites,
                "differences": differences,
            }
        )
    return _finite(
        {
            "baseline": comparison.baseline,
            "level": comparison.level,
            "resamples": comparison.resamples,
            "seed": comparison.seed,
            "groups": comparison.groups,
            "suites": {suite: {"settings": comparison.settings(suite)} for suite in comparison.suites},
            "runs": runs,
            "notes": comparison.notes,
        }
    )


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------- curves


@dataclass
class Series:
    name: str  # the run
    xs: list[float]
    ys: list[float]


def curves(comparison: Comparison, x: str = "step") -> dict[str, list[Series]]:
    """{"loss": [...], "dev_loss": [...], "eval-<suite>": [...]}: one series a run. Losses against
    `x` (step, tokens, words or time: seconds of training), each suite's macro against the step, one
    point a step from the reports made with the suite's usual settings."""
    if x not in X_AXES:
        raise UserError(f"--x must be one of {', '.join(X_AXES)}, got '{x}'.")
    found: dict[str, list[Series]] = {"loss": [], "dev_loss": []}
    counted = [run for run in comparison.runs if any(is_number(r.get(x)) for r in _train(run))]
    if x == "words" and not counted:
        raise UserError("None of these runs counted words in its metrics; plot against step, tokens or time.")
    if x == "words" and len(counted) < len(comparison.runs):
        left = [run.name for run in comparison.runs if run not in counted]
        comparison.notes.append(f"Left out of the loss curves: {', '.join(left)} (no word counts).")
    for run in comparison.runs:
        at = _x_of_step(run, x)
        if at is None:
            continue
        for key in ("loss", "dev_loss"):
            points = [(at(r["step"]), r[key]) for r in run.records if is_number(r.get(key)) and "step" in r]
            points = [(px, py) for px, py in points if px is not None]
            if points:
                found[key].append(Series(run.name, [p[0] for p in points], [p[1] for p in points]))
    for suite in comparison.suites:
        usual = _key(comparison.settings(suite))
        found[f"eval-{suite}"] = []
        for run in comparison.runs:
            newest: dict[int, float] = {}
            for report in run.reports:  # newest first: the first at a step is the one to show
                if report.suite == suite and _key(report.settings) == usual and report.step is not None:
                    newest.setdefault(report.step, report.macro)
            if newest:
                steps = sorted(newest)
                found[f"eval-{suite}"].append(Series(run.name, steps, [newest[s] for s in steps]))
    return {name: series for name, series in found.items() if series}


def _train(run: RunData) -> list[dict]:
    return [r for r in run.records if r.get("event", "train") == "train" and is_number(r.get("step"))]


def _x_of_step(run: RunData, x: str) -> Callable[[int], float | None] | None:
    """step -> x for this run: a dev record carries only its step, so its tokens, words or time are
    read off the training records, interpolated between two of them."""
    if x == "step":
        return float
    if x == "time":
        start = next((r["time"] for r in run.records if is_number(r.get("time"))), None)
        pairs = [
            (r["step"], r["elapsed"] if is_number(r.get("elapsed")) else r["time"] - start)
            for r in _train(run)
            if is_number(r.get("elapsed")) or is_number(r.get("time"))
        ]
    else:
        pairs = [(r["step"], r[x]) for r in _train(run) if is_number(r.get(x))]
    if not pairs:
        return None
    steps, values = zip(*sorted(pairs))

    def at(step: int) -> float | None:
        if step < steps[0] or step > steps[-1]:
            return None
        return float(np.interp(step, steps, values))

    return at
