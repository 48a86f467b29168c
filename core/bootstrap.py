"""Confidence intervals for a suite's macro accuracy: a stratified bootstrap over its items.

Each resample draws every UID's items with replacement, keeping the UID's count, and takes the macro
(the mean over UIDs of each UID's mean credit). Drawing n items with replacement from a UID is the
same as drawing how often each distinct credit (or pair of credits) comes up from a multinomial, so
a UID of thousands of 0/1 items costs a draw over two values, not thousands: a BLiMP report of
67,000 items takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Credits = Mapping[str, Sequence[float]]  # uid -> the credit of each of its items, in [0, 1]


def macro(credits: Credits, weights: Mapping[str, float] | None = None) -> float:
    """The mean over UIDs of each UID's mean credit (a weighted mean with weights, see uid_weights)."""
    w = _weights(credits, weights)
    return float(sum(w[uid] * np.mean(values) for uid, values in credits.items()) / sum(w.values()))


def uid_weights(fields: Mapping[str, str | None]) -> dict[str, float]:
    """Weights that make the macro a mean over fields of their UIDs' means, for a suite whose macro
    averages its fields (uid -> field)."""
    sizes: dict[str | None, int] = {}
    for field in fields.values():
        sizes[field] = sizes.get(field, 0) + 1
    return {uid: 1.0 / sizes[field] for uid, field in fields.items()}


def macro_interval(
    credits: Credits,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
) -> tuple[float, float]:
    """(low, high): the percentile interval of the resampled macro."""
    (draws,) = _resampled_macros(credits, level, resamples, np.random.default_rng(seed), weights)
    return _percentiles(draws, level)


def pairable(credits_a: Credits, credits_b: Credits) -> bool:
    """Both hold the same UIDs with the same number of items each: item i of a UID is one item in
    both (two reports of one suite and limit), so they can be resampled together."""
    return credits_a.keys() == credits_b.keys() and all(
        len(credits_a[uid]) == len(credits_b[uid]) for uid in credits_a
    )


def paired_difference(
    credits_a: Credits,
    credits_b: Credits,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
    weights_b: Mapping[str, float] | None = None,
) -> tuple[float, float, float]:
    """(macro of a minus macro of b, low, high). The same items are drawn for both when they are
    pairable, which takes out what the two share (most items are easy or hard for both); otherwise
    each is resampled on its own, a wider interval (check with pairable). weights_b, for b's UIDs
    when they differ from a's, defaults to weights."""
    rng = np.random.default_rng(seed)
    weights_b = weights if weights_b is None else weights_b
    if pairable(credits_a, credits_b):
        together = {uid: np.column_stack([credits_a[uid], credits_b[uid]]) for uid in credits_a}
        draws_a, draws_b = _resampled_macros(together, level, resamples, rng, weights, columns=2)
    else:
        (draws_a,) = _resampled_macros(credits_a, level, resamples, rng, weights)
        (draws_b,) = _resampled_macros(credits_b, level, resamples, rng, weights_b)
    low, high = _percentiles(draws_a - draws_b, level)
    return macro(credits_a, weights) - macro(credits_b, weights_b), low, high


def _resampled_macros(
    credits: Mapping, level: float, resamples: int, rng, weights, columns: int = 1
) -> list[np.ndarray]:
    """The macro of each of `resamples` stratified resamples: one array per column of the items
    (columns=2: each item holds a pair of credits, both taken by one draw)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, got {level}")
    if not credits:
        raise ValueError("no UIDs to resample")
    w = _weights(credits, weights)
    totals = np.zeros((columns, resamples))
    for uid, values in credits.items():
        rows = np.asarray(values, dtype=float).reshape(len(values), columns)
        if len(rows) == 0:
            raise ValueError(f"UID {uid} has no items")
        distinct, counts = np.unique(rows, axis=0, return_counts=True)
        drawn = rng.multinomial(len(rows), counts / len(rows), size=resamples)  # resamples x distinct
        totals += w[uid] * (drawn @ distinct).T / len(rows)
    return list(totals / sum(w.values()))


def _weights(credits: Mapping, weights: Mapping[str, float] | None) -> Mapping[str, float]:
    if weights is not None:
        return weights
    return dict.fromkeys(credits, 1.0)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)
