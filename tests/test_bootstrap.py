"""The stratified bootstrap behind `mdlm-tui compare`'s intervals, on credits with known answers."""

import math

import numpy as np
import pytest

from core.bootstrap import macro, macro_interval, pairable, paired_difference, uid_weights


def test_constant_credits_give_a_point_interval():
    ones = {"a": [1] * 7, "b": [1] * 30}
    zeros = {"a": [0] * 7, "b": [0] * 30}
    assert macro_interval(ones) == (1.0, 1.0)
    assert macro_interval(zeros) == (0.0, 0.0)
    assert paired_difference(ones, zeros) == (1.0, 1.0, 1.0)


def test_one_uid_of_coin_flips_has_the_normal_half_width():
    for n in (200, 1000):
        credits = {"u": list(np.random.default_rng(n).integers(0, 2, n))}
        low, high = macro_interval(credits, resamples=2000)
        expected = 1.96 * math.sqrt(0.25 / n)
        assert abs((high - low) / 2 - expected) < 0.15 * expected
        assert low < macro(credits) < high


def test_the_macro_is_a_mean_over_uids_not_items():
    credits = {"small": [1, 1], "large": [0] * 98}
    assert macro(credits) == 0.5
    low, high = macro_interval(credits)
    assert (low, high) == (0.5, 0.5)  # every resample keeps each UID's count: nothing can move


def test_identical_runs_differ_by_exactly_nothing():
    rng = np.random.default_rng(3)
    credits = {f"u{i}": list(rng.integers(0, 2, 50)) for i in range(5)}
    assert paired_difference(credits, credits) == (0.0, 0.0, 0.0)


def test_pairing_narrows_the_interval_of_correlated_runs():
    rng = np.random.default_rng(4)
    a = {f"u{i}": rng.integers(0, 2, 300) for i in range(4)}
    b = {uid: np.where(rng.random(len(v)) < 0.05, 1 - v, v) for uid, v in a.items()}  # 5 % of items flip
    b_other_items = {uid: list(v[:-1]) for uid, v in b.items()}  # one item fewer: cannot be paired
    assert pairable(a, b) and not pairable(a, b_other_items)
    diff, low, high = paired_difference(a, b)
    _, low_u, high_u = paired_difference(a, b_other_items)
    assert low <= diff <= high
    assert (high - low) < 0.5 * (high_u - low_u)


def test_the_seed_makes_it_reproducible():
    rng = np.random.default_rng(5)
    a = {"u": list(rng.integers(0, 2, 100)), "v": list(rng.random(40))}  # fractional credits too
    b = {"u": list(rng.integers(0, 2, 100)), "v": list(rng.random(40))}
    assert macro_interval(a, seed=7) == macro_interval(a, seed=7)
    assert paired_difference(a, b, seed=7) == paired_difference(a, b, seed=7)
    assert macro_interval(a, seed=7) != macro_interval(a, seed=8)


def test_a_macro_over_fields_weights_each_field_alike():
    credits = {"x1": [1] * 4, "x2": [1] * 4, "y1": [0] * 4}
    weights = uid_weights({"x1": "x", "x2": "x", "y1": "y"})
    assert macro(credits, weights) == 0.5  # the mean of field x (1.0) and field y (0.0), not 2/3
    assert macro_interval(credits, weights=weights) == (0.5, 0.5)


def test_a_level_outside_zero_and_one_is_refused():
    with pytest.raises(ValueError):
        macro_interval({"u": [1, 0]}, level=95)
