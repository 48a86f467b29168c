"""Which tokens to mask: uniform, or frequency-informed (SPEC section 3, the paper's Eq. 2 as run).

Frequency-informed masking tilts each sequence's per-token mask probabilities towards rare tokens
while keeping their mean over the maskable positions equal to the schedule's rate r_b, so the
expected number of masked tokens and the NELBO weight stay those of the schedule.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from core.schedules import draw_uniform
from core.specials import NUM_SPECIAL

# The SPEC's guard in the min-max denominator: a sequence of one token type gives n = 0, not NaN.
MINMAX_EPS = 1e-8


def frequency_scores(counts) -> Tensor:
    """g_v = (rank_v + 1) / V with rank 0 the most frequent id; equal counts rank by id."""
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    order = torch.argsort(-counts, stable=True)  # stable: ties keep id order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return ((rank + 1).double() / len(order)).to(torch.float32)


def maskable(ids: Tensor) -> Tensor:
    """Special tokens (ids 0..15, including <s> and <pad>) are never masked."""
    return ids >= NUM_SPECIAL


def uniform_mask_probs(ids: Tensor, rates: Tensor) -> Tensor:
    """Every maskable position gets its sequence's rate r_b; specials get 0."""
    rates = rates.to(ids.device, torch.float32).clamp(0.0, 1.0)
    return rates[:, None] * maskable(ids)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    # Rows without maskable tokens divide by 1 instead of 0; their probabilities are zeroed anyway.
    return (values * mask).sum(1) / mask.sum(1).clamp_min(1)


def frequency_mask_probs(ids: Tensor, rates: Tensor, scores: Tensor, p: float) -> Tensor:
    """q_bl from the global frequency scores: min-max normalised per sequence, softened by n^p, then
    rescaled so mean_l q_bl = r_b. Statistics run over maskable positions only, so pads and <s> do not
    shift a sequence's range or mean, and mean over maskable positions of q is exactly r_b."""
    mask = maskable(ids)
    rates = rates.to(ids.device, torch.float32).clamp(0.0, 1.0)
    g = scores.to(ids.device, torch.float32)[ids]
    low = torch.where(mask, g, torch.inf).amin(1, keepdim=True)
    high = torch.where(mask, g, -torch.inf).amax(1, keepdim=True)
    spread = (high - low).nan_to_num(0.0, posinf=0.0, neginf=0.0)  # a row without maskable tokens
    normalised = ((g - low.nan_to_num(0.0, posinf=0.0)) / (spread + MINMAX_EPS)).clamp(0.0, 1.0)
    softened = normalised.pow(p) * mask  # p = 0: n^0 = 1 everywhere, i.e. uniform masking

    mu = _masked_mean(softened, mask)[:, None]
    r = rates[:, None]
    # Above the target, scale down towards 0; below it, scale the gap to 1 down, which keeps q <= 1.
    # The clamps only guard the branch torch.where discards (mu > r > 0 and mu < r <= 1 are safe).
    scaled_down = softened * (r / mu.clamp_min(1e-12))
    scaled_up = 1 - (1 - softened) * ((1 - r) / (1 - mu).clamp_min(1e-12))
    q = torch.where(mu > r, scaled_down, torch.where(mu < r, scaled_up, softened))
    return (q * mask).clamp(0.0, 1.0)


def curriculum_power(p_freq: float, epoch: int, total_epochs: int, enabled: bool = True) -> float:
    """The softening power grows linearly from 0 at the first epoch to p_freq at the last."""
    if not enabled or total_epochs <= 1:
        return p_freq
    epoch = min(max(epoch, 0), total_epochs - 1)
    return p_freq * epoch / (total_epochs - 1)


def sample_mask(ids: Tensor, probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mask position l iff U_l < q_l; specials never, whatever probs says."""
    u = draw_uniform(probs.shape, generator, probs.device)
    return (u < probs) & maskable(ids)


class Masker:
    """Turns per-sequence rates into a boolean mask, uniformly or frequency-informed."""

    def __init__(self, kind: str, scores: Tensor | None = None, p_freq: float = 0.02, curriculum: bool = True):
        if kind not in ("uniform", "frequency"):
            raise ValueError(f"Unknown masking kind '{kind}'; choose uniform or frequency.")
        if kind == "frequency" and scores is None:
            raise ValueError("Frequency-informed masking needs the corpus frequency scores.")
        self.kind, self.scores, self.p_freq, self.curriculum = kind, scores, p_freq, curriculum

    def power(self, epoch: int, total_epochs: int) -> float:
        return curriculum_power(self.p_freq, epoch, total_epochs, self.curriculum)

    def probs(self, ids: Tensor, rates: Tensor, epoch: int, total_epochs: int) -> Tensor:
        if self.kind == "uniform":
            return uniform_mask_probs(ids, rates)
        if self.scores.device != ids.device:
            self.scores = self.scores.to(ids.device)  # moved once, not every step
        return frequency_mask_probs(ids, rates, self.scores, self.power(epoch, total_epochs))

    def __call__(self, ids: Tensor, rates: Tensor, epoch: int, total_epochs: int,
                 generator: torch.Generator | None = None) -> Tensor:
        return sample_mask(ids, self.probs(ids, rates, epoch, total_epochs), generator)

    def __repr__(self) -> str:
        if self.kind == "uniform":
            return "Masker(uniform)"
        return f"Masker(frequency, p_freq={self.p_freq}, curriculum={self.curriculum})"
