import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.checkpoint import save_checkpoint
from core.config import Config, to_yaml
from core.dataset import chunk_documents
from core.errors import UserError
from core.evaluate import EvalReport, dev_nelbo, evaluate, load_for_eval, pair_credit
from core.model import MDLM
from core.optim import EMA
from core.schedules import Linear, LogLinear
from core.scoring import NELBOScorer, PLLScorer, encode_for_scoring, naive_pll
from core.specials import NUM_SPECIAL
from core.suites import Item, Suite, builtin_suite
from core.tokenizer import encode_documents, train_tokenizer

VOCAB = 400
SENTENCES = [
    "The king is in the city.",
    "Where did you put it?",
    "a",
    "I like the green one very much, do you?",
    "The children were in the field.",
    "no <mask> here",
]
CONTEXTS = [None, "Mommy said", None, "He asked", "", "The cup is inside the box."]


def tiny_config(vocab_size: int = VOCAB) -> Config:
    cfg = Config()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads = 32, 2, 2
    cfg.model.ffn_size, cfg.model.cond_dim = 64, 16
    cfg.data.vocab_size, cfg.data.seq_len = vocab_size, 32
    cfg.train.micro_batch = 4
    return cfg


def corpus() -> list[str]:
    suite = builtin_suite()
    return [item.good for item in suite.items] + [item.bad for item in suite.items] + SENTENCES


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(), VOCAB)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = MDLM(tiny_config().model, VOCAB)
    # AdaLN-Zero starts at zero, which would hide the rate; give it weight so the rate is tested too.
    with torch.no_grad():
        for block in net.blocks:
            block.modulation.weight.normal_(std=0.2)
    return net.eval()


class ConstantLogits(torch.nn.Module):
    """A model that cannot tell any two sentences of the same length apart."""

    def __init__(self, vocab_size: int = VOCAB):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, input_ids, attention_mask=None, rate=None, output_mask=None):
        rows = int(output_mask.sum()) if output_mask is not None else input_ids.numel()
        return torch.zeros(rows, self.vocab_size)


class FixedScores:
    backend = "fixed"

    def __init__(self, table: dict[str, float] | None = None):
        self.table = table or {}

    def score_texts(self, texts, contexts=None):
        return [self.table.get(text, 0.0) for text in texts]


# ---------------------------------------------------------------- fast PLL == naive PLL


@pytest.mark.parametrize("rate_value", [0.0, 0.5, "realised"])
def test_fast_pll_equals_the_naive_reference(model, tokenizer, rate_value):
    # a small batch budget forces several batches per length and rows of one sentence across batches
    scorer = PLLScorer(model, tokenizer, "cpu", batch_tokens=40, rate_value=rate_value)
    fast = scorer.score_texts(SENTENCES, CONTEXTS)
    naive = [
        naive_pll(model, tokenizer, text, "cpu", rate_value, context=context)
        for text, context in zip(SENTENCES, CONTEXTS)
    ]
    assert (
        len({len(s.ids) for s in encode_for_scoring(tokenizer, SENTENCES, CONTEXTS)}) >= 4
    )  # several lengths
    assert all(score < 0 for score in fast)
    assert fast == pytest.approx(naive, abs=1e-5, rel=0)


def test_rate_value_changes_the_score(model, tokenizer):
    zero = PLLScorer(model, tokenizer, "cpu", rate_value=0.0).score_texts(SENTENCES[:2])
    realised = PLLScorer(model, tokenizer, "cpu", rate_value="realised").score_texts(SENTENCES[:2])
    assert all(abs(a - b) > 1e-4 for a, b in zip(zero, realised))
    with pytest.raises(ValueError):
        PLLScorer(model, tokenizer, "cpu", rate_value="half")


def test_scores_do_not_depend_on_batching_or_company(model, tokenizer):
    big = PLLScorer(model, tokenizer, "cpu", batch_tokens=8192).score_texts(SENTENCES, CONTEXTS)
    alone = [
        PLLScorer(model, tokenizer, "cpu", batch_tokens=1).score_texts([t], [c])[0]
        for t, c in zip(SENTENCES, CONTEXTS)
    ]
    assert big == pytest.approx(alone, abs=1e-5, rel=0)
    assert model.training is False


