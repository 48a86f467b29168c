"""The training objective (SPEC section 1): the weighted continuous-time NELBO of a micro-batch.

loss = sum_b w_b * sum_{masked l in b} CE_l / (non-pad tokens in the micro-batch), with
w_b = |alpha'|^p / r_b. Dividing by the token count, not the masked count, keeps the estimator
unbiased: how many tokens a rate masks is part of what the weight corrects for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.masking import Masker, maskable
from core.schedules import Schedule, nelbo_weight, stratified_t
from core.specials import MASK_ID, PAD_ID


@dataclass
class LossOutput:
    loss: Tensor  # differentiable scalar, the weighted NELBO estimate
    masked_ce: Tensor  # detached mean CE over masked tokens: comparable across schedules and powers
    mask_rate: float  # realised fraction of maskable tokens that were masked
    schedule_rate: float  # mean of the schedule's rates r_b: what mask_rate would be without padding effects
    n_masked: int
    n_tokens: int  # non-pad tokens, the normaliser
    mean_weight: float


def masked_cross_entropy(logits: Tensor, targets: Tensor, subs: bool = True) -> Tensor:
    """Per-token CE in float32. With SUBS the model may never predict [MASK] for a masked token,
    so its logit leaves the softmax (MDLM's substitution parameterisation)."""
    logits = logits.float()
    if subs:
        logits = logits.index_fill(1, torch.tensor([MASK_ID], device=logits.device), float("-inf"))
    return F.cross_entropy(logits, targets, reduction="none")


def diffusion_loss(model: nn.Module, ids: Tensor, *, schedule: Schedule, masker: Masker, power: float,
                   progress: float, epoch: int, total_epochs: int, generator: torch.Generator | None = None,
                   subs: bool = True) -> LossOutput:
    """Noise a micro-batch, predict the masked tokens and weigh their CE. Every random draw (t, the
    bimodal component, the mask) comes from `generator`, so one seed reproduces the whole step."""
    attention_mask = ids != PAD_ID
    t = stratified_t(ids.shape[0], generator, device=ids.device)
    rates, abs_dalpha = schedule.sample(t, progress, generator)
    rates, abs_dalpha = rates.to(ids.device), abs_dalpha.to(ids.device)
    weights = nelbo_weight(rates, abs_dalpha, power)
    masked = masker(ids, rates, epoch, total_epochs, generator)

    noised = ids.masked_fill(masked, MASK_ID)
    logits = model(noised, attention_mask=attention_mask, rate=rates, output_mask=masked)  # [M, V]
    ce = masked_cross_entropy(logits, ids[masked], subs)
    # The same boolean index as the targets, so each masked token meets its own sequence's weight.
    token_weights = weights[:, None].expand_as(masked)[masked]

    stats = torch.stack([masked.sum(), maskable(ids).sum(), attention_mask.sum(), weights.mean(), rates.mean()])
    n_masked, n_maskable, n_tokens, mean_weight, schedule_rate = stats.double().tolist()  # one host sync
    n_masked, n_maskable, n_tokens = int(n_masked), int(n_maskable), int(n_tokens)
    # An empty ce sums to a zero that still carries the graph, so a step without masks backprops.
    loss = (token_weights * ce).sum() / max(n_tokens, 1)
    return LossOutput(
        loss=loss,
        masked_ce=ce.detach().sum() / max(n_masked, 1),
        mask_rate=n_masked / max(n_maskable, 1),
        schedule_rate=schedule_rate,
        n_masked=n_masked,
        n_tokens=n_tokens,
        mean_weight=mean_weight,
    )
