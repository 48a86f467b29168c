import io
import json
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from core.config import ModelConfig
from core.errors import UserError
from core.model import MDLM
from core.sampling import (
    MASK_TEXT,
    SampleConfig,
    append_sample,
    confidence_plan,
    draw_tokens,
    render_text,
    sample,
    template_from_prompt,
    trace_to_jsonl,
)
from core.schedules import SAMPLING_SCHEDULES, BimodalGaussian, sampling_schedule
from core.specials import BOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID
from core.tokenizer import train_tokenizer

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "her sister", "the teacher", "a small bird"]
VERBS = ["sat on", "looked at", "ran past", "talked about", "found", "painted", "carried"]
OBJECTS = ["the mat", "a red box", "the garden", "an apple", "the river", "a long letter", "the window"]


def corpus_lines(n: int = 300) -> list[str]:
    rng = random.Random(0)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus_lines(), vocab_size=400)


def tiny_model(tokenizer, time_conditioning: bool = False) -> MDLM:
    torch.manual_seed(0)
    cfg = ModelConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        ffn_size=64,
        cond_dim=16,
        time_conditioning=time_conditioning,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return MDLM(cfg, tokenizer.get_vocab_size())


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


class FixedLogits(nn.Module):
    """A stand-in denoiser: position l prefers token `favourite[l]` by a margin of 2 nats over a
    flat rest, so a temperature-1 draw rarely picks it while a greedy one always does."""

    def __init__(self, vocab_size: int, length: int, time_conditioning: bool = False):
        super().__init__()
        self.cfg = SimpleNamespace(time_conditioning=time_conditioning)
        self.favourite = NUM_SPECIAL + 7 * torch.arange(length)
        self.vocab_size = vocab_size
        self.rates: list[float] = []

    def forward(self, input_ids, attention_mask=None, rate=None, output_mask=None):
        self.rates.append(float(rate[0]))
        B, L = input_ids.shape
        logits = torch.zeros(B, L, self.vocab_size)
        logits[:, torch.arange(L), self.favourite] = 2.0
        logits[..., MASK_ID] = 50.0  # the sampler must never draw [MASK], however likely
        return logits if output_mask is None else logits[output_mask]


def masks(tokens) -> int:
    return sum(1 for t in tokens if t == MASK_ID)


# ------------------------------------------------------------------ templates


def test_prefix_template_is_bos_prompt_then_masks(tokenizer):
    ids, fixed = template_from_prompt(tokenizer, "the cat sat", 12)
    prompt = tokenizer.encode("the cat sat", add_special_tokens=False).ids
    assert ids.tolist() == [BOS_ID] + prompt + [MASK_ID] * (12 - 1 - len(prompt))
    assert fixed.tolist() == [True] * (1 + len(prompt)) + [False] * (12 - 1 - len(prompt))


def test_no_prompt_is_bos_then_masks(tokenizer):
    ids, fixed = template_from_prompt(tokenizer, None, 8)
    assert ids.tolist() == [BOS_ID] + [MASK_ID] * 7
    assert fixed.tolist() == [True] + [False] * 7


def test_infill_template_fills_markers_and_pads_the_rest(tokenizer):
    ids, fixed = template_from_prompt(tokenizer, "the cat <mask>*3 the mat. [MASK]", 20)
    head = tokenizer.encode("the cat", add_special_tokens=False).ids
    tail = tokenizer.encode(" the mat.", add_special_tokens=False).ids
    expected = [BOS_ID] + head + [MASK_ID] * 3 + tail + [MASK_ID]
    assert ids.tolist() == expected + [PAD_ID] * (20 - len(expected))
    assert (~fixed).sum() == 4 and (ids[~fixed] == MASK_ID).all()


