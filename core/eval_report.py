"""What an evaluation reports: EvalReport, and the settings saved with it. Its own module, so that a
suite's evaluator (core.reading) and the report readers need neither core.evaluate nor each other."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
