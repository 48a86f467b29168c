import math

import pytest
import torch
from torch import nn

from core.masking import Masker, maskable
from core.objective import diffusion_loss, masked_cross_entropy
from core.schedules import Cosine, Schedule, stratified_t
from core.specials import BOS_ID, MASK_ID, PAD_ID

V = 40


class TinyDenoiser(nn.Module):
    """Stand-in with the real model's forward signature; it remembers what it was given."""

    def __init__(self, mask_logit: float | None = None):
        super().__init__()
        with torch.random.fork_rng():  # the same weights every time, without touching the global seed
            torch.manual_seed(0)
            self.embed = nn.Embedding(V, 8)
            self.head = nn.Linear(8, V)
        self.mask_logit = mask_logit

    def forward(self, input_ids, attention_mask=None, rate=None, output_mask=None):
        self.seen = dict(
            input_ids=input_ids, attention_mask=attention_mask, rate=rate, output_mask=output_mask
        )
        hidden = self.embed(input_ids) + (0 if rate is None else rate[:, None, None])
        logits = self.head(hidden[output_mask])
        if self.mask_logit is not None:
            logits = logits.index_fill(1, torch.tensor([MASK_ID]), self.mask_logit)
        return logits


class FixedSchedule(Schedule):
    def __init__(self, rates, slopes):
        self.rates, self.slopes = (
            torch.tensor(rates, dtype=torch.float64),
            torch.tensor(slopes, dtype=torch.float64),
        )

    def _rate_and_slope(self, t, progress, generator):
        return self.rates, self.slopes


class FixedMasker:
    def __init__(self, mask):
        self.mask = mask

    def __call__(self, ids, rates, epoch, total_epochs, generator=None, rows=None):
        return self.mask[:, : ids.shape[1]]


IDS = torch.tensor([[BOS_ID, 20, 21, 22, 23, PAD_ID], [BOS_ID, 30, 31, PAD_ID, PAD_ID, PAD_ID]])
MASK = torch.tensor([[False, True, False, True, True, False], [False, False, True, False, False, False]])


def loss_with_fixed_masks(model, ids=IDS, mask=MASK, power=1.0, subs=True):
    return diffusion_loss(
        model,
        ids,
        schedule=FixedSchedule([0.5, 0.25], [2.0, 3.0]),
        masker=FixedMasker(mask),
        power=power,
        progress=0.0,
        epoch=0,
        total_epochs=1,
        subs=subs,
    )


def test_loss_is_the_weighted_sum_over_non_pad_tokens():
    model = TinyDenoiser()
    out = loss_with_fixed_masks(model)
    with torch.no_grad():
        logits = model.head(
            model.embed(IDS.masked_fill(MASK, MASK_ID)) + torch.tensor([0.5, 0.25])[:, None, None]
        )
        logits[..., MASK_ID] = -math.inf
        ce = -torch.log_softmax(logits, -1).gather(-1, IDS[..., None])[..., 0]
    weights = [2.0 / 0.5, 3.0 / 0.25]
    total = weights[0] * (ce[0, 1] + ce[0, 3] + ce[0, 4]) + weights[1] * ce[1, 2]
    assert out.loss.item() == pytest.approx(total.item() / 8, rel=1e-5)  # 8 non-pad tokens, <s> included
    assert out.masked_ce.item() == pytest.approx(
        (ce[0, 1] + ce[0, 3] + ce[0, 4] + ce[1, 2]).item() / 4, rel=1e-5
    )
    assert (out.n_masked, out.n_tokens) == (4, 8)
    assert out.mask_rate == pytest.approx(4 / 6)
    assert out.mean_weight == pytest.approx(8.0)
    assert not out.masked_ce.requires_grad


def test_power_changes_only_the_weights():
    model = TinyDenoiser()
    exact, only_rate = loss_with_fixed_masks(model, power=1.0), loss_with_fixed_masks(model, power=0.0)
    assert only_rate.mean_weight == pytest.approx((1 / 0.5 + 1 / 0.25) / 2)
    assert exact.masked_ce.item() == pytest.approx(only_rate.masked_ce.item())
    assert exact.loss.item() != pytest.approx(only_rate.loss.item())


def test_model_sees_mask_tokens_the_rate_and_the_attention_mask():
    model = TinyDenoiser()
    loss_with_fixed_masks(model)
    assert torch.equal(model.seen["input_ids"], IDS.masked_fill(MASK, MASK_ID))
    assert torch.equal(model.seen["output_mask"], MASK)
    assert torch.equal(model.seen["attention_mask"], IDS != PAD_ID)
    torch.testing.assert_close(model.seen["rate"], torch.tensor([0.5, 0.25]))


