"""Scoring sentences with a masked diffusion LM (SPEC section 6): higher is more likely.

PLLScorer: pseudo-log-likelihood, sum over tokens of log p(token | all others, that one masked).
Every (sentence, position) becomes one row with a single [MASK]; rows of equal length from all
sentences are stacked into one batch (no padding, so no attention mask), and the output head runs
only at each row's masked slot. The naive reference (one full forward per masked token, the head over
every position) gives the same numbers; bench/eval_throughput.py measures the difference in speed.

NELBOScorer: minus a Monte-Carlo estimate of the continuous-time NELBO with K draws of the rate and
the mask, shared by every sentence (common random numbers: the two sides of a pair see the same draws,
so their difference is far less noisy than either score).

Text is tokenised as in training: <s>, then the text's ids with special-token strings read as text.
For EWoK the scored text is context + " " + target; only the target's tokens are scored, the context
stays visible.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from core.objective import masked_cross_entropy
from core.schedules import Schedule, nelbo_weight, stratified_t
from core.specials import BOS_ID, MASK_ID, NUM_SPECIAL


@dataclass
class ScoredSequence:
    ids: list[int]  # <s> + context ids + text ids
    start: int  # the first position that is scored (after <s> and the context)

    def scored_positions(self) -> list[int]:
        return [p for p in range(self.start, len(self.ids)) if self.ids[p] >= NUM_SPECIAL]


def encode_for_scoring(
    tokenizer: Tokenizer, texts: list[str], contexts: list[str | None] | None = None
) -> list[ScoredSequence]:
    if contexts is None:
        contexts = [None] * len(texts)
    if len(contexts) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(contexts)} contexts")
    # The target is encoded apart from its context, with its leading space: the byte-level
    # pre-tokenizer always splits before " word", so this is the joined text's tokenisation and the
    # target's tokens are known exactly.
    targets = [f" {text}" if context else text for text, context in zip(texts, contexts)]
    previous = tokenizer.encode_special_tokens
    tokenizer.encode_special_tokens = True  # "<mask>" in a sentence is text, as in training data
    try:
        target_ids = [e.ids for e in tokenizer.encode_batch(targets, add_special_tokens=False)]
        given = [c for c in contexts if c]
        context_ids = iter([e.ids for e in tokenizer.encode_batch(given, add_special_tokens=False)])
    finally:
        tokenizer.encode_special_tokens = previous
    sequences = []
    for context, ids in zip(contexts, target_ids):
        prefix = [BOS_ID] + (next(context_ids) if context else [])
        sequences.append(ScoredSequence(ids=prefix + ids, start=len(prefix)))
    return sequences


def drop_long_items(suite, tokenizer: Tokenizer, max_tokens: int) -> int:
    """Leave out of `suite` the items with a side longer than max_tokens (model.max_position) once
    encoded; return how many, also kept in suite.skipped. Offsets past max_position all share the
    last relative-position bucket, so the model never saw such text, and PLL costs grow with the
    square of the length (a 700-token pair takes minutes)."""
    texts = [text for item in suite.items for text in item.texts()]
    contexts = [item.context for item in suite.items for _ in item.texts()]
    lengths = iter([len(sequence.ids) for sequence in encode_for_scoring(tokenizer, texts, contexts)])
    # extra_tokens: what a scorer appends (the reading suite's masks)
    kept = [
        item
        for item in suite.items
        if max(next(lengths) for _ in item.texts()) + getattr(item, "extra_tokens", 0) <= max_tokens
    ]
    dropped = len(suite.items) - len(kept)
    suite.items, suite.skipped = kept, suite.skipped + dropped
    return dropped


def realised_rate(ids: list[int]) -> float:
    """One masked token among the sequence's maskable ones: the mask rate a PLL row really has."""
    maskable = sum(1 for i in ids if i >= NUM_SPECIAL)
    return 1.0 / max(maskable, 1)


def resolve_rate(rate_value: float | str, ids: list[int]) -> float:
    if rate_value == "realised":
        return realised_rate(ids)
    return float(rate_value)


