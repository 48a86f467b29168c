import numpy as np
import pytest
import torch

from core.dataset import chunk_documents, sequence_token_counts
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


def padded_corpus(documents: int = 400, seq_len: int = 24, seed: int = 0) -> np.ndarray:
    """Chunks of documents of Zipf-distributed real ids (lower ids more frequent), mostly padded."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 2 * seq_len, documents)
    weights = 1.0 / np.arange(1, V - NUM_SPECIAL + 1)
    ids = rng.choice(np.arange(NUM_SPECIAL, V), size=int(lengths.sum()), p=weights / weights.sum())
    return chunk_documents(ids.astype(np.int32), lengths, seq_len)


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
def test_maskable_statistics_keep_the_schedules_rate_in_both_branches(p):
    ids, rates = batch(ROWS), torch.tensor(RATES)
    scores = zipf_scores()
    q = frequency_mask_probs(ids, rates, scores, p, statistics="maskable")
    torch.testing.assert_close(maskable_mean(q, ids), rates, atol=1e-6, rtol=0)
    assert torch.all((q >= 0) & (q <= 1))
    assert torch.all(q[~maskable(ids)] == 0)


@pytest.mark.parametrize("statistics", ["sequence", "maskable"])
def test_both_rescaling_branches_are_exercised(statistics):
    ids = batch([[16, 17, 60, 61, 62, 63]] * 2)
    scores = zipf_scores()
    low, high = frequency_mask_probs(ids, torch.tensor([0.05, 0.95]), scores, 1.0, statistics)
    # the positions the statistics run over: all 12, or the 6 real tokens
    where = slice(None) if statistics == "sequence" else slice(1, 7)
    g = scores[ids[0, where]]
    v = (g - g.min()) / (g.max() - g.min() + 1e-8)  # p = 1: no softening
    mu = v.mean()
    assert 0.05 < mu < 0.95
    torch.testing.assert_close(low[where], v * 0.05 / mu)  # mu > r: scale down
    torch.testing.assert_close(high[where], 1 - (1 - v) * 0.05 / (1 - mu))  # mu < r: scale the gap to 1


def test_power_zero_is_exactly_uniform():
    ids, rates = batch(ROWS), torch.tensor(RATES)
    uniform = uniform_mask_probs(ids, rates)
    assert torch.equal(frequency_mask_probs(ids, rates, zipf_scores(), 0.0, "maskable"), uniform)
    # sequence statistics: r_b at every position, specials included; sampling skips those
    q = frequency_mask_probs(ids, rates, zipf_scores(), 0.0, "sequence")
    assert torch.equal(q, rates[:, None].expand_as(q)) and torch.equal(q * maskable(ids), uniform)


def test_rare_tokens_get_higher_probability_than_frequent_ones():
    ids = batch([[16, 20, 30, 40, 50, 63]])
    q = frequency_mask_probs(ids, torch.tensor([0.3]), zipf_scores(), 0.5, "maskable")[0, 1:7]
    assert torch.all(q[1:] > q[:-1])
    assert q[0] == 0  # the sequence's most frequent type has n = 0 (SPEC's known edge)
    # sequence statistics: <s> (the most frequent id here) takes n = 0, every real token keeps q > 0
    q = frequency_mask_probs(ids, torch.tensor([0.3]), zipf_scores(), 0.5, "sequence")[0, 1:7]
    assert torch.all(q[1:] > q[:-1]) and q[0] > 0


def test_maskable_statistics_are_not_shifted_by_specials_and_pads():
    """The same tokens give the same probabilities however much padding follows them."""
    scores = zipf_scores()
    short = frequency_mask_probs(
        batch([[20, 30, 40]], length=5), torch.tensor([0.4]), scores, 0.5, "maskable"
    )
    long = frequency_mask_probs(
        batch([[20, 30, 40]], length=50), torch.tensor([0.4]), scores, 0.5, "maskable"
    )
    torch.testing.assert_close(short[0, :4], long[0, :4])
    assert torch.all(long[0, 4:] == 0)


def test_sequence_statistics_lift_real_tokens_of_padded_sequences():
    """Padding lowers the mean over L, so the real tokens carry more of the rate (as released)."""
    scores = zipf_scores()
    short = frequency_mask_probs(batch([[20, 30, 40]], length=5), torch.tensor([0.2]), scores, 0.5)
    long = frequency_mask_probs(batch([[20, 30, 40]], length=50), torch.tensor([0.2]), scores, 0.5)
    assert torch.all(long[0, 1:4] > short[0, 1:4]) and short[0, 1:4].mean() > 0.2
    assert long.mean().item() == pytest.approx(0.2, abs=1e-6)


def test_sequences_with_zero_or_one_maskable_token_are_safe():
    ids = batch([[], [40], [40, 40, 40]])
    rates = torch.tensor([0.5, 0.3, 0.6])
    for p in (0.0, 0.02, 1.0):
        q = frequency_mask_probs(ids, rates, zipf_scores(), p, "maskable")
        assert torch.isfinite(q).all()
        assert torch.all(q[0] == 0)
        assert q[1, 1].item() == pytest.approx(0.3)
        assert q[2, 1:4].tolist() == pytest.approx([0.6] * 3)


def test_sequence_statistics_are_safe_without_spread_or_real_tokens():
    ids = torch.cat([batch([[], [40], [40, 40, 40]]), torch.full((1, 12), 40)])  # the last row: one type only
    rates = torch.tensor([0.5, 0.3, 0.6, 0.2])
    for p in (0.0, 0.02, 1.0):
        q = frequency_mask_probs(ids, rates, zipf_scores(), p)
        assert torch.isfinite(q).all() and torch.all((q >= 0) & (q <= 1))
        torch.testing.assert_close(q.mean(1), rates, atol=1e-6, rtol=0)
        assert q[3].tolist() == pytest.approx([0.2] * 12)  # no spread: n = 0 everywhere, q = r_b


def random_padded_batch(rows: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """<s> at position 0, real ids >= 16, then <pad>s; a few rows full, one all padding."""
    ids = torch.randint(NUM_SPECIAL, V, (rows, length), generator=generator)
    real = torch.randint(0, length, (rows,), generator=generator)
    real[:4] = length - 1
    real[4] = 0
    ids[torch.arange(length)[None] > real[:, None]] = PAD_ID
    ids[:, 0] = BOS_ID
    return ids


@pytest.mark.parametrize("p", [0.0, 0.0022, 0.02, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("counts", ["zipf", "sequence"])
def test_sequence_statistics_keep_the_rate_over_all_positions(p, counts):
    generator = torch.Generator().manual_seed(0)
    ids = random_padded_batch(256, 32, generator)
    scores = zipf_scores() if counts == "zipf" else frequency_scores(sequence_token_counts(ids.numpy(), V))
    # rates across [0, 1], ends included: above and below each row's mean mu, so both branches run
    rates = torch.cat([torch.tensor([0.0, 1.0, 1e-4, 0.9999]), torch.rand(252, generator=generator)])
    q = frequency_mask_probs(ids, rates, scores, p)
    torch.testing.assert_close(q.double().mean(1), rates.double(), atol=1e-6, rtol=0)
    assert torch.all((q >= 0) & (q <= 1))
    mask = sample_mask(ids, q, generator)
    assert not mask[~maskable(ids)].any()
    # padded rows mask their real tokens above r_b on average (p = 0: uniform, exactly r_b)
    padded = (ids == PAD_ID).any(1) & maskable(ids).any(1) & (rates > 0.01) & (rates < 0.99)
    real_rate, rate = maskable_mean(q, ids)[padded], rates[padded]
    assert torch.all(real_rate > rate) if p > 0 else torch.allclose(real_rate, rate)


def test_no_real_token_of_a_padded_sequence_is_left_unmaskable_along_the_curriculum():
    chunks = padded_corpus()
    counts = sequence_token_counts(chunks, V)
    scores = frequency_scores(counts)
    assert scores[PAD_ID] == scores.min()  # the pad is the most frequent id of the padded corpus
    token_counts = np.bincount(chunks[chunks >= NUM_SPECIAL], minlength=V)  # without <s> and pads
    ids = torch.from_numpy(chunks[(chunks == PAD_ID).any(1)]).long()
    rates = torch.rand(len(ids), generator=torch.Generator().manual_seed(0)).clamp_min(1e-3)
    total_epochs, p_freq = 10, 0.02
    for epoch in range(total_epochs):
        p = curriculum_power(p_freq, epoch, total_epochs)
        assert p == pytest.approx(p_freq * epoch / (total_epochs - 1))
        q = frequency_mask_probs(ids, rates, scores, p)
        assert torch.all(q[maskable(ids)] > 0), epoch

    # The defect of the maskable variant: a sequence's most frequent real token is never masked once p > 0.
    row = batch([[16, 16, 17, 30, 45, 60]])
    frequent = row == 16
    for statistics, table in [("sequence", counts), ("maskable", token_counts)]:
        for epoch in range(total_epochs):
            p = curriculum_power(p_freq, epoch, total_epochs)
            q = frequency_mask_probs(row, torch.tensor([0.3]), frequency_scores(table), p, statistics)
            never = epoch >= 1 and statistics == "maskable"
            assert torch.all((q[frequent] == 0) == never), (statistics, epoch)


def test_specials_are_never_masked_even_if_probs_say_so():
    ids = batch([[20, 30]] * 4)
    mask = sample_mask(ids, torch.ones(ids.shape), torch.Generator().manual_seed(0))
    assert torch.equal(mask, maskable(ids))


@pytest.mark.parametrize("statistics", ["sequence", "maskable"])
def test_masks_follow_the_probabilities_statistically(statistics):
    ids = batch([[16, 17, 60, 61, 62, 63]] * 4000)
    rates = torch.full((4000,), 0.3)
    masker = Masker("frequency", zipf_scores(), p_freq=0.5, curriculum=False, statistics=statistics)
    mask = masker(ids, rates, epoch=0, total_epochs=1, generator=torch.Generator().manual_seed(0))
    assert not mask[~maskable(ids)].any()
    realised = mask.float().mean(0)
    expected = masker.probs(ids[:1], rates[:1], 0, 1)[0] * maskable(ids[:1])[0]
    torch.testing.assert_close(realised, expected, atol=0.03, rtol=0)
    real_rate = mask[:, 1:7].float().mean().item()
    if statistics == "maskable":
        assert real_rate == pytest.approx(0.3, abs=0.01)
    else:  # five pads and <s> share the rate's mean over 12 positions but are never masked
        assert real_rate == pytest.approx(expected[1:7].mean().item(), abs=0.01) and real_rate > 0.35


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


@pytest.mark.parametrize("statistics", ["sequence", "maskable"])
def test_masker_first_epoch_of_a_curriculum_is_uniform(statistics):
    ids = batch([[16, 17, 60, 61, 62, 63]])
    masker = Masker("frequency", zipf_scores(), p_freq=0.02, statistics=statistics)
    rates = torch.tensor([0.3])
    at_real_tokens = maskable(ids)  # sequence statistics leave r_b at the specials too; they are never masked
    assert torch.equal(masker.probs(ids, rates, 0, 10) * at_real_tokens, uniform_mask_probs(ids, rates))
    assert not torch.equal(masker.probs(ids, rates, 9, 10) * at_real_tokens, uniform_mask_probs(ids, rates))
    assert repr(masker) == f"Masker(frequency, p_freq=0.02, curriculum=True, statistics={statistics})"


def test_frequency_masker_needs_scores():
    with pytest.raises(ValueError, match="frequency scores"):
        Masker("frequency")
    with pytest.raises(ValueError, match="Unknown masking"):
        Masker("span")
    with pytest.raises(ValueError, match="Unknown masking statistics"):
        Masker("frequency", zipf_scores(), statistics="global")
    with pytest.raises(ValueError, match="Unknown masking statistics"):
        frequency_mask_probs(batch([[20]]), torch.tensor([0.5]), zipf_scores(), 0.5, "global")
    assert Masker("frequency", zipf_scores()).statistics == "sequence"  # the released default
