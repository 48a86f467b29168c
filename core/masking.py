"""Which tokens to mask: uniform, or frequency-informed (SPEC section 3, the paper's Eq. 2 as run).

Frequency-informed masking tilts each sequence's per-token mask probabilities towards rare tokens
while keeping their mean equal to the schedule's rate r_b. Two variants of the per-sequence statistics:

- "sequence" (as released): the min, max and mean run over all L positions, <s> and pads included,
  with scores from counts over the padded sequences. The mean over L of q is r_b; since specials are
  never masked, padded sequences mask their real tokens above r_b. The pad, usually the most frequent
  id, takes n = 0, so in a padded sequence no real token is left unmaskable; a full sequence's most
  frequent type still takes n = 0 when it outranks <s>.
- "maskable": over maskable positions only (mean over them of q is r_b). The sequence's most frequent
  real token type then gets n = 0 and q = 0 whenever mu > r: it is never masked once p > 0.

Each kind is a MaskingKind subclass registered by name in MASKING_KINDS (`@register_masking_kind`);
`Masker` builds the one `masking.kind` names, and config validation reads the same registry.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from core.errors import UserError
from core.registry import MASKING_KINDS
from core.schedules import draw_uniform
from core.specials import NUM_SPECIAL

# The SPEC's guard in the min-max denominator: a sequence of one token type gives n = 0, not NaN.
MINMAX_EPS = 1e-8
STATISTICS = ("sequence", "maskable")  # what the per-sequence min, max and mean run over


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


def _rescale(softened: Tensor, mu: Tensor, rates: Tensor) -> Tensor:
    """SPEC 3's two branches: above the target scale down towards 0; below it, scale the gap to 1 down,
    which keeps q <= 1. The clamps only guard the branch torch.where discards (mu > r > 0 and
    mu < r <= 1 are safe)."""
    r = rates[:, None]
    scaled_down = softened * (r / mu.clamp_min(1e-12))
    scaled_up = 1 - (1 - softened) * ((1 - r) / (1 - mu).clamp_min(1e-12))
    return torch.where(mu > r, scaled_down, torch.where(mu < r, scaled_up, softened))


def frequency_mask_probs(
    ids: Tensor, rates: Tensor, scores: Tensor, p: float, statistics: str = "sequence"
) -> Tensor:
    """q_bl from the global frequency scores: min-max normalised per sequence, softened by n^p, then
    rescaled so the sequence's mean of q is r_b.

    statistics="sequence": min, max and mean over all L positions; q is not zeroed at specials (its
    mean over L is r_b), sample_mask skips them. "maskable": over maskable positions only, q = 0 at
    specials and its mean over maskable positions is r_b."""
    if statistics not in STATISTICS:
        raise ValueError(f"Unknown masking statistics '{statistics}'; choose sequence or maskable.")
    rates = rates.to(ids.device, torch.float32).clamp(0.0, 1.0)
    g = scores.to(ids.device, torch.float32)[ids]
    if statistics == "sequence":
        low, high = g.amin(1, keepdim=True), g.amax(1, keepdim=True)
        # one token type throughout: n = 0, so v = 0 and q = r_b (p > 0), or v = 1 and q = r_b (p = 0)
        softened = ((g - low) / (high - low + MINMAX_EPS)).clamp(0.0, 1.0).pow(p)
        return _rescale(softened, softened.mean(1, keepdim=True), rates).clamp(0.0, 1.0)
    return _maskable_statistics_probs(ids, rates, g, p)


def _maskable_statistics_probs(ids: Tensor, rates: Tensor, g: Tensor, p: float) -> Tensor:
    mask = maskable(ids)
    low = torch.where(mask, g, torch.inf).amin(1, keepdim=True)
    high = torch.where(mask, g, -torch.inf).amax(1, keepdim=True)
    spread = (high - low).nan_to_num(0.0, posinf=0.0, neginf=0.0)  # a row without maskable tokens
    normalised = ((g - low.nan_to_num(0.0, posinf=0.0)) / (spread + MINMAX_EPS)).clamp(0.0, 1.0)
    softened = normalised.pow(p) * mask  # p = 0: n^0 = 1 everywhere, i.e. uniform masking

    q = _rescale(softened, _masked_mean(softened, mask)[:, None], rates)
    return (q * mask).clamp(0.0, 1.0)


def curriculum_power(p_freq: float, epoch: int, total_epochs: int, enabled: bool = True) -> float:
    """The softening power grows linearly from 0 at the first epoch to p_freq at the last."""
    if not enabled or total_epochs <= 1:
        return p_freq
    epoch = min(max(epoch, 0), total_epochs - 1)
    return p_freq * epoch / (total_epochs - 1)


def sample_mask(
    ids: Tensor, probs: Tensor, generator: torch.Generator | None = None, rows: tuple[int, int] | None = None
) -> Tensor:
    """Mask position l iff U_l < q_l; specials never, whatever probs says.

    rows=(first, total): these sequences are rows first.. of a batch of `total` shared by several
    workers; every worker draws the whole batch's U and keeps its own rows, so the masks do not
    depend on how the batch is split."""
    first, total = rows or (0, probs.shape[0])
    u = draw_uniform((total, *probs.shape[1:]), generator, probs.device)[first : first + probs.shape[0]]
    return (u < probs) & maskable(ids)


class MaskingKind:
    """How one masking kind turns per-sequence rates into per-position mask probabilities.

    A subclass registered with @register_masking_kind says, as class attributes, its `name` (what
    `masking.kind` calls it) and `needs_scores`: whether it reads the corpus frequency scores, which the
    trainer then counts and passes in. It is built from the masking.* keys (p_freq, curriculum,
    statistics) and gives `probs(ids, rates, epoch, total_epochs)`, q in [0, 1] of ids' shape whose mean
    over a row's maskable positions is about that row's rate; specials are never masked, whatever q says."""

    name = "kind"
    needs_scores = False

    def __init__(
        self,
        scores: Tensor | None = None,
        p_freq: float = 0.02,
        curriculum: bool = True,
        statistics: str = "sequence",
    ):
        self.scores, self.p_freq, self.curriculum, self.statistics = scores, p_freq, curriculum, statistics

    def power(self, epoch: int, total_epochs: int) -> float:
        return curriculum_power(self.p_freq, epoch, total_epochs, self.curriculum)

    def probs(self, ids: Tensor, rates: Tensor, epoch: int, total_epochs: int) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        """What Masker's repr says inside the parentheses."""
        return self.name


