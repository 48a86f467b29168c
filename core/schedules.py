"""Noise schedules (SPEC section 2): for a batch of times t, the mask rate r = 1 - alpha_t and |alpha'_t|.

Every schedule is a small class with `sample(t, progress, generator)` for training and, except the
bimodal one, a deterministic `rate(t)` for the sampler (see `sampling_schedule`). Each is registered by
name in SCHEDULES (`@register_schedule`) with the `schedule.*` keys it reads and their defaults
(`params`); `build_schedule`, config validation and the CLI look names up there, so a schedule a user's
module registers is accepted everywhere (README, "Extending"). All of them use the
convention of SPEC section 7 (and MDLM): alpha_t falls as t grows, so t = 0 is clean text and t = 1
the most masked. The SPEC's cosine and gaussian rows are written with t -> 1 - t; for t ~ U[0, 1]
(and z -> -z for the gaussians) that is the same law of (r, |alpha'|), so E[r], the weights and the
objective are unchanged, while a sampler walking t from 1 down to 0 unmasks in the right direction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.config import ScheduleConfig
from core.errors import UserError
from core.registry import SCHEDULES

# A sequence with rate r masks about r * L tokens and weighs each by 1/r. Below 1e-3 (0.13 expected
# masked tokens at L = 128) the rare masked token would carry a weight of thousands and one such step
# would dominate the gradient; flooring r there moves E[r] by less than 1e-4 for every schedule.
RATE_FLOOR = 1e-3
# Phi^-1 is infinite at 0 and 1; the SPEC clamps t (and alpha) to [1e-8, 1 - 1e-8].
T_CLAMP = 1e-8
SQRT_2PI = math.sqrt(2 * math.pi)


def draw_uniform(shape, generator: torch.Generator | None = None, device=None) -> Tensor:
    """U[0, 1) drawn on the generator's device (so a CPU seed drives CUDA runs too), then moved."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def stratified_t(n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """t_i = (i + u_i) / n: one draw in each of n equal strata, which lowers the variance of the loss."""
    u = draw_uniform((n,), generator, device)
    t = (torch.arange(n, device=u.device, dtype=torch.float32) + u) / n
    return t.clamp_(0.0, 1.0)


def nelbo_weight(rate: Tensor, abs_dalpha: Tensor, power: float) -> Tensor:
    """w = |alpha'|^p / r. p = 1 is the exact NELBO weight; p = 0 keeps only 1/r."""
    return abs_dalpha.float().pow(power) / rate.float().clamp_min(RATE_FLOOR)


