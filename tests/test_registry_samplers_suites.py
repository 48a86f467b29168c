"""Samplers and suites are registries a user's module extends: this module, outside the package,
registers a sampler and a suite of its own and uses them in-process, as `sample` and `eval` would."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from core.config import Config, ModelConfig
from core.errors import UserError
from core.evaluate import evaluate, make_scorer
from core.model import MDLM
from core.registry import SAMPLERS
from core.sampling import (
    SampleConfig,
    Sampler,
    draw_tokens,
    register_sampler,
    sample,
)
from core.specials import BOS_ID, MASK_ID
from core.suites import SUITES, Item, Suite, SuiteKind, load_suite, register_suite, suite_names
from core.tokenizer import train_tokenizer

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "her sister"]
VERBS = ["sat on", "looked at", "ran past", "found"]
OBJECTS = ["the mat", "a red box", "the garden", "an apple"]


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    lines = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(200)]
    return train_tokenizer(lines, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    cfg = ModelConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        ffn_size=64,
        cond_dim=16,
        time_conditioning=False,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return MDLM(cfg, tokenizer.get_vocab_size())


# ---------------------------------------------------------------- a sampler of this module's own


@dataclasses.dataclass
class LeftToRightParams:
    per_step: int = 1  # positions unmasked each step; the last step fills whatever is left


class LeftToRight(Sampler):
    """Unmask the leftmost masked position(s) each step, drawing from p_theta."""

    name = "left-to-right"
    Params = LeftToRightParams

    def update(self, step, ids, where, predict):
        if not where[0].numel():
            return
        k = where[0].numel() if step == self.cfg.steps else min(self.params.per_step, where[0].numel())
        log_probs = predict()[:k]  # row-major order: the first rows are the leftmost positions
        ids[where[0][:k], where[1][:k]] = draw_tokens(log_probs, self.generator, self.greedy)


@pytest.fixture
def left_to_right():
    register_sampler(LeftToRight)
    yield LeftToRight
    SAMPLERS.unregister(LeftToRight.name)


def test_a_registered_sampler_samples_in_process(model, tokenizer, left_to_right):
    assert "left-to-right" in SAMPLERS.names()
    cfg = SampleConfig(length=10, steps=12, sampler="left-to-right", seed=3)
    result = sample(model, tokenizer, cfg)
    masked = [step.masked for step in result.trace]
    assert masked == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0]  # one position a step, then nothing left
    for before, after in zip(result.trace, result.trace[1:]):
        changed = [i for i, (a, b) in enumerate(zip(before.tokens, after.tokens)) if a != b]
        if changed:  # the leftmost masked position, and only it
            assert changed == [before.tokens.index(MASK_ID)]
    assert result.tokens[0] == BOS_ID and MASK_ID not in result.tokens
    assert result.forward_passes == 9
    assert sample(model, tokenizer, cfg).tokens == result.tokens  # seeded: the same again


def test_a_sampler_takes_its_own_parameters_and_refuses_others(model, tokenizer, left_to_right):
    cfg = SampleConfig(length=10, steps=4, sampler="left-to-right", sampler_params={"per_step": 3})
    assert [step.masked for step in sample(model, tokenizer, cfg).trace] == [9, 6, 3, 0, 0]
    with pytest.raises(UserError, match="no parameter beam_width; its parameters are per_step"):
        sample(model, tokenizer, dataclasses.replace(cfg, sampler_params={"beam_width": 2}))
    with pytest.raises(UserError, match="'ancestral' has no parameter per_step"):
        sample(model, tokenizer, dataclasses.replace(cfg, sampler="ancestral"))


def test_registering_a_sampler_name_twice_is_refused_in_one_sentence(left_to_right):
    class Again(LeftToRight):
        pass

    for cls in (Again, type("Ancestral", (Sampler,), {"name": "ancestral"})):
        with pytest.raises(UserError) as caught:
            register_sampler(cls)
        message = str(caught.value)
        assert "already registered" in message and message.count(". ") == 0 and message.endswith(".")


def test_an_unknown_sampler_lists_the_registered_ones(model, tokenizer, left_to_right):
    with pytest.raises(UserError) as caught:
        sample(model, tokenizer, SampleConfig(sampler="beam"))
    message = str(caught.value)
    assert "Unknown sampler 'beam'" in message
    assert all(name in message for name in ("ancestral", "confidence", "left-to-right"))
    assert "\n" not in message and message.count(". ") == 0


def test_the_builtin_samplers_are_registered_classes():
    assert SAMPLERS.names()[:2] == ("ancestral", "confidence")
    assert all(issubclass(cls, Sampler) for cls in SAMPLERS.registered().values())


# ---------------------------------------------------------------- a suite of this module's own

PAIRS = [
    ("the cat sat on the mat.", "the cat sat on mat the."),
    ("a dog found an apple.", "a dog an apple found."),
    ("my friend looked at the garden.", "my friend looked the at garden."),
]


def tiny_pairs(spec, request):
    items = [Item(uid="word_order", field="syntax", term=None, good=g, bad=b) for g, b in PAIRS]
    return Suite(name=spec, items=items, source="tests/test_registry_samplers_suites.py")


@pytest.fixture
def tiny_suite():
    register_suite("tiny-pairs", describe="three word-order pairs")(tiny_pairs)
    yield
    SUITES.unregister("tiny-pairs")


def test_a_registered_suite_loads_by_name_and_evaluates_in_process(model, tokenizer, tiny_suite):
    assert "tiny-pairs" in suite_names()
    tiny, builtin = load_suite("tiny-pairs,builtin", limit=2)
    assert tiny.name == "tiny-pairs" and len(tiny.items) == 2 and tiny.limit == 2
    assert builtin.name == "builtin"
    report = evaluate(make_scorer(model, tokenizer, Config(), "cpu"), tiny)
    assert report.suite == "tiny-pairs" and report.n == 2
    assert set(report.per_uid) == {"word_order"} and 0.0 <= report.macro <= 1.0


def test_a_suite_kind_class_registers_too(tiny_suite, tmp_path):
    class Doubled(SuiteKind):
        name = "doubled-pairs"

        @classmethod
        def load(cls, spec, request):
            return [tiny_pairs("first", request), tiny_pairs("second", request)]

    register_suite(Doubled)
    try:
        assert [suite.name for suite in load_suite("doubled-pairs")] == ["first", "second"]
    finally:
        SUITES.unregister("doubled-pairs")


def test_registering_a_suite_name_twice_is_refused_in_one_sentence(tiny_suite):
    for name in ("tiny-pairs", "blimp", "all"):
        with pytest.raises(UserError) as caught:
            register_suite(name)(tiny_pairs)
        message = str(caught.value)
        assert "already registered" in message and message.count(". ") == 0 and message.endswith(".")


def test_an_unknown_suite_lists_the_registered_ones(tiny_suite, tmp_path):
    with pytest.raises(UserError) as caught:
        load_suite(str(tmp_path / "nothing.jsonl"))
    message = str(caught.value)
    assert "Unknown suite" in message and "tiny-pairs" in message and "builtin" in message


def test_all_and_babylm_keep_to_the_pipeline_tasks(tiny_suite, tmp_path):
    (tmp_path / "blimp_filtered").mkdir()
    (tmp_path / "blimp_filtered" / "u.jsonl").write_text(
        '{"sentence_good": "the cat sat.", "sentence_bad": "the cat sit.", "UID": "u"}\n'
    )
    warnings: list[str] = []
    for spec in ("all", "babylm"):
        assert [s.name for s in load_suite(spec, str(tmp_path), warn=warnings.append)] == ["blimp"]
    assert len(warnings) == 1 and "no data for supplement" in warnings[0]


def test_the_cli_help_names_the_registries():
    from typer.testing import CliRunner

    from mdlm_tui.cli import app

    sample_help = CliRunner().invoke(app, ["sample", "--help"]).output
    eval_help = " ".join(CliRunner().invoke(app, ["eval", "--help"]).output.split())
    assert "ancestral | confidence" in sample_help
    assert all(name in eval_help for name in ("blimp", "wug_past", "reading", "babylm", "builtin"))