# ------------------------------------------------------------------ the sampling contract


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
@pytest.mark.parametrize("prompt", ["the cat sat", "a dog <mask>*4 the garden. <mask>*3"])
def test_given_tokens_never_change(tokenizer, model, sampler, prompt):
    ids, fixed = template_from_prompt(tokenizer, prompt, 24)
    result = sample(model, tokenizer, SampleConfig(length=24, steps=8, sampler=sampler), prompt=prompt)
    for step in result.trace:
        assert torch.equal(torch.tensor(step.tokens)[fixed], ids[fixed])
    assert torch.equal(torch.tensor(result.tokens)[fixed], ids[fixed])


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
@pytest.mark.parametrize("schedule", SAMPLING_SCHEDULES)
def test_no_mask_remains_and_masks_never_grow(tokenizer, model, sampler, schedule):
    cfg = SampleConfig(length=20, steps=6, sampler=sampler, schedule=schedule)
    result = sample(model, tokenizer, cfg)
    assert MASK_ID not in result.tokens and MASK_TEXT not in result.text
    assert all(t >= NUM_SPECIAL for t in result.tokens[1:])  # no special is ever drawn
    counts = [step.masked for step in result.trace]
    assert counts[0] == 19 and counts[-1] == 0
    assert all(later <= earlier for earlier, later in zip(counts, counts[1:]))
    assert [step.step for step in result.trace] == list(range(7))
    assert [masks(step.tokens) for step in result.trace] == counts


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_same_seed_same_text_other_seed_other_text(tokenizer, model, sampler):
    texts = [
        sample(model, tokenizer, SampleConfig(length=16, steps=8, sampler=sampler, seed=seed)).text
        for seed in (0, 0, 1, 2)
    ]
    assert texts[0] == texts[1]
    assert texts[2] != texts[0] or texts[3] != texts[0]


def test_trace_text_shows_masks(tokenizer, model):
    result = sample(model, tokenizer, SampleConfig(length=10, steps=4), prompt="the cat")
    assert result.trace[0].text == "the cat" + MASK_TEXT * 7
    assert result.text == render_text(tokenizer, result.tokens)


def test_on_step_sees_every_step(tokenizer, model):
    seen = []
    result = sample(model, tokenizer, SampleConfig(length=12, steps=5), on_step=seen.append)
    assert seen == result.trace and len(seen) == 6


# ------------------------------------------------------------------ caching


def test_cache_cuts_forward_passes_and_keeps_the_result(tokenizer, model):
    cfg = SampleConfig(length=12, steps=64, seed=3)
    cached = sample(model, tokenizer, cfg)
    plain = sample(model, tokenizer, SampleConfig(length=12, steps=64, seed=3, cache=False))
    assert plain.forward_passes == sum(1 for step in plain.trace[:-1] if step.masked)  # every step with work
    assert cached.forward_passes <= 12  # at most one pass per position unmasked
    assert cached.tokens == plain.tokens
    assert [s.tokens for s in cached.trace] == [s.tokens for s in plain.trace]


def test_cache_keeps_the_result_with_time_conditioning(tokenizer):
    conditioned = tiny_model(tokenizer, time_conditioning=True)
    with torch.no_grad():  # non-zero modulation, so the rate really changes the logits
        for block in conditioned.blocks:
            block.modulation.weight.normal_(0, 0.5)
    cached = sample(conditioned, tokenizer, SampleConfig(length=12, steps=40))
    plain = sample(conditioned, tokenizer, SampleConfig(length=12, steps=40, cache=False))
    assert cached.tokens == plain.tokens
    assert cached.forward_passes < plain.forward_passes == sum(1 for step in plain.trace[:-1] if step.masked)


def test_time_conditioning_gets_the_current_rate(tokenizer):
    double = FixedLogits(tokenizer.get_vocab_size(), 10, time_conditioning=True)
    sample(double, tokenizer, SampleConfig(length=10, steps=5, eps=1e-5, cache=False))
    expected = [1.0, 0.8, 0.6, 0.4, 0.2]  # linear: r = t at the start of each step
    assert double.rates == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------ temperature, top-p, float64


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (1e-4, 1.0), (1.0, 1e-3)])
def test_cold_or_narrow_sampling_is_greedy(tokenizer, sampler, temperature, top_p):
    double = FixedLogits(tokenizer.get_vocab_size(), 16)
    cfg = SampleConfig(length=16, steps=4, sampler=sampler, temperature=temperature, top_p=top_p)
    result = sample(double, tokenizer, cfg)
    assert result.tokens[1:] == double.favourite[1:].tolist()


def test_temperature_one_is_not_greedy(tokenizer):
    double = FixedLogits(tokenizer.get_vocab_size(), 16)
    result = sample(double, tokenizer, SampleConfig(length=16, steps=4))
    assert result.tokens[1:] != double.favourite[1:].tolist()
    assert MASK_ID not in result.tokens