def register_masking_kind(cls: type[MaskingKind]) -> type[MaskingKind]:
    """Class decorator: file a MaskingKind subclass in MASKING_KINDS under its `name`, once."""
    if not (isinstance(cls, type) and issubclass(cls, MaskingKind)):
        raise UserError(f"{cls!r} must be a subclass of core.masking.MaskingKind to be registered.")
    return MASKING_KINDS.register(cls)


@register_masking_kind
class UniformMasking(MaskingKind):
    """Every maskable position at its sequence's rate."""

    name = "uniform"

    def probs(self, ids, rates, epoch, total_epochs):
        return uniform_mask_probs(ids, rates)


@register_masking_kind
class FrequencyMasking(MaskingKind):
    """Frequency-informed: rare tokens more often, the power p_freq grown by the curriculum."""

    name = "frequency"
    needs_scores = True

    def probs(self, ids, rates, epoch, total_epochs):
        if self.scores.device != ids.device:
            self.scores = self.scores.to(ids.device)  # moved once, not every step
        return frequency_mask_probs(ids, rates, self.scores, self.power(epoch, total_epochs), self.statistics)

    def describe(self) -> str:
        return f"frequency, p_freq={self.p_freq}, curriculum={self.curriculum}, statistics={self.statistics}"


class Masker:
    """Turns per-sequence rates into a boolean mask with the registered masking kind `kind`."""

    def __init__(
        self,
        kind: str,
        scores: Tensor | None = None,
        p_freq: float = 0.02,
        curriculum: bool = True,
        statistics: str = "sequence",
    ):
        cls = MASKING_KINDS.get(kind)
        if cls.needs_scores and scores is None:
            raise ValueError(f"The {kind} masking needs the corpus frequency scores.")
        if statistics not in STATISTICS:
            raise ValueError(f"Unknown masking statistics '{statistics}'; choose sequence or maskable.")
        self.kind = kind
        self.method = cls(scores, p_freq, curriculum, statistics)

    # The kind's settings, read where the Masker used to keep them.
    scores = property(lambda self: self.method.scores)
    p_freq = property(lambda self: self.method.p_freq)
    curriculum = property(lambda self: self.method.curriculum)
    statistics = property(lambda self: self.method.statistics)

    def power(self, epoch: int, total_epochs: int) -> float:
        return self.method.power(epoch, total_epochs)

    def probs(self, ids: Tensor, rates: Tensor, epoch: int, total_epochs: int) -> Tensor:
        return self.method.probs(ids, rates, epoch, total_epochs)

    def __call__(
        self,
        ids: Tensor,
        rates: Tensor,
        epoch: int,
        total_epochs: int,
        generator: torch.Generator | None = None,
        rows: tuple[int, int] | None = None,
    ) -> Tensor:
        return sample_mask(ids, self.probs(ids, rates, epoch, total_epochs), generator, rows)

    def __repr__(self) -> str:
        return f"Masker({self.method.describe()})"
