import math

import pytest
import torch

from core.config import ScheduleConfig
from core.schedules import (
    RATE_FLOOR,
    BimodalGaussian,
    Cosine,
    CosineSquared,
    Gaussian,
    Linear,
    LogLinear,
    build_schedule,
    nelbo_weight,
    stratified_t,
    summarize,
)

NAMES = ["linear", "cosine", "cosine-squared", "log-linear", "gaussian", "bimodal"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("linear", 0.5),
        ("cosine", 1 - 2 / math.pi),
        ("cosine-squared", 0.5),
        ("log-linear", 0.4995),
        ("gaussian", 0.3),
    ],
)
def test_mean_rate_matches_the_spec(name, expected):
    assert summarize(ScheduleConfig(name=name), samples=100_000)["mean_rate"] == pytest.approx(
        expected, abs=1e-3
    )


def test_cosine_mean_rate_is_the_papers_0_3634():
    assert summarize(ScheduleConfig(name="cosine"))["mean_rate"] == pytest.approx(0.3634, abs=5e-4)


@pytest.mark.parametrize("progress, expected", [(0.0, 0.232), (0.5, 0.303), (1.0, 0.346)])
def test_bimodal_mean_rate_moves_as_released(progress, expected):
    summary = summarize(ScheduleConfig(name="bimodal"), progress=progress)
    assert summary["mean_rate"] == pytest.approx(expected, abs=2e-3)
    assert BimodalGaussian().mean_rate(progress) == pytest.approx(expected, abs=5e-4)


def test_bimodal_right_mode_ends_at_0_685_with_k_1():
    assert BimodalGaussian().mu_right(1.0) == pytest.approx(0.40 + 0.45 * (1 - math.exp(-1)))
    assert BimodalGaussian().mu_right(1.0) == pytest.approx(0.685, abs=1e-3)


def test_bimodal_weights_at_power_0_1_match_the_spec():
    weight = summarize(ScheduleConfig(name="bimodal", power=0.1))["weight"]
    assert weight["p50"] == pytest.approx(5.6, abs=0.1)
    assert weight["p99"] == pytest.approx(12.0, abs=0.3)


def test_bimodal_weights_explode_at_power_1():
    assert summarize(ScheduleConfig(name="bimodal", power=1.0))["weight"]["max"] > 1e4


def test_cosine_at_half_time_by_hand():
    rate, abs_dalpha = Cosine().sample(torch.tensor([0.5]))
    r = 1 - math.cos(math.pi / 4)
    slope = math.pi / 2 * math.sin(math.pi / 4)
    assert rate.item() == pytest.approx(r, rel=1e-6)
    assert abs_dalpha.item() == pytest.approx(slope, rel=1e-6)
    assert nelbo_weight(rate, abs_dalpha, 0.0).item() == pytest.approx(1 / r, rel=1e-6)  # 3.4142
    assert nelbo_weight(rate, abs_dalpha, 0.1).item() == pytest.approx(slope**0.1 / r, rel=1e-6)  # 3.4504
    assert nelbo_weight(rate, abs_dalpha, 1.0).item() == pytest.approx(slope / r, rel=1e-6)  # 3.7922


def test_linear_weight_is_one_over_t_at_every_power():
    t = torch.tensor([0.1, 0.25, 0.5, 0.9])
    rate, abs_dalpha = Linear().sample(t)
    for power in (0.0, 0.1, 1.0):
        torch.testing.assert_close(nelbo_weight(rate, abs_dalpha, power), 1 / t)


def test_gaussian_by_hand():
    t = torch.tensor([0.5, 0.8413447460685429])  # z = 0 and z = 1
    rate, abs_dalpha = Gaussian(mu=0.3, sigma=0.1).sample(t)
    torch.testing.assert_close(rate, torch.tensor([0.3, 0.4]))
    expected_slope = 0.1 * math.sqrt(2 * math.pi) * torch.tensor([1.0, math.exp(0.5)])
    torch.testing.assert_close(abs_dalpha, expected_slope.float())


def test_cosine_squared_and_log_linear_by_hand():
    rate, abs_dalpha = CosineSquared().sample(torch.tensor([0.5]))
    assert rate.item() == pytest.approx(0.5) and abs_dalpha.item() == pytest.approx(math.pi / 2)
    rate, abs_dalpha = LogLinear(eps=1e-3).sample(torch.tensor([1.0]))
    assert rate.item() == pytest.approx(0.999) and abs_dalpha.item() == pytest.approx(0.999)


@pytest.mark.parametrize("name", NAMES)
def test_rates_rise_with_t_so_t_1_is_the_noisiest(name):
    t = torch.linspace(0.01, 0.99, 99)
    rate, _ = build_schedule(ScheduleConfig(name=name, w_left=1.0)).sample(t)
    assert torch.all(rate[1:] >= rate[:-1])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("power", [0.0, 0.1, 1.0])
def test_extreme_times_give_valid_rates_and_finite_weights(name, power):
    t = torch.tensor([0.0, 1e-12, 1e-8, 0.5, 1 - 1e-8, 1.0])
    rate, abs_dalpha = build_schedule(ScheduleConfig(name=name)).sample(t, progress=1.0)
    assert torch.all((rate >= RATE_FLOOR) & (rate <= 1))
    assert torch.isfinite(nelbo_weight(rate, abs_dalpha, power)).all()


def test_bimodal_components_come_from_the_generator():
    schedule, t = BimodalGaussian(), torch.full((1000,), 0.5)  # z = 0: each rate is its mode's mean
    first, _ = schedule.sample(t, 0.0, torch.Generator().manual_seed(7))
    again, _ = schedule.sample(t, 0.0, torch.Generator().manual_seed(7))
    other, _ = schedule.sample(t, 0.0, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert sorted(set(first.tolist())) == pytest.approx([0.12, 0.40])
    assert (first < 0.2).float().mean().item() == pytest.approx(0.6, abs=0.05)


def test_stratified_t_covers_each_stratum_once():
    n = 64
    t = stratified_t(n, torch.Generator().manual_seed(0))
    strata = torch.floor(t * n).long()
    assert torch.equal(strata, torch.arange(n))
    assert torch.all((t >= 0) & (t < 1))


def test_stratified_t_is_reproducible_from_the_generator():
    a = stratified_t(16, torch.Generator().manual_seed(3))
    b = stratified_t(16, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_summary_keys():
    summary = summarize(ScheduleConfig(name="cosine"), samples=1000)
    assert set(summary) == {"schedule", "power", "progress", "mean_rate", "weight", "rate_quantiles"}
    assert list(summary["weight"]) == ["mean", "min", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "max"]
    assert (
        summary["rate_quantiles"]["min"]
        <= summary["rate_quantiles"]["p50"]
        <= summary["rate_quantiles"]["max"]
    )


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="Unknown schedule"):
        build_schedule(ScheduleConfig(name="quadratic"))