def test_draws_are_gumbel_max_in_float64():
    log_probs = torch.randn(
        5, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    ).log_softmax(-1)
    drawn = draw_tokens(log_probs, torch.Generator().manual_seed(7))
    u = torch.rand(5, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert torch.equal(drawn, (log_probs - torch.log(-torch.log(u))).argmax(-1))


def test_sampler_draws_only_float64_uniforms(tokenizer, model, monkeypatch):
    dtypes = []
    real_rand = torch.rand

    def spy(*args, **kwargs):
        dtypes.append(kwargs.get("dtype"))
        return real_rand(*args, **kwargs)

    monkeypatch.setattr(torch, "rand", spy)
    for sampler in ("ancestral", "confidence"):
        sample(model, tokenizer, SampleConfig(length=12, steps=4, sampler=sampler))
    assert dtypes and all(d == torch.float64 for d in dtypes)


# ------------------------------------------------------------------ confidence


def test_confidence_unmasks_exactly_k_per_step(tokenizer, model):
    result = sample(model, tokenizer, SampleConfig(length=31, steps=6, sampler="confidence"))
    counts = [step.masked for step in result.trace]
    assert [a - b for a, b in zip(counts, counts[1:])] == [5] * 6


def test_confidence_plan_follows_the_schedule_and_ends_clean():
    times = torch.linspace(1.0, 1e-5, 9, dtype=torch.float64)
    for name in SAMPLING_SCHEDULES:
        plan = confidence_plan(40, sampling_schedule(name).rate(times))
        assert len(plan) == 8 and sum(plan) == 40 and min(plan) >= 0
    assert confidence_plan(40, sampling_schedule("linear").rate(times)) == [5] * 8


def test_confidence_unmasks_the_most_probable_positions_first(tokenizer):
    double = FixedLogits(tokenizer.get_vocab_size(), 9)
    margins = torch.arange(9, dtype=torch.float32)  # later positions are surer
    original = double.forward

    def forward(*args, **kwargs):
        logits = original(*args, **kwargs)
        where = (args[0] == MASK_ID)[0].nonzero()[:, 0]
        logits[torch.arange(len(where)), double.favourite[where]] += margins[where]
        return logits

    double.forward = forward
    result = sample(double, tokenizer, SampleConfig(length=9, steps=4, sampler="confidence", temperature=0))
    first_step = result.trace[1].tokens
    assert [i for i, t in enumerate(first_step) if t != MASK_ID] == [0, 7, 8]


# ------------------------------------------------------------------ bad inputs and output files


@pytest.mark.parametrize(
    "cfg, prompt",
    [
        (SampleConfig(length=3), "the cat sat on the mat"),
        (SampleConfig(length=8), "the cat <mask>*3 the old man talked about a long letter"),
        (SampleConfig(steps=0), None),
        (SampleConfig(sampler="beam"), None),
        (SampleConfig(temperature=-1), None),
        (SampleConfig(top_p=0), None),
        (SampleConfig(schedule="bimodal"), None),
        (SampleConfig(length=8), "the cat <mask>*0"),
    ],
)
def test_bad_inputs_are_one_sentence_user_errors(tokenizer, model, cfg, prompt):
    with pytest.raises(UserError) as error:
        sample(model, tokenizer, cfg, prompt=prompt)
    message = str(error.value)
    assert message.endswith(".") and "\n" not in message and message.count(". ") == 0


def test_trace_jsonl_has_every_step_then_the_final_text(tokenizer, model, tmp_path):
    result = sample(model, tokenizer, SampleConfig(length=10, steps=3), prompt="a dog")
    trace_to_jsonl(result, tmp_path / "trace.jsonl")
    buffer = io.StringIO()
    trace_to_jsonl(result, buffer)
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert lines == [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["step"] for line in lines[:-1]] == [0, 1, 2, 3]
    assert set(lines[0]) == {"step", "t", "masked", "tokens", "text"}
    assert lines[-1]["final"] is True and lines[-1]["text"] == result.text


def test_append_sample_writes_one_replayable_line(tokenizer, model, tmp_path):
    result = sample(model, tokenizer, SampleConfig(length=10, steps=3))
    append_sample(tmp_path / "samples.jsonl", result, step=500)
    append_sample(tmp_path / "samples.jsonl", result, step=1000)
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [500, 1000]
    assert records[0]["text"] == result.text and len(records[0]["trace"]) == 4


# ------------------------------------------------------------------ sampling schedules


@pytest.mark.parametrize("name", SAMPLING_SCHEDULES)
def test_sampling_schedules_run_from_clean_to_masked(name):
    rate = sampling_schedule(name).rate(torch.linspace(0, 1, 101))
    assert rate.dtype == torch.float64
    assert rate[0] == 0 and rate[-1] == pytest.approx(1.0, abs=2e-3)  # log-linear: 1 - 1e-3
    assert (rate[1:] > rate[:-1]).all()


def test_sampling_schedule_rejects_random_schedules():
    with pytest.raises(UserError):
        sampling_schedule("gaussian")
    with pytest.raises(TypeError):
        BimodalGaussian().rate(torch.tensor([0.5]))
