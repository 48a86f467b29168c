import pytest
import torch

from core.masking import (
    Masker,
    curriculum_power,
    frequency_mask_probs,
    frequency_scores,
    maskable,
    sample_mask,
    uniform_mask_probs,
)
from core.specials import BOS_ID, NUM_SPECIAL, PAD_ID

V = 64


def zipf_scores() -> torch.Tensor:
    """Id v (past the specials) is seen 1000 / (v - 15) times: lower ids are more frequent."""
    counts = torch.zeros(V)
    counts[NUM_SPECIAL:] = 1000.0 / torch.arange(1, V - NUM_SPECIAL + 1)
    counts[BOS_ID] = counts[PAD_ID] = 5000.0  # specials are often the most frequent ids of all
    return frequency_scores(counts)


def batch(rows: list[list[int]], length: int = 12) -> torch.Tensor:
    """Sequences with <s> in front, right-padded."""
    return torch.tensor([[BOS_ID] + row + [PAD_ID] * (length - 1 - len(row)) for row in rows])


def maskable_mean(q: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    m = maskable(ids)
    return (q * m).sum(1) / m.sum(1)


def test_frequency_scores_rank_by_count_with_ties_by_id():
    scores = frequency_scores([5, 50, 5, 0, 7])
    # ranks: id1 0, id4 1, id0 2, id2 3 (tie with id0, larger id), id3 4
    torch.testing.assert_close(scores, torch.tensor([3, 1, 4, 5, 2]) / 5.0)
    assert scores.dtype == torch.float32


def test_maskable_excludes_every_special():
    ids = torch.arange(NUM_SPECIAL + 3)[None]
    assert maskable(ids).tolist() == [[False] * NUM_SPECIAL + [True] * 3]


def test_uniform_probs_are_the_rate_at_maskable_positions_only():
    ids = batch([[20, 30, 40], [50]])
    q = uniform_mask_probs(ids, torch.tensor([0.3, 0.7]))
    assert q[0].tolist() == pytest.approx([0, 0.3, 0.3, 0.3] + [0] * 8)
    assert q[1].tolist() == pytest.approx([0, 0.7] + [0] * 10)


# A low rate under mostly rare tokens (mu > r), a high rate under mostly frequent ones (mu < r),
# a sequence dominated by one type, and one with every position maskable.
ROWS = [[16, 17, 60, 61, 62, 63], [16, 17, 18, 19, 63], [16, 16, 16, 17, 40], list(range(20, 31))]
RATES = [0.1, 0.95, 0.5, 0.4]


@pytest.mark.parametrize("p", [0.02, 0.5, 1.0, 3.0])
def test_frequency_probs_keep_the_schedules_rate_in_both_branches(p):
    ids, rates = batch(ROWS), torch.tensor(RATES)
    scores = zipf_scores()
    q = frequency_mask_probs(ids, rates, scores, p)
    torch.testing.assert_close(maskable_mean(q, ids), rates, atol=1e-6, rtol=0)
    assert torch.all((q >= 0) & (q <= 1))
    assert torch.all(q[~maskable(ids)] == 0)


def test_both_rescaling_branches_are_exercised():
    ids = batch([[16, 17, 60, 61, 62, 63]] * 2)
    scores = zipf_scores()
    low, high = frequency_mask_probs(ids, torch.tensor([0.05, 0.95]), scores, 1.0)
    g = scores[ids[0, 1:7]]
    v = (g - g.min()) / (g.max() - g.min() + 1e-8)  # p = 1: no softening
    mu = v.mean()
    assert 0.05 < mu < 0.95
    torch.testing.assert_close(low[1:7], v * 0.05 / mu)  # mu > r: scale down
    torch.testing.assert_close(high[1:7], 1 - (1 - v) * 0.05 / (1 - mu))  # mu < r: scale the gap to 1


def test_power_zero_is_exactly_uniform():
    ids, rates = batch(ROWS), torch.tensor(RATES)
    assert torch.equal(frequency_mask_probs(ids, rates, zipf_scores(), 0.0), uniform_mask_probs(ids, rates))


def test_rare_tokens_get_higher_probability_than_frequent_ones():
    ids = batch([[16, 20, 30, 40, 50, 63]])
    q = frequency_mask_probs(ids, torch.tensor([0.3]), zipf_scores(), 0.5)[0, 1:7]
    assert torch.all(q[1:] > q[:-1])
    assert q[0] == 0  # the sequence's most frequent type has n = 0 (SPEC's known edge)


def test_specials_and_pads_do_not_shift_the_statistics():
    """The same tokens give the same probabilities however much padding follows them."""
    scores = zipf_scores()
    short = frequency_mask_probs(batch([[20, 30, 40]], length=5), torch.tensor([0.4]), scores, 0.5)
    long = frequency_mask_probs(batch([[20, 30, 40]], length=50), torch.tensor([0.4]), scores, 0.5)
    torch.testing.assert_close(short[0, :4], long[0, :4])
    assert torch.all(long[0, 4:] == 0)


def test_sequences_with_zero_or_one_maskable_token_are_safe():
    ids = batch([[], [40], [40, 40, 40]])
    rates = torch.tensor([0.5, 0.3, 0.6])
    for p in (0.0, 0.02, 1.0):
        q = frequency_mask_probs(ids, rates, zipf_scores(), p)
        assert torch.isfinite(q).all()
        assert torch.all(q[0] == 0)
        assert q[1, 1].item() == pytest.approx(0.3)
        assert q[2, 1:4].tolist() == pytest.approx([0.6] * 3)


def test_specials_are_never_masked_even_if_probs_say_so():
    ids = batch([[20, 30]] * 4)
    mask = sample_mask(ids, torch.ones(ids.shape), torch.Generator().manual_seed(0))
    assert torch.equal(mask, maskable(ids))


def test_masks_follow_the_probabilities_statistically():
    ids = batch([[16, 17, 60, 61, 62, 63]] * 4000)
    rates = torch.full((4000,), 0.3)
    masker = Masker("frequency", zipf_scores(), p_freq=0.5, curriculum=False)
    mask = masker(ids, rates, epoch=0, total_epochs=1, generator=torch.Generator().manual_seed(0))
    assert not mask[~maskable(ids)].any()
    realised = mask.float().mean(0)
    expected = masker.probs(ids[:1], rates[:1], 0, 1)[0]
    torch.testing.assert_close(realised, expected, atol=0.03, rtol=0)
    assert mask[:, 1:7].float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_same_generator_seed_gives_the_same_mask():
    ids = batch([list(range(20, 31))] * 8)
    masker = Masker("uniform")
    a = masker(ids, torch.full((8,), 0.5), 0, 1, torch.Generator().manual_seed(1))
    b = masker(ids, torch.full((8,), 0.5), 0, 1, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_curriculum_power():
    assert curriculum_power(0.02, 0, 10) == 0.0
    assert curriculum_power(0.02, 9, 10) == pytest.approx(0.02)
    assert curriculum_power(0.02, 3, 7) == pytest.approx(0.01)
    assert curriculum_power(0.02, 0, 1) == 0.02  # a single epoch uses the full power
    assert curriculum_power(0.02, 0, 10, enabled=False) == 0.02
    assert curriculum_power(0.02, 12, 10) == pytest.approx(0.02)  # past the last epoch stays at p_freq


def test_masker_first_epoch_of_a_curriculum_is_uniform():
    ids = batch([[16, 17, 60, 61, 62, 63]])
    masker = Masker("frequency", zipf_scores(), p_freq=0.02)
    rates = torch.tensor([0.3])
    assert torch.equal(masker.probs(ids, rates, 0, 10), uniform_mask_probs(ids, rates))
    assert not torch.equal(masker.probs(ids, rates, 9, 10), uniform_mask_probs(ids, rates))


def test_frequency_masker_needs_scores():
    with pytest.raises(ValueError, match="frequency scores"):
        Masker("frequency")
    with pytest.raises(ValueError, match="Unknown masking"):
        Masker("span")