def check_rate_value(rate_value: float | str) -> float | str:
    if rate_value == "realised":
        return rate_value
    try:
        value = float(rate_value)
    except (TypeError, ValueError):
        raise ValueError(f"rate_value must be 'realised' or a number in [0, 1], got {rate_value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"rate_value must be 'realised' or a number in [0, 1], got {rate_value!r}")
    return value


class _RowScorer:
    """Shared machinery: rows of one length, each with some masked positions, run in batches of at
    most batch_tokens tokens; each masked token's log-probability, times its row's weight, is added
    to the score of the sentence the row belongs to."""

    backend = "rows"

    def __init__(self, model, tokenizer: Tokenizer, device, batch_tokens: int = 8192, subs: bool = True):
        self.model, self.tokenizer, self.device = model, tokenizer, torch.device(device)
        self.batch_tokens, self.subs = batch_tokens, subs

    def score_texts(self, texts: list[str], contexts: list[str | None] | None = None) -> list[float]:
        sequences = encode_for_scoring(self.tokenizer, texts, contexts)
        scores = torch.zeros(len(sequences), dtype=torch.float64)
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, sequence in enumerate(sequences):
            by_length[len(sequence.ids)].append(index)
        was_training = self.model.training
        self.model.eval()  # no dropout: a score must not depend on the call
        try:
            with torch.inference_mode():
                for length, members in sorted(by_length.items()):
                    group = [sequences[i] for i in members]
                    self._score_group(group, torch.tensor(members), length, scores)
        finally:
            self.model.train(was_training)
        return scores.tolist()

    def _score_group(
        self, group: list[ScoredSequence], owners: torch.Tensor, length: int, scores: torch.Tensor
    ) -> None:
        raise NotImplementedError

    def rows_per_batch(self, length: int) -> int:
        return max(1, self.batch_tokens // length)

    def _run_rows(
        self,
        base: torch.Tensor,
        masked: torch.Tensor,
        rates: torch.Tensor,
        row_weights: torch.Tensor,
        owners: torch.Tensor,
        scores: torch.Tensor,
    ) -> None:
        """base [R, T] clean ids, masked [R, T], rates [R]; adds sum_l log p(x_l) * weight to
        scores[owner]."""
        device = self.device
        noised = base.masked_fill(masked, MASK_ID).to(device)
        output_mask = masked.to(device)
        logits = self.model(noised, rate=rates.to(device), output_mask=output_mask)  # [M, V], row-major order
        log_probs = -masked_cross_entropy(logits, base[masked].to(device), self.subs)  # fp32 log-softmax
        row_of_token = masked.nonzero()[:, 0].to(device)
        per_row = torch.zeros(len(base), dtype=torch.float64, device=device).index_add_(
            0, row_of_token, log_probs.double()
        )
        scores.index_add_(0, owners, (per_row.cpu() * row_weights.double()))


class PLLScorer(_RowScorer):
    """Pseudo-log-likelihood: each row masks one scored token."""

    backend = "pll"

    def __init__(
        self,
        model,
        tokenizer: Tokenizer,
        device,
        batch_tokens: int = 8192,
        rate_value: float | str = 0.0,
        subs: bool = True,
    ):
        super().__init__(model, tokenizer, device, batch_tokens, subs)
        # The time-conditioning input while scoring: 0 (a clean sentence) or "realised" (1/L, the
        # fraction one mask really hides); a config key because neither is right for every schedule.
        self.rate_value = check_rate_value(rate_value)

    def _score_group(self, group, owners, length, scores):
        base = torch.tensor([s.ids for s in group], dtype=torch.long)  # [S, T]
        scored = torch.zeros_like(base, dtype=torch.bool)
        for row, sequence in enumerate(group):
            scored[row, sequence.scored_positions()] = True
        sentence_rates = torch.tensor(
            [resolve_rate(self.rate_value, s.ids) for s in group], dtype=torch.float32
        )
        sentence, position = scored.nonzero(as_tuple=True)  # one row per scored token
        step = self.rows_per_batch(length)
        for first in range(0, len(sentence), step):
            rows, slots = sentence[first : first + step], position[first : first + step]
            masked = torch.zeros(len(rows), length, dtype=torch.bool)
            masked[torch.arange(len(rows)), slots] = True
            self._run_rows(
                base[rows], masked, sentence_rates[rows], torch.ones(len(rows)), owners[rows], scores
            )


class NELBOScorer(_RowScorer):
    """Minus the Monte-Carlo NELBO: (1/K) sum_k w_k sum_{masked l} log p(x_l | z_k), with the exact
    weight w = |alpha'| / r (power 1, whatever the run trained with) and uniform masking at rate r_k.
    Only the scored tokens (the target, for EWoK) are ever masked."""

    backend = "nelbo"
    UNIFORM_BLOCK = 64  # positions per block of the fixed uniform table

    def __init__(
        self,
        model,
        tokenizer: Tokenizer,
        device,
        schedule: Schedule,
        draws: int = 16,
        seed: int = 0,
        batch_tokens: int = 8192,
        progress: float = 1.0,
        subs: bool = True,
    ):
        super().__init__(model, tokenizer, device, batch_tokens, subs)
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        self.draws, self.seed = draws, seed
        generator = torch.Generator().manual_seed(seed)
        rates, abs_dalpha = schedule.sample(stratified_t(draws, generator), progress, generator)
        self.rates = rates.float()
        self.weights = nelbo_weight(rates, abs_dalpha, 1.0).double() / draws
        self._uniform = torch.zeros(draws, 0)

    def uniforms(self, length: int) -> torch.Tensor:
        """[K, length] fixed uniforms; position l's value never depends on the longest text seen,
        because each block of positions has its own seed."""
        while self._uniform.shape[1] < length:
            block = self._uniform.shape[1] // self.UNIFORM_BLOCK
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + block + 1)
            fresh = torch.rand(self.draws, self.UNIFORM_BLOCK, generator=generator)
            self._uniform = torch.cat([self._uniform, fresh], dim=1)
        return self._uniform[:, :length]

    def _score_group(self, group, owners, length, scores):
        base = torch.tensor([s.ids for s in group], dtype=torch.long)
        scored = torch.zeros_like(base, dtype=torch.bool)
        for row, sequence in enumerate(group):
            scored[row, sequence.scored_positions()] = True
        sentence = torch.arange(len(group)).repeat_interleave(self.draws)  # rows: every sentence x every draw
        draw = torch.arange(self.draws).repeat(len(group))
        masked = scored[sentence] & (self.uniforms(length)[draw] < self.rates[draw, None])
        keep = masked.any(dim=1)  # a draw that masks nothing adds exactly 0
        sentence, draw, masked = sentence[keep], draw[keep], masked[keep]
        step = self.rows_per_batch(length)
        for first in range(0, len(sentence), step):
            rows, draws = sentence[first : first + step], draw[first : first + step]
            self._run_rows(
                base[rows],
                masked[first : first + step],
                self.rates[draws],
                self.weights[draws],
                owners[rows],
                scores,
            )


def naive_pll(
    model,
    tokenizer: Tokenizer,
    text: str,
    device,
    rate_value: float | str = 0.0,
    context: str | None = None,
    subs: bool = True,
) -> float:
    """The reference PLL, written for clarity: for each scored token, mask it, run the whole model
    (the head at every position), log-softmax over the full vocabulary, pick the token, sum."""
    device = torch.device(device)
    rate_value = check_rate_value(rate_value)
    sequence = encode_for_scoring(tokenizer, [text], [context])[0]
    ids = torch.tensor(sequence.ids, dtype=torch.long, device=device)
    rate = torch.tensor([resolve_rate(rate_value, sequence.ids)], device=device)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.inference_mode():
            for position in sequence.scored_positions():
                noised = ids.clone()
                noised[position] = MASK_ID
                logits = model(noised[None], rate=rate)[0].float()  # [T, V]
                if subs:
                    logits[:, MASK_ID] = -math.inf
                total += torch.log_softmax(logits, dim=-1)[position, ids[position]].item()
    finally:
        model.train(was_training)
    return total