def test_only_target_tokens_are_scored_and_specials_never(tokenizer):
    [plain, with_context, special_text] = encode_for_scoring(
        tokenizer,
        ["The cup is smaller.", "The cup is smaller.", "<mask> <s>"],
        [None, "The cup is inside.", None],
    )
    target = tokenizer.encode(" The cup is smaller.", add_special_tokens=False).ids
    assert with_context.ids[-len(target) :] == target
    assert with_context.scored_positions() == list(
        range(len(with_context.ids) - len(target), len(with_context.ids))
    )
    assert plain.scored_positions() == list(range(1, len(plain.ids)))  # everything but <s>
    assert all(i >= NUM_SPECIAL for i in special_text.ids[1:])  # "<mask>" in a sentence is text
    # joining context and target as one text tokenises the same way
    joined = tokenizer.encode("The cup is inside. The cup is smaller.", add_special_tokens=False).ids
    assert with_context.ids[1:] == joined


def test_context_is_visible_but_not_scored(model, tokenizer):
    scorer = PLLScorer(model, tokenizer, "cpu")
    a, b = scorer.score_texts(
        ["The cup is smaller."] * 2, ["The cup is inside the box.", "The box is inside the cup."]
    )
    assert a != b  # the context conditions the target
    n_target = len(tokenizer.encode(" The cup is smaller.", add_special_tokens=False).ids)
    constant = PLLScorer(ConstantLogits(), tokenizer, "cpu").score_texts(
        ["The cup is smaller."], ["The cup is inside the box."]
    )[0]
    assert constant == pytest.approx(-n_target * math.log(VOCAB - 1))  # SUBS: [MASK] leaves the softmax


# ---------------------------------------------------------------- accuracy


def test_a_model_that_cannot_tell_pairs_apart_scores_exactly_half(tokenizer):
    suite = builtin_suite()
    assert evaluate(FixedScores(), suite).macro == 0.5
    # the real scorer on a constant model: pairs whose two sides have equal token counts tie exactly
    same_length = [
        i for i in suite.items if len(tokenizer.encode(i.good).ids) == len(tokenizer.encode(i.bad).ids)
    ][:40]
    report = evaluate(PLLScorer(ConstantLogits(), tokenizer, "cpu"), Suite("ties", same_length, "test"))
    assert report.macro == 0.5 and all(r["accuracy"] == 0.5 for r in report.per_uid.values())


def test_ties_count_half():
    items = [
        Item("u", "syntax", "t", "win", "lose"),
        Item("u", "syntax", "t", "same", "same too"),
        Item("u", "syntax", "t", "lose", "win"),
        Item("v", "semantics", None, "win", "lose"),
    ]
    report = evaluate(
        FixedScores({"win": 1.0, "lose": -1.0, "same": 0.5, "same too": 0.5}), Suite("s", items, "test")
    )
    assert report.per_uid["u"] == {"accuracy": 0.5, "n": 3, "field": "syntax", "term": "t"}
    assert report.per_uid["v"]["accuracy"] == 1.0
    assert report.macro == 0.75 and report.n == 4
    assert report.per_field == {"semantics": 1.0, "syntax": 0.5}
    assert report.to_dict()["backend"] == "fixed"


def test_scores_equal_to_float_precision_are_ties():
    assert pair_credit(-88.04566764831543, -88.04566669464111) == 0.5  # 1e-8 apart: rounding, not preference
    assert pair_credit(-88.0, -88.01) == 1.0 and pair_credit(-0.0001, 0.0) == 0.0


def test_swapping_good_and_bad_gives_one_minus_accuracy(model, tokenizer):
    suite = builtin_suite()
    suite.items = suite.items[::6]
    swapped = Suite("swapped", [Item(i.uid, i.field, i.term, i.bad, i.good) for i in suite.items], "test")
    scorer = PLLScorer(model, tokenizer, "cpu")
    progress = []
    a = evaluate(scorer, suite, progress=lambda done, total: progress.append((done, total)), checkpoint="x")
    b = evaluate(scorer, swapped)
    assert progress[-1] == (len(suite.items), len(suite.items))
    assert 0 < a.macro < 1 and a.checkpoint == "x" and a.backend == "pll"
    assert b.macro == pytest.approx(1 - a.macro, abs=1e-12)
    for uid, result in a.per_uid.items():
        assert b.per_uid[uid]["accuracy"] == pytest.approx(1 - result["accuracy"], abs=1e-12)


