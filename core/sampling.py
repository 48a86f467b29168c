"""Sampling by iterative unmasking (SPEC section 7).

A sequence starts as <s> followed by [MASK]s, or as a template whose given tokens stay fixed, and
walks t from 1 down to eps along a deterministic schedule (`schedules.sampling_schedule`):

- ancestral: from t to s each masked position unmasks with probability (alpha_s - alpha_t) /
  (1 - alpha_t) = 1 - r_s / r_t and takes a token drawn from p_theta; the last step fills any
  position still masked with the argmax.
- confidence: each step unmasks the k masked positions whose drawn token is the most probable, with
  k set so the number still masked follows the schedule and reaches 0 at the last step.

Each sampler is a class registered by name in SAMPLERS (core.registry) with `register_sampler`,
with its own parameters (a dataclass, `Params`, whose defaults apply) and its per-step update as a
method, as MDLM's diffusion.py gives each sampler update its own method; `sample` runs the loop shared
by all of them and looks the sampler up by cfg.sampler. A user's module can register another before
calling `sample`.

Categorical draws are Gumbel-max in float64: float32 noise cannot draw a token more than ~17 nats
below the best one, which measurably changes samples. Ids below 16 (the specials, [MASK] included)
are never drawn.

Prompts: plain text is a prefix, "<s> prompt [MASK]...", up to `length` tokens. Text with mask
markers is an infill template and the whole sequence: "<mask>" or "[MASK]" stands for one position
to fill, "<mask>*5" for five; a space just before a marker is dropped, since the filled token
brings its own. "The cat <mask>*3 the mat." fills three tokens between the given words; end the
template with "<mask>*20" to also continue it. Positions after a template are padding.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from core.errors import UserError
from core.registry import SAMPLERS
from core.schedules import sampling_schedule
from core.specials import BOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID

MASK_TEXT = "[MASK]"  # how a masked position shows in TraceStep.text
MASK_MARKER = re.compile(r" ?(?:<mask>|\[mask\])(?:\*(\d+))?", re.IGNORECASE)


@dataclass
class SampleConfig:
    length: int = 64
    steps: int = 32
    sampler: str = "ancestral"  # a name in SAMPLERS: ancestral | confidence | one a user registered
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    schedule: str = "linear"  # the reverse process; see schedules.SAMPLING_SCHEDULES
    eps: float = 1e-5  # the last time, t_N
    cache: bool = True  # run the model only at steps that unmask something (see `sample`)
    sampler_params: dict[str, Any] = field(default_factory=dict)  # the sampler's own Params, by name

    @classmethod
    def from_settings(cls, settings, **changes) -> SampleConfig:
        """From a run's `samples` settings (core.config.SamplesConfig, or the TUI's form built on it):
        the fields both have, then `changes`; one place, so a new setting reaches every sampler caller."""
        shared = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        return cls(**{**shared, **changes})


@dataclass
class TraceStep:
    step: int  # 0 is the starting template
    t: float  # the time after this step
    tokens: list[int]  # the whole sequence, <s> and padding included, positions as in the model
    masked: int
    text: str  # decoded, each masked position shown as MASK_TEXT


@dataclass
class SampleResult:
    tokens: list[int]
    text: str
    trace: list[TraceStep] = field(default_factory=list)
    forward_passes: int = 0
    seconds: float = 0.0


def check_config(cfg: SampleConfig) -> None:
    sampler_params(cfg)  # an unknown sampler or parameter is refused with what there is
    if cfg.steps < 1:
        raise UserError(f"Sampling needs at least 1 step, got {cfg.steps}.")
    if cfg.length < 2:
        raise UserError(f"Sample length must be at least 2 (<s> and one token), got {cfg.length}.")
    if cfg.temperature < 0:
        raise UserError(f"Temperature must be 0 (greedy) or more, got {cfg.temperature}.")
    if not 0 < cfg.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {cfg.top_p}.")
    if not 0 < cfg.eps < 1:
        raise UserError(f"The sampler's final time eps must be in (0, 1), got {cfg.eps}.")
    sampling_schedule(cfg.schedule)


def check_length(model, length: int) -> None:
    """A sample no longer than the model's positions: offsets past model.max_position all share the
    last relative-position bucket (text the model never saw), and each step costs length squared."""
    limit = getattr(getattr(model, "cfg", None), "max_position", None)
    if limit is not None and length > limit:
        raise UserError(
            f"Sample length {length} exceeds the model's {limit} positions (model.max_position); "
            f"ask for {limit} tokens or fewer."
        )


def _encode(tokenizer, text: str) -> list[int]:
    previous = tokenizer.encode_special_tokens
    tokenizer.encode_special_tokens = True  # "<s>" typed in a prompt is text, not the special
    try:
        return tokenizer.encode(text, add_special_tokens=False).ids
    finally:
        tokenizer.encode_special_tokens = previous


def template_from_prompt(tokenizer, prompt: str | None, length: int) -> tuple[Tensor, Tensor]:
    """Token ids [length] and `fixed` [length] (True where a token is given and never changes)."""
    ids = [BOS_ID]
    infill = prompt is not None and MASK_MARKER.search(prompt) is not None
    if infill:
        start = 0
        for marker in MASK_MARKER.finditer(prompt):
            count = int(marker.group(1) or 1)
            if count < 1:
                raise UserError(
                    f"Mask marker '{marker.group(0).strip()}' asks for no position; use a count of 1 or more."
                )
            if count > length:  # checked before building the list: a huge count would exhaust memory
                raise UserError(
                    f"Mask marker '{marker.group(0).strip()}' asks for {count} positions, more than "
                    f"the sample length {length}."
                )
            ids += _encode(tokenizer, prompt[start : marker.start()]) + [MASK_ID] * count
            start = marker.end()
        ids += _encode(tokenizer, prompt[start:])
        if len(ids) > length:
            raise UserError(
                f"The infill template needs {len(ids)} tokens with <s> but the length is {length}; "
                "raise the length."
            )
        ids += [PAD_ID] * (length - len(ids))
    else:
        ids += _encode(tokenizer, prompt or "")
        if len(ids) >= length:
            raise UserError(
                f"The prompt takes {len(ids)} tokens with <s>, leaving nothing to sample "
                f"in length {length}; raise the length."
            )
        ids += [MASK_ID] * (length - len(ids))
    tokens = torch.tensor(ids, dtype=torch.long)
    return tokens, tokens != MASK_ID


def render_text(tokenizer, tokens: list[int], mask_text: str = MASK_TEXT) -> str:
    """Decoded text with each masked position as mask_text; other specials are left out."""
    parts, run = [], []
    for token in tokens + [MASK_ID]:  # the sentinel flushes the last run
        if token >= NUM_SPECIAL:
            run.append(token)
            continue
        if run:
            parts.append(tokenizer.decode(run, skip_special_tokens=False))
            run = []
        if token == MASK_ID:
            parts.append(mask_text)
    return "".join(parts[:-1])


def token_log_probs(logits: Tensor, temperature: float, top_p: float) -> Tensor:
    """float64 log-probabilities over the non-special vocabulary, after temperature and top-p."""
    logits = logits.to(torch.float64, copy=True)  # a copy: the caller's logits stay as they were
    logits[:, :NUM_SPECIAL] = float("-inf")
    if temperature > 0:
        logits = logits / temperature
    log_probs = logits.log_softmax(dim=-1)
    if top_p < 1:
        # keep the smallest set of most probable tokens whose mass reaches top_p (the best always)
        sorted_log_probs, order = log_probs.sort(dim=-1, descending=True)
        sorted_probs = sorted_log_probs.exp()
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        log_probs = log_probs.masked_fill(drop, float("-inf")).log_softmax(dim=-1)
    return log_probs


def uniform64(n, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)


def draw_tokens(log_probs: Tensor, generator: torch.Generator, greedy: bool = False) -> Tensor:
    """One token per row: argmax(log p + Gumbel noise) with float64 noise, or plain argmax."""
    if greedy:
        return log_probs.argmax(dim=-1)
    tiny = torch.finfo(torch.float64).tiny
    gumbel = -torch.log(-torch.log(uniform64(log_probs.shape, generator).clamp_min(tiny)))
    return (log_probs + gumbel.to(log_probs.device)).argmax(dim=-1)


def confidence_plan(masked: int, rates: Tensor) -> list[int]:
    """How many positions each confidence step unmasks: the number still masked follows
    masked * r_t / r_(t=1) (rounded) and is 0 after the last step."""
    remaining = (masked * rates[1:] / rates[0]).round().long().tolist()
    remaining[-1] = 0
    before = [masked] + remaining[:-1]
    return [b - a for b, a in zip(before, remaining)]


# ---------------------------------------------------------------- samplers


@dataclass
class NoParams:
    """A sampler with no options of its own."""


class Sampler:
    """One reverse process. `sample` makes one per sequence, calls `start` with the template, then
    `update` once per step with the state the shared loop keeps:

    - ids [1, L], changed in place: the sampler writes the tokens it unmasks;
    - where: the masked positions before this step, as `(ids == MASK_ID).nonzero(as_tuple=True)`;
    - predict(): float64 log-probabilities [M, V] at those positions, in row-major order, after
      temperature and top-p; each call is one forward pass, so call it only when the step needs logits
      (with self.cfg.cache False a step that has masked positions should still call it: that is what
      the uncached count of passes measures).

    Draw randomness from self.generator only (uniform64, draw_tokens), so a seed gives one result.
    Subclasses set `Params`, a dataclass of their own options with defaults; self.params is one,
    filled from cfg.sampler_params."""

    name: ClassVar[str] = ""  # what cfg.sampler says to pick this one
    Params: ClassVar[type] = NoParams

    def __init__(self, cfg: SampleConfig, rates: Tensor, generator: torch.Generator, params) -> None:
        self.cfg = cfg
        self.rates = rates  # float64 [steps + 1]: the mask rate at each time, t = 1 first
        self.generator = generator
        self.params = params
        self.greedy = cfg.temperature == 0

    def start(self, ids: Tensor) -> None:
        """Once, before the first step, with the starting template."""

    def update(
        self, step: int, ids: Tensor, where: tuple[Tensor, Tensor], predict: Callable[[], Tensor]
    ) -> None:
        raise NotImplementedError


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: add a Sampler subclass to SAMPLERS under its `name`. A name already taken is
    refused, and so are the built-in names from any other module."""
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise UserError(f"{cls!r} must be a subclass of core.sampling.Sampler to be registered as a sampler.")
    if not dataclasses.is_dataclass(cls.Params):
        raise UserError(f"Sampler {cls.__qualname__}: its Params must be a dataclass, got {cls.Params!r}.")
    return SAMPLERS.register(cls)


