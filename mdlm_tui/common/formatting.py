"""Numbers as a person reads them: durations, ages, losses, percentages."""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "--"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def age(seconds: float | None) -> str:
    return "--" if seconds is None else f"{duration(seconds)} ago"


def number(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "--"


def scientific(value) -> str:
    return f"{value:.2e}" if isinstance(value, (int, float)) else "--"


def percent(fraction) -> str:
    return f"{100 * fraction:.1f}%" if isinstance(fraction, (int, float)) else "--"


def count(value) -> str:
    """1234567 -> 1.23M: tokens and rates in a narrow column."""
    if not isinstance(value, (int, float)):
        return "--"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def eval_label(evaluation: dict | None) -> str:
    """`blimp 57.6%`: a suite's macro accuracy from an eval record or a saved report; `--` without one."""
    if not evaluation or not isinstance(evaluation.get("macro"), (int, float)):
        return "--"
    return f"{evaluation.get('suite', 'eval')} {percent(evaluation['macro'])}"