def test_report_serialises(model, tokenizer):
    import json

    report = evaluate(FixedScores(), builtin_suite())
    assert isinstance(report, EvalReport)
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {
        "suite",
        "per_uid",
        "per_field",
        "macro",
        "n",
        "seconds",
        "backend",
        "checkpoint",
        "skipped",
        "limit",
        "weights",
        "rate_value",
        "draws",
        "metric",
        "step",
        "time",
        "credits",
    }
    assert data["per_field"] == {"morphology": 0.5}
    # each item's credit, per UID in the suite's order, averaging to the UID's accuracy
    for uid, result in data["per_uid"].items():
        assert sum(data["credits"][uid]) / len(data["credits"][uid]) == pytest.approx(result["accuracy"])


# ---------------------------------------------------------------- NELBO backend


def test_nelbo_scorer_is_deterministic_and_batch_independent(model, tokenizer):
    scorer = NELBOScorer(model, tokenizer, "cpu", LogLinear(), draws=8, seed=3)
    together = scorer.score_texts(SENTENCES, CONTEXTS)
    alone = [
        NELBOScorer(model, tokenizer, "cpu", LogLinear(), draws=8, seed=3, batch_tokens=1).score_texts(
            [t], [c]
        )[0]
        for t, c in zip(SENTENCES, CONTEXTS)
    ]
    assert together == pytest.approx(alone, abs=1e-5, rel=0)
    assert all(score <= 0 for score in together)
    other_seed = NELBOScorer(model, tokenizer, "cpu", LogLinear(), draws=8, seed=4).score_texts(
        SENTENCES, CONTEXTS
    )
    assert other_seed != together


def test_nelbo_of_a_uniform_model_is_near_the_exact_bound(tokenizer):
    # With uniform predictions every masked token costs log(V - 1) and E[w * #masked] = n, so the
    # NELBO is n log(V - 1); many stratified draws pin the estimate close to it.
    text = "I like the green one very much, do you?"
    n = len(tokenizer.encode(text).ids)
    score = NELBOScorer(ConstantLogits(), tokenizer, "cpu", Linear(), draws=2000).score_texts([text])[0]
    assert score == pytest.approx(-n * math.log(VOCAB - 1), rel=0.05)


def test_nelbo_scorer_masks_only_the_target(tokenizer):
    n_target = len(tokenizer.encode(" The cup is smaller.").ids)
    score = NELBOScorer(ConstantLogits(), tokenizer, "cpu", Linear(), draws=2000).score_texts(
        ["The cup is smaller."], ["The cup is inside the box and very much so."]
    )[0]
    assert score == pytest.approx(-n_target * math.log(VOCAB - 1), rel=0.1)


def test_evaluate_with_the_nelbo_backend(model, tokenizer):
    suite = builtin_suite()
    suite.items = suite.items[::20]
    report = evaluate(NELBOScorer(model, tokenizer, "cpu", LogLinear(), draws=4), suite)
    assert report.backend == "nelbo" and 0 <= report.macro <= 1 and report.n == len(suite.items)


# ---------------------------------------------------------------- dev NELBO


def dev_data(tokenizer, cfg):
    ids, lengths = encode_documents(tokenizer, corpus()[:60])
    return SimpleNamespace(dev=chunk_documents(ids, lengths, cfg.data.seq_len))


def test_dev_nelbo_is_reproducible_and_bounds_perplexity(model, tokenizer):
    cfg = tiny_config()
    data = dev_data(tokenizer, cfg)
    first = dev_nelbo(model, data, cfg, "cpu", batches=3, seed=1)
    again = dev_nelbo(model, data, cfg, "cpu", batches=3, seed=1)
    assert first == again
    assert first["dev_sequences"] == 12 and first["dev_tokens"] > 0
    assert first["dev_ppl_bound"] == pytest.approx(math.exp(first["dev_nelbo_per_token"]))
    assert dev_nelbo(model, data, cfg, "cpu", batches=3, seed=2) != first
    # an untrained model is near uniform: its bound is near the vocabulary size
    assert 0.3 * VOCAB < first["dev_ppl_bound"] < 3 * VOCAB