def sampler_class(name: str) -> type[Sampler]:
    """The sampler registered as `name`; an unknown name is refused in one sentence listing them all."""
    if name not in SAMPLERS.registered():
        raise UserError(f"Unknown sampler '{name}'; choose one of {', '.join(SAMPLERS.registered())}.")
    return SAMPLERS.get(name)


def sampler_params(cfg: SampleConfig):
    """cfg.sampler's Params, its defaults overridden by cfg.sampler_params; unknown keys are refused."""
    cls = sampler_class(cfg.sampler)
    given = dict(cfg.sampler_params or {})
    known = [f.name for f in dataclasses.fields(cls.Params)]
    unknown = [key for key in given if key not in known]
    if unknown:
        has = f"its parameters are {', '.join(known)}" if known else "it has no parameters"
        raise UserError(f"Sampler '{cfg.sampler}' has no parameter {', '.join(unknown)}; {has}.")
    return cls.Params(**given)


@register_sampler
class AncestralSampler(Sampler):
    """From t to s each masked position unmasks with probability 1 - r_s / r_t and takes a token drawn
    from p_theta; the last step fills any position still masked with the argmax."""

    name = "ancestral"

    def update(self, step, ids, where, predict):
        n_masked = where[0].numel()
        if not n_masked:
            return
        last = step == self.cfg.steps
        stay = float(self.rates[step] / self.rates[step - 1])  # P(still masked at s | masked at t)
        unmask = uniform64(n_masked, self.generator) >= stay
        if unmask.any() or last or not self.cfg.cache:
            log_probs = predict()
        if unmask.any():
            ids[where[0][unmask], where[1][unmask]] = draw_tokens(
                log_probs[unmask], self.generator, self.greedy
            )
        if last and not unmask.all():
            keep = ~unmask
            ids[where[0][keep], where[1][keep]] = log_probs[keep].argmax(dim=-1)