class Schedule:
    """Base class: subclasses give r and |alpha'| in float64; `sample` adds clamping and dtype.

    A subclass registered with @register_schedule says, as class attributes:
    - name: what `schedule.name` calls it;
    - params: the `schedule.*` keys it reads, with their defaults; `build_schedule` passes them to the
      constructor as keywords. Keys of ScheduleConfig (eps, mu, sigma, ...) are shared; any other
      becomes a config key `schedule.<param>` (YAML and --set) while the schedule is registered;
    - ranges: the interval each of its own params must lie in, e.g. {"exponent": "(0, inf)"}, checked
      with the rest of the config (the shared keys have theirs in core.config.RANGES);
    - sampling: whether the sampler may walk its `rate(t)` from all-masked (t = 1) to clean (t = 0);
    - progressive: whether its rates move with training progress (what `mdlm-tui schedule` shows)."""

    name = "schedule"
    params: dict[str, float] = {}
    ranges: dict[str, str] = {}
    sampling = False
    progressive = False

    def sample(
        self, t: Tensor, progress: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-sequence mask rate r (= 1 - alpha_t) and |alpha'_t| for times t."""
        # float64 because Phi^-1(1 - 1e-8) needs it: in float32, 1 - 1e-8 rounds to 1 and z becomes inf.
        rate, abs_dalpha = self._rate_and_slope(t.double(), progress, generator)
        rate = rate.clamp(RATE_FLOOR, 1.0)
        return rate.to(torch.float32), abs_dalpha.to(torch.float32)

    def rate(self, t: Tensor) -> Tensor:
        """The mask rate 1 - alpha_t as a deterministic float64 function of t, for the sampler's
        reverse process: no RATE_FLOOR here, since walking t down to eps must reach a rate near 0."""
        rate, _ = self._rate_and_slope(t.double(), 0.0, None)
        return rate.clamp(0.0, 1.0)

    def _rate_and_slope(self, t: Tensor, progress: float, generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Class decorator: file a Schedule subclass in SCHEDULES under its `name`; a name is taken once."""
    if not (isinstance(cls, type) and issubclass(cls, Schedule)):
        raise UserError(f"{cls!r} must be a subclass of core.schedules.Schedule to be registered.")
    return SCHEDULES.register(cls)


@register_schedule
class Linear(Schedule):
    """alpha = 1 - t: r = t, |alpha'| = 1, weight 1/t at p = 1."""

    name = "linear"
    sampling = True

    def _rate_and_slope(self, t, progress, generator):
        return t, torch.ones_like(t)


@register_schedule
class LogLinear(Schedule):
    """MDLM's default: alpha = 1 - (1 - eps) t, so even t = 1 leaves alpha = eps."""

    name = "log-linear"
    params = {"eps": 1e-3}
    sampling = True

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def _rate_and_slope(self, t, progress, generator):
        return (1 - self.eps) * t, torch.full_like(t, 1 - self.eps)


@register_schedule
class Cosine(Schedule):
    """alpha = cos(pi/2 t): r = 1 - cos(pi/2 t), |alpha'| = pi/2 sin(pi/2 t), E[r] = 1 - 2/pi."""

    name = "cosine"
    sampling = True

    def _rate_and_slope(self, t, progress, generator):
        angle = 0.5 * math.pi * t
        return 1 - torch.cos(angle), 0.5 * math.pi * torch.sin(angle)


@register_schedule
class CosineSquared(Schedule):
    """alpha = cos^2(pi/2 t): r = sin^2(pi/2 t), |alpha'| = pi sin cos, E[r] = 1/2."""

    name = "cosine-squared"
    sampling = True

    def _rate_and_slope(self, t, progress, generator):
        angle = 0.5 * math.pi * t
        return torch.sin(angle) ** 2, math.pi * torch.sin(angle) * torch.cos(angle)


def _gaussian_rate(t: Tensor, mu: Tensor | float, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
    """r = mu + sigma z with z = Phi^-1(t): the rate is N(mu, sigma^2);
    |alpha'| = sigma sqrt(2 pi) e^{z^2/2}."""
    z = torch.special.ndtri(t.clamp(T_CLAMP, 1 - T_CLAMP))
    rate = (mu + sigma * z).clamp(T_CLAMP, 1 - T_CLAMP)
    return rate, sigma * SQRT_2PI * torch.exp(0.5 * z * z)


@register_schedule
class Gaussian(Schedule):
    """Mask rate ~ N(mu, sigma^2): E[r] = mu. |alpha'| explodes in the tails, hence the power p."""

    name = "gaussian"
    params = {"mu": 0.3, "sigma": 0.1}

    def __init__(self, mu: float = 0.3, sigma: float = 0.1):
        self.mu, self.sigma = mu, sigma

    def _rate_and_slope(self, t, progress, generator):
        return _gaussian_rate(t, self.mu, self.sigma)

    def __repr__(self) -> str:
        return f"Gaussian(mu={self.mu}, sigma={self.sigma})"


@register_schedule
class BimodalGaussian(Schedule):
    """Per sequence, a left (low-rate) mode with probability w_left, else a right mode that moves
    from mu_right_start towards mu_right_end as training progresses (the paper's best schedule)."""

    name = "bimodal"
    params = {
        "w_left": 0.6,
        "mu_left": 0.12,
        "sigma_left": 0.02,
        "mu_right_start": 0.40,
        "mu_right_end": 0.85,
        "sigma_right": 0.08,
        "k": 1.0,
    }
    progressive = True

    def __init__(
        self,
        w_left=0.6,
        mu_left=0.12,
        sigma_left=0.02,
        mu_right_start=0.40,
        mu_right_end=0.85,
        sigma_right=0.08,
        k=1.0,
    ):
        self.w_left, self.mu_left, self.sigma_left = w_left, mu_left, sigma_left
        self.mu_right_start, self.mu_right_end, self.sigma_right, self.k = (
            mu_right_start,
            mu_right_end,
            sigma_right,
            k,
        )

    def mu_right(self, progress: float) -> float:
        # With k = 1 the right mode only gets to 0.685 by the end, not to mu_right_end (released code).
        return self.mu_right_start + (self.mu_right_end - self.mu_right_start) * (
            1 - math.exp(-self.k * progress)
        )

    def mean_rate(self, progress: float = 0.0) -> float:
        return self.w_left * self.mu_left + (1 - self.w_left) * self.mu_right(progress)

    def rate(self, t: Tensor) -> Tensor:
        raise TypeError(
            "The bimodal schedule draws a mode per sequence, so no single rate belongs to a time t; "
            "sample with sampling_schedule(name) instead."
        )

    def _rate_and_slope(self, t, progress, generator):
        left = draw_uniform(t.shape, generator, t.device).double() < self.w_left
        mu = torch.full_like(t, self.mu_right(progress)).masked_fill(left, self.mu_left)
        sigma = torch.full_like(t, self.sigma_right).masked_fill(left, self.sigma_left)
        return _gaussian_rate(t, mu, sigma)

    def __repr__(self) -> str:
        return (
            f"BimodalGaussian(w_left={self.w_left}, left=N({self.mu_left}, {self.sigma_left}^2), "
            f"right=N({self.mu_right_start}->{self.mu_right_end}, {self.sigma_right}^2), k={self.k})"
        )


def build_schedule(cfg: ScheduleConfig) -> Schedule:
    """The schedule SCHEDULES names cfg.name, given the `schedule.*` keys it declares in `params`: from
    cfg (a ScheduleConfig field, or an extra key set on it by config) or else the declared default."""
    cls = SCHEDULES.get(cfg.name)
    return cls(**{param: getattr(cfg, param, default) for param, default in cls.params.items()})


def sampling_schedules() -> tuple[str, ...]:
    """The registered schedules the sampler may walk (their `sampling` is true)."""
    return SCHEDULES.having("sampling")


# Schedules whose rate runs from 0 at t = 0 to (about) 1 at t = 1, so the sampler can walk them from
# all-masked to clean. The gaussian schedules cannot: a gaussian rate at t = 1 is only mu + 5.6 sigma
# (0.86 for the defaults) and the bimodal one is random per sequence. A model trained with either
# is sampled along one of these (linear by default, as MDLM); with time conditioning it is then
# asked about rates it saw rarely, which is a known cost of those schedules, not of the sampler.
# The built-in ones; sampling_schedules() adds those registered later.
SAMPLING_SCHEDULES = sampling_schedules()


def sampling_schedule(name: str) -> Schedule:
    """A schedule with a deterministic `rate(t)` for the reverse (unmasking) process, at its defaults."""
    cls = SCHEDULES.registered().get(name)
    if cls is None or not cls.sampling:
        raise UserError(
            f"Sampling schedule '{name}' is not one of {', '.join(sampling_schedules())} "
            "(models trained with gaussian or bimodal schedules are sampled along one of these)."
        )
    return cls(**cls.params)


QUANTILES = {"p1": 0.01, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}


def _spread(values: Tensor) -> dict:
    values = values.double()
    levels = torch.tensor(list(QUANTILES.values()), dtype=torch.float64)
    quantiles = torch.quantile(values, levels).tolist()
    return {"min": values.min().item(), **dict(zip(QUANTILES, quantiles)), "max": values.max().item()}


def summarize(cfg: ScheduleConfig, progress: float = 0.0, samples: int = 200_000, seed: int = 0) -> dict:
    """Monte-Carlo picture of a schedule: mean rate and the spread of rates and NELBO weights."""
    generator = torch.Generator().manual_seed(seed)
    t = stratified_t(samples, generator)
    rate, abs_dalpha = build_schedule(cfg).sample(t, progress, generator)
    weight = nelbo_weight(rate, abs_dalpha, cfg.power)
    return {
        "schedule": cfg.name,
        "power": cfg.power,
        "progress": progress,
        "mean_rate": rate.double().mean().item(),
        "weight": {"mean": weight.double().mean().item(), **_spread(weight)},
        "rate_quantiles": _spread(rate),
    }
