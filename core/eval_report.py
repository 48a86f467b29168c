"""What an evaluation reports: EvalReport, and the settings saved with it. Its own module, so that a
suite's evaluator (core.reading) and the report readers need neither core.evaluate nor each other."""

from __future__ import annotations

import calendar
import dataclasses
import json
import time as clock
from dataclasses import dataclass

# The UTC time a report was made, as its file name ends: eval/builtin-step-8-pll-20261130T174500.json
NAME_TIME_FORMAT = "%Y%m%dT%H%M%S"


@dataclass
class EvalReport:
    suite: str
    per_uid: dict[str, dict]  # uid -> {"accuracy", "n", "field", "term"}
    per_field: dict[str, float]  # field -> mean accuracy of its UIDs
    macro: float  # mean accuracy over UIDs
    n: int
    seconds: float
    backend: str
    checkpoint: str
    skipped: int = 0  # items left out because they are longer than the model's positions
    # What besides the checkpoint changes the numbers (see report_settings); None: not applicable
    limit: int | None = None  # items per UID, when that left some out
    weights: str | None = None  # ema | raw
    rate_value: float | str | None = None  # pll only
    draws: int | None = None  # nelbo only
    metric: str = "accuracy"  # what per_uid "accuracy" and macro hold: accuracy | spearman | delta_r2
    step: int | None = None  # the checkpoint's step, set when the report is saved
    time: float | None = None  # unix seconds when the scores were made
    # uid -> the credit of each of its items, in the suite's order (accuracy suites only): two reports
    # of one suite and limit hold the same items in the same order, so they can be compared item by item
    credits: dict[str, list[float]] | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def summarise(per_uid: dict[str, dict], macro_by_field: bool = False) -> tuple[dict[str, float], float]:
    """(per-field means, macro) of per-UID results: a field's mean over its UIDs, and the macro over
    UIDs, or over fields for a suite whose pipeline averages its files (macro_by_field)."""
    by_field: dict[str, list[float]] = {}
    for result in per_uid.values():
        if result.get("field") is not None:
            by_field.setdefault(result["field"], []).append(result["accuracy"])
    per_field = {field: sum(values) / len(values) for field, values in sorted(by_field.items())}
    means = list(per_field.values()) if macro_by_field else [r["accuracy"] for r in per_uid.values()]
    return per_field, sum(means) / len(means) if means else float("nan")


def compact_credits(credits: dict[str, list[float]]) -> dict[str, list[float]]:
    """Credits as saved: 0 and 1 (nearly every item) as ints, so a large suite's report stays small."""
    return {uid: [int(c) if c in (0, 1) else c for c in values] for uid, values in credits.items()}


def report_json(report: dict) -> str:
    """A report's JSON: indented as every run file, except its credits, one line per UID (thousands
    of items would otherwise take a line each)."""
    credits = report.get("credits")
    head = json.dumps({key: value for key, value in report.items() if key != "credits"}, indent=2)
    if not credits:
        return head[:-2] + f',\n  "credits": {json.dumps(credits)}\n}}\n'
    lines = ",\n".join(f"    {json.dumps(uid)}: {json.dumps(values)}" for uid, values in credits.items())
    return head[:-2] + ',\n  "credits": {\n' + lines + "\n  }\n}\n"


def name_time(seconds: float) -> str:
    return clock.strftime(NAME_TIME_FORMAT, clock.gmtime(seconds))


def time_from_name(stamp: str) -> float | None:
    try:
        return float(calendar.timegm(clock.strptime(stamp, NAME_TIME_FORMAT)))
    except ValueError:
        return None


def describe_dev(result: dict) -> str:
    """A dev report (core.evaluate.dev_report) in words, as the CLI and the Eval screen show it."""
    return (
        f"dev NELBO {result['dev_nelbo_per_token']:.4f} nats/token, "
        f"perplexity bound {result['dev_ppl_bound']:.2f}"
    )


def report_settings(scorer, suite) -> dict:
    """The settings saved in each report: only reports made alike are compared, and they are saved
    under different names (see save_report)."""
    return {
        "backend": getattr(scorer, "backend", type(scorer).__name__),
        "limit": getattr(suite, "limit", None),
        "weights": getattr(scorer, "model_weights", None),
        "rate_value": getattr(scorer, "rate_value", None),
        "draws": getattr(scorer, "draws", None),
    }