def test_subs_takes_the_mask_logit_out_of_the_softmax():
    targets = torch.tensor([20, 21])
    logits = torch.zeros(2, V)
    with_huge_mask = logits.index_fill(1, torch.tensor([MASK_ID]), 50.0)
    torch.testing.assert_close(
        masked_cross_entropy(with_huge_mask, targets), masked_cross_entropy(logits, targets)
    )
    torch.testing.assert_close(masked_cross_entropy(logits, targets), torch.full((2,), math.log(V - 1)))
    assert masked_cross_entropy(with_huge_mask, targets, subs=False).min() > 40


def test_subs_in_the_full_loss():
    plain = loss_with_fixed_masks(TinyDenoiser(mask_logit=0.0))
    confident_mask = loss_with_fixed_masks(TinyDenoiser(mask_logit=30.0))
    assert confident_mask.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    assert plain.masked_ce < 5
    assert loss_with_fixed_masks(TinyDenoiser(mask_logit=30.0), subs=False).masked_ce > 25


def test_pads_are_left_out_of_the_normaliser():
    model = TinyDenoiser()
    padded = torch.cat([IDS, torch.full((2, 10), PAD_ID)], 1)
    longer = loss_with_fixed_masks(model, padded, torch.cat([MASK, torch.zeros(2, 10, dtype=torch.bool)], 1))
    shorter = loss_with_fixed_masks(model)
    assert longer.n_tokens == shorter.n_tokens == 8
    assert longer.loss.item() == pytest.approx(shorter.loss.item(), rel=1e-6)


def random_batch(seed=0, batch=16, length=24):
    ids = torch.randint(16, V, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS_ID
    ids[::2, length // 2 :] = PAD_ID
    return ids


def seeded_loss(seed, model=None, ids=None):
    return diffusion_loss(
        model or TinyDenoiser(),
        random_batch() if ids is None else ids,
        schedule=Cosine(),
        masker=Masker("uniform"),
        power=1.0,
        progress=0.0,
        epoch=0,
        total_epochs=1,
        generator=torch.Generator().manual_seed(seed),
    )


def test_same_seed_same_loss_and_other_seed_other_loss():
    a, b, c = seeded_loss(5), seeded_loss(5), seeded_loss(6)
    assert a.loss.item() == b.loss.item() and a.n_masked == b.n_masked
    assert a.loss.item() != c.loss.item()


def test_time_conditioning_gets_the_schedules_rate_for_stratified_t():
    model = TinyDenoiser()
    seeded_loss(3, model)
    expected, _ = Cosine().sample(stratified_t(16, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(model.seen["rate"], expected)


def test_specials_are_never_masked_in_the_loss():
    model = TinyDenoiser()
    ids = random_batch()
    out = seeded_loss(0, model, ids)
    assert not model.seen["output_mask"][~maskable(ids)].any()
    assert 0 < out.n_masked <= maskable(ids).sum()


def test_a_batch_without_masks_gives_zero_loss_that_still_backprops():
    model = TinyDenoiser()
    nothing = torch.zeros_like(MASK)
    out = diffusion_loss(
        model,
        IDS,
        schedule=FixedSchedule([0.5, 0.25], [2.0, 3.0]),
        masker=FixedMasker(nothing),
        power=1.0,
        progress=0.0,
        epoch=0,
        total_epochs=1,
    )
    assert out.loss.item() == 0 and out.n_masked == 0 and out.masked_ce.item() == 0
    out.loss.backward()
    assert torch.all(model.head.weight.grad == 0)


def test_gradients_reach_the_model():
    model = TinyDenoiser()
    seeded_loss(0, model).loss.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert torch.all(model.head.weight.grad[MASK_ID] == 0)  # SUBS: the mask logit gets no gradient


def test_workers_sharing_a_micro_batch_draw_its_noise_and_add_up_to_its_loss():
    """Two workers, each with half the rows, draw the whole micro-batch's t and masks and keep their own
    rows, normalised by the whole micro-batch's tokens: their losses add up to one worker's."""
    torch.manual_seed(0)
    ids = torch.randint(20, 300, (6, 12))
    ids[1, 8:] = PAD_ID
    from core.config import Config
    from core.model import build_model

    cfg = Config()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads, cfg.model.ffn_size = 32, 1, 2, 64
    cfg.model.dropout = cfg.model.attention_dropout = 0.0
    cfg.data.vocab_size, cfg.data.seq_len = 300, 12
    model = build_model(cfg).eval()
    kwargs = dict(
        schedule=Cosine(),
        masker=Masker("uniform"),
        power=1.0,
        progress=0.3,
        epoch=0,
        total_epochs=1,
        subs=True,
    )
    whole = diffusion_loss(model, ids, generator=torch.Generator().manual_seed(5), **kwargs)
    tokens = int((ids != PAD_ID).sum())
    halves = [
        diffusion_loss(
            model,
            ids[first : first + 3],
            generator=torch.Generator().manual_seed(5),
            rows=(first, 6),
            normaliser=tokens,
            **kwargs,
        )
        for first in (0, 3)
    ]
    assert torch.allclose(halves[0].loss + halves[1].loss, whole.loss, rtol=1e-6)
    assert halves[0].n_masked + halves[1].n_masked == whole.n_masked