@register_sampler
class ConfidenceSampler(Sampler):
    """Each step unmasks the k masked positions whose drawn token is the most probable, with k set so
    the number still masked follows the schedule (confidence_plan) and reaches 0 at the last step."""

    name = "confidence"

    def start(self, ids):
        self.plan = confidence_plan(int((ids == MASK_ID).sum()), self.rates)

    def update(self, step, ids, where, predict):
        k = self.plan[step - 1]
        if k or (where[0].numel() and not self.cfg.cache):
            log_probs = predict()
        if k:
            drawn = draw_tokens(log_probs, self.generator, self.greedy)
            confidence = log_probs.gather(-1, drawn[:, None])[:, 0]
            chosen = confidence.topk(k).indices
            ids[where[0][chosen], where[1][chosen]] = drawn[chosen]


@torch.no_grad()
def sample(
    model,
    tokenizer,
    cfg: SampleConfig,
    prompt: str | None = None,
    device="cpu",
    on_step: Callable[[TraceStep], None] | None = None,
) -> SampleResult:
    """Sample one sequence with the sampler SAMPLERS names cfg.sampler; every step's state goes to the
    trace and to on_step.

    Caching: with cfg.cache the model runs only at steps that unmask at least one position. That is
    SPEC 7's reuse of logits for an unchanged sequence (MDLM's ddpm_cache) taken one step further:
    the positions to unmask are drawn before the model runs, so a step that unmasks nothing needs no
    logits at all, with or without time conditioning. The random draws are the same either way, so
    the result equals that of cfg.cache = False for the same seed."""
    check_config(cfg)
    check_length(model, cfg.length)
    started = time.perf_counter()
    tokens, _ = template_from_prompt(tokenizer, prompt, cfg.length)
    ids = tokens[None].to(device)
    attention_mask = None if not (ids == PAD_ID).any() else ids != PAD_ID
    generator = torch.Generator(device=torch.device(device)).manual_seed(cfg.seed)
    times = torch.linspace(1.0, cfg.eps, cfg.steps + 1, dtype=torch.float64)
    rates = sampling_schedule(cfg.schedule).rate(times)
    sampler = sampler_class(cfg.sampler)(cfg, rates, generator, sampler_params(cfg))
    passes = 0
    trace: list[TraceStep] = []

    def predict(rate: float) -> Tensor:
        """float64 log-probs [M, V] at the masked positions, in row-major order."""
        nonlocal passes
        passes += 1
        rate_batch = torch.full((ids.shape[0],), rate, dtype=torch.float32, device=ids.device)
        logits = model(ids, attention_mask=attention_mask, rate=rate_batch, output_mask=ids == MASK_ID)
        return token_log_probs(logits, cfg.temperature, cfg.top_p)

    def record(step: int) -> None:
        current = ids[0].tolist()
        entry = TraceStep(
            step, float(times[step]), current, current.count(MASK_ID), render_text(tokenizer, current)
        )
        trace.append(entry)
        if on_step is not None:
            on_step(entry)

    was_training = model.training
    model.eval()
    try:
        record(0)
        sampler.start(ids)
        for step in range(1, cfg.steps + 1):
            where = (ids == MASK_ID).nonzero(as_tuple=True)
            rate = float(rates[step - 1])  # time conditioning sees the rate of the sequence it is given
            sampler.update(step, ids, where, lambda rate=rate: predict(rate))
            record(step)
    finally:
        model.train(was_training)
    final = ids[0].tolist()
    return SampleResult(final, render_text(tokenizer, final), trace, passes, time.perf_counter() - started)


def sample_record(result: SampleResult, **fields) -> dict:
    """One samples.jsonl line for the TUI to replay; fields add context such as the training step."""
    return {
        **fields,
        "text": result.text,
        "tokens": result.tokens,
        "forward_passes": result.forward_passes,
        "seconds": result.seconds,
        "trace": [asdict(step) for step in result.trace],
    }


def append_sample(path, result: SampleResult, **fields) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(sample_record(result, **fields)) + "\n")
        f.flush()


def trace_to_jsonl(result: SampleResult, path_or_file) -> None:
    """One JSON object per step ({"step", "t", "masked", "tokens", "text"}), then {"final": true, ...}."""
    lines = [
        json.dumps({"step": s.step, "t": s.t, "masked": s.masked, "tokens": s.tokens, "text": s.text})
        for s in result.trace
    ]
    lines.append(
        json.dumps(
            {
                "final": True,
                "text": result.text,
                "tokens": result.tokens,
                "forward_passes": result.forward_passes,
                "seconds": result.seconds,
            }
        )
    )
    if isinstance(path_or_file, (str, Path)):
        with open(path_or_file, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    else:
        path_or_file.write("\n".join(lines) + "\n")
