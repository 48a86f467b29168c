"""The training objective (SPEC section 1): the weighted continuous-time NELBO of a micro-batch.

loss = sum_b w_b * sum_{masked l in b} CE_l / (non-pad tokens in the micro-batch), with
w_b = |alpha'|^p / r_b. Dividing by the token count, not the masked count, keeps the estimator
unbiased: how many tokens a rate masks is part of what the weight corrects for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    n_maskable: int
    n_tokens: int  # non-pad tokens of these rows (the normaliser, unless one is given for more rows)
    mean_weight: float


def masked_cross_entropy(logits: Tensor, targets: Tensor, subs: bool = True) -> Tensor:
    """Per-token CE in float32. With SUBS the model may never predict [MASK] for a masked token,
    so its logit leaves the softmax (MDLM's substitution parameterisation)."""
    logits = logits.float()
    if subs:  # the column is built on the device: an index made from a Python list would wait for it
        column = torch.arange(logits.shape[1], device=logits.device) == MASK_ID
        logits = logits.masked_fill(column, float("-inf"))
    return F.cross_entropy(logits, targets, reduction="none")


@dataclass
class NoisedBatch:
    """A micro-batch after the forward process: what the model sees and what its CE is weighed by."""

    noised: Tensor  # [B, L] ids with [MASK] at the masked positions
    attention_mask: Tensor  # [B, L] True at real tokens
    rates: Tensor  # [B] mask rates r_b, the model's time input
    masked: Tensor  # [B, L] bool
    targets: Tensor  # [M] the true ids at the masked positions, row-major
    token_weights: Tensor  # [M] each masked token's sequence weight w_b
    n_masked: int
    n_maskable: int
    n_tokens: int
    mean_weight: float
    schedule_rate: float
    positions: Tensor | None = None  # [M] flat row-major indices of the masked positions, off the host

    def to_device(self, device: torch.device) -> "NoisedBatch":
        """This batch on `device`, copied without waiting for it: pinned host memory and non-blocking
        copies, and the masked rows named by index, since a boolean mask on the device would make the
        host wait for the count."""
        if device.type == "cpu":
            return self

        def move(tensor: Tensor) -> Tensor:
            return tensor.pin_memory().to(device, non_blocking=True)

        return replace(
            self,
            noised=move(self.noised),
            attention_mask=move(self.attention_mask),
            rates=move(self.rates),
            targets=move(self.targets),
            token_weights=move(self.token_weights),
            positions=move(self.masked.flatten().nonzero().squeeze(1)),
        )


def noise_batch(
    ids: Tensor,
    *,
    schedule: Schedule,
    masker: Masker,
    power: float,
    progress: float,
    epoch: int,
    total_epochs: int,
    generator: torch.Generator | None = None,
    rows: tuple[int, int] | None = None,
) -> NoisedBatch:
    """The forward process on a micro-batch, where `ids` are (the trainer keeps it on the host, so its
    counts are known without waiting for a GPU). Every random draw (t, the bimodal component, the
    mask) comes from `generator`, so one seed reproduces the whole step.

    With several workers, `ids` are rows first.. of a micro-batch of `total` sequences spread over them
    (rows=(first, total)): t is stratified and the noise drawn over the whole micro-batch, and each
    worker keeps its rows, so the noise does not depend on how the micro-batch is split."""
    attention_mask = ids != PAD_ID
    first, total = rows or (0, ids.shape[0])
    t = stratified_t(total, generator, device=ids.device)
    rates, abs_dalpha = schedule.sample(t, progress, generator)
    own = slice(first, first + ids.shape[0])
    rates, abs_dalpha = rates[own].to(ids.device), abs_dalpha[own].to(ids.device)
    weights = nelbo_weight(rates, abs_dalpha, power)
    masked = masker(ids, rates, epoch, total_epochs, generator, rows)
    stats = torch.stack(
        [masked.sum(), maskable(ids).sum(), attention_mask.sum(), weights.mean(), rates.mean()]
    )
    n_masked, n_maskable, n_tokens, mean_weight, schedule_rate = stats.double().tolist()
    return NoisedBatch(
        noised=ids.masked_fill(masked, MASK_ID),
        attention_mask=attention_mask,
        rates=rates,
        masked=masked,
        # The same boolean index as the targets, so each masked token meets its own sequence's weight.
        targets=ids[masked],
        token_weights=weights[:, None].expand_as(masked)[masked],
        n_masked=int(n_masked),
        n_maskable=int(n_maskable),
        n_tokens=int(n_tokens),
        mean_weight=mean_weight,
        schedule_rate=schedule_rate,
    )


def noised_loss(
    model: nn.Module, batch: NoisedBatch, subs: bool = True, normaliser: int | None = None
) -> LossOutput:
    """Predict the masked tokens of a noised batch and weigh their CE. `normaliser` is the non-pad token
    count of a micro-batch shared by several workers (default: this batch's): their losses add up to it."""
    where = batch.masked if batch.positions is None else batch.positions
    logits = model(
        batch.noised, attention_mask=batch.attention_mask, rate=batch.rates, output_mask=where
    )  # [M, V]
    ce = masked_cross_entropy(logits, batch.targets, subs)
    # An empty ce sums to a zero that still carries the graph, so a step without masks backprops.
    loss = (batch.token_weights * ce).sum() / max(batch.n_tokens if normaliser is None else normaliser, 1)
    return LossOutput(
        loss=loss,
        masked_ce=ce.detach().sum() / max(batch.n_masked, 1),
        mask_rate=batch.n_masked / max(batch.n_maskable, 1),
        schedule_rate=batch.schedule_rate,
        n_masked=batch.n_masked,
        n_maskable=batch.n_maskable,
        n_tokens=batch.n_tokens,
        mean_weight=batch.mean_weight,
    )


def diffusion_loss(
    model: nn.Module,
    ids: Tensor,
    *,
    schedule: Schedule,
    masker: Masker,
    power: float,
    progress: float,
    epoch: int,
    total_epochs: int,
    generator: torch.Generator | None = None,
    subs: bool = True,
    rows: tuple[int, int] | None = None,
    normaliser: int | None = None,
) -> LossOutput:
    """Noise a micro-batch where it lies and take its loss: noise_batch, then noised_loss."""
    batch = noise_batch(
        ids,
        schedule=schedule,
        masker=masker,
        power=power,
        progress=progress,
        epoch=epoch,
        total_epochs=total_epochs,
        generator=generator,
        rows=rows,
    )
    return noised_loss(model, batch, subs, normaliser)