def test_dev_nelbo_of_an_empty_dev_split_is_a_user_error(model):
    with pytest.raises(UserError, match="dev split is empty"):
        dev_nelbo(model, SimpleNamespace(dev=np.zeros((0, 32), dtype=np.int32)), tiny_config(), "cpu")


# ---------------------------------------------------------------- loading checkpoints


def write_run(root, tokenizer, model_vocab: int = VOCAB, config_vocab: int | None = None, ema: bool = True):
    """A run folder as the trainer leaves it, with one checkpoint whose EMA differs from the raw weights."""
    cfg = tiny_config(model_vocab)
    torch.manual_seed(1)
    net = MDLM(cfg.model, model_vocab)
    average = EMA(net, 0.9) if ema else None
    if average is not None:
        for shadow in average.shadow.values():
            shadow.add_(0.5)
    root.mkdir(parents=True)
    cfg.data.vocab_size = config_vocab or model_vocab
    (root / "config.yaml").write_text(to_yaml(cfg))
    tokenizer.save(str(root / "tokenizer.json"))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    save_checkpoint(
        root / "checkpoints",
        7,
        net,
        average.state_dict() if average else None,
        optimizer,
        {"step": 7},
        keep=2,
    )
    return net


def test_load_for_eval_from_a_run_or_a_checkpoint_with_either_weights(tmp_path, tokenizer):
    raw = write_run(tmp_path / "run", tokenizer)
    model, tok, cfg, ckpt = load_for_eval(str(tmp_path / "run"), weights="raw")
    assert ckpt == tmp_path / "run" / "checkpoints" / "step-7" and not model.training
    assert torch.equal(model.head_proj.weight, raw.head_proj.weight)
    assert tok.get_vocab_size() == tokenizer.get_vocab_size() and cfg.model.hidden_size == 32
    ema_model, *_ = load_for_eval(str(ckpt), weights="ema")
    assert torch.allclose(ema_model.head_proj.weight, raw.head_proj.weight + 0.5)
    PLLScorer(ema_model, tok, "cpu").score_texts(["The king is here."])


def test_a_run_without_ema_falls_back_to_raw_weights_with_a_warning(tmp_path, tokenizer):
    raw = write_run(tmp_path / "run", tokenizer, ema=False)
    warnings = []
    model, *_ = load_for_eval(str(tmp_path / "run"), warn=warnings.append)
    assert torch.equal(model.head_proj.weight, raw.head_proj.weight)
    assert "no EMA weights" in warnings[0]


def test_checkpoint_from_another_vocab_is_a_user_error(tmp_path, tokenizer):
    write_run(tmp_path / "run", tokenizer, model_vocab=512, config_vocab=VOCAB)
    with pytest.raises(UserError, match="vocabulary of 512 ids .* data.vocab_size 400") as caught:
        load_for_eval(str(tmp_path / "run"))
    assert "\n" not in str(caught.value)


def test_tokenizer_from_another_run_is_a_user_error(tmp_path, tokenizer):
    write_run(tmp_path / "run", tokenizer)
    train_tokenizer(corpus() * 3 + [f"word{i} thing{i}" for i in range(400)], 700).save(
        str(tmp_path / "run" / "tokenizer.json")
    )
    with pytest.raises(UserError, match="tokenizer belongs to another run"):
        load_for_eval(str(tmp_path / "run"))


def test_bad_targets_are_user_errors(tmp_path, tokenizer):
    with pytest.raises(UserError, match="does not exist"):
        load_for_eval(str(tmp_path / "nowhere"))
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.yaml").write_text(to_yaml(tiny_config()))
    with pytest.raises(UserError, match="no checkpoint yet"):
        load_for_eval(str(tmp_path / "empty_run"))
    with pytest.raises(UserError, match="neither a run folder"):
        load_for_eval(str(tmp_path))
    write_run(tmp_path / "run", tokenizer)
    with pytest.raises(UserError, match="weights must be"):
        load_for_eval(str(tmp_path / "run"), weights="best")
    weights = tmp_path / "run" / "checkpoints" / "step-7" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="step-7"):
        load_for_eval(str(tmp_path / "run"))
