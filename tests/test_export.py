"""`mdlm-tui export`: Hugging Face folders that transformers loads and that score like mdlm-tui.

Parity: the exported model's logits equal core.model's under the same time conditioning, padded or not,
and the BabyLM pipeline's `mlm` backend (re-implemented below from its description) run through
transformers gives mdlm-tui's own pseudo-log-likelihoods, item by item. Tests that need transformers
skip where it is not installed; the error cases run the real command.
"""

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.config import Config, ModelConfig, apply_overrides
from core.errors import UserError
from core.evaluate import load_for_eval, make_scorer
from core.export import check_exportable, write_folder
from core.model import MDLM
from core.scoring import realised_rate
from core.specials import BOS_ID, MASK_ID, PAD_ID
from core.suites import record_to_item
from core.tokenizer import load_tokenizer
from tests.helpers import error_line, mdlm

EXPECTED_FILES = {
    "config.json",
    "modeling_mdlm.py",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
}
# config variants: the released conventions, every ablation value at once, and no time conditioning
VARIANTS = {
    "released": [],
    "ablations": [
        "model.position_terms=mirrored",
        "model.ffn_gelu=exact",
        "model.layer_norm_eps=1e-5",
        "model.time_scale=1000",
        "model.position_buckets=8",
        "model.max_position=16",
        "eval.rate_value=realised",
    ],
    "no-time": ["model.time_conditioning=false", "objective.subs=false", "eval.rate_value=0.25"],
}
EWOK_ROWS = [
    {
        "Context1": "The cup is inside the box.",
        "Context2": "The box is inside the cup.",
        "Target1": "The box holds the cup.",
        "Target2": "The cup holds the box.",
        "Domain": "spatial-relations",
        "ContextType": "short",
        "ContextDiff": "x",
        "TargetDiff": "y",
    },
    {
        "Context1": "Ana is taller than Ben.",
        "Context2": "Ben is taller than Ana.",
        "Target1": "Ben is shorter than Ana.",
        "Target2": "Ana is shorter than Ben.",
        "Domain": "physical-relations",
        "ContextType": "short",
        "ContextDiff": "x",
        "TargetDiff": "y",
    },
    {
        "Context1": "The dog saw a cat, and it ran away.",
        "Context2": "The dog saw a cat.",
        "Target1": "The cat ran.",
        "Target2": "The dog ran.",
        "Domain": "agent-properties",
        "ContextType": "long",
        "ContextDiff": "x",
        "TargetDiff": "y",
    },
]
BLIMP_FILES = [
    "blimp_filtered/anaphor_number_agreement.jsonl",
    "blimp_filtered/determiner_noun_agreement_2.jsonl",
    "supplement_filtered/turn_taking.jsonl",
]  # the supplement's dialogues hold "\n"


@pytest.fixture(scope="session")
def hf(tmp_path_factory):
    """transformers, with the remote-code modules it copies kept out of the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        transformers = pytest.importorskip("transformers", reason="transformers is not installed")
        transformers.logging.set_verbosity_error()
        yield transformers


@pytest.fixture(scope="module")
def exported(finished_smoke_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "smoke-hf"
    result = mdlm("export", finished_smoke_run, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    return out


@pytest.fixture(scope="module")
def smoke_tokenizer(finished_smoke_run):
    return load_tokenizer(finished_smoke_run / "tokenizer.json")


def tiny(vocab_size: int, overrides: list[str]) -> tuple[Config, MDLM]:
    cfg = Config()
    cfg.data.vocab_size = vocab_size
    cfg = apply_overrides(
        cfg,
        [
            "model.hidden_size=32",
            "model.num_layers=2",
            "model.num_heads=4",
            "model.ffn_size=48",
            "model.cond_dim=16",
            "data.seq_len=16",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    model = MDLM(cfg.model, vocab_size)
    with (
        torch.no_grad()
    ):  # AdaLN-Zero and the output bias start at zero, which would hide the rate and the bias
        for block in model.blocks:
            if block.modulation is not None:
                block.modulation.weight.normal_(std=0.2)
        model.output_bias.normal_(std=0.5)
    return cfg, model.eval()


def random_batch(vocab_size: int, lengths: list[int], width: int):
    """<s>, maskable ids and one [MASK] a row, right-padded to width; also the clean ids of each row."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.randint(16, vocab_size, (len(lengths), width), generator=generator)
    clean[:, 0] = BOS_ID
    ids, attention = clean.clone(), torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 1 + row] = MASK_ID
        ids[row, length:] = PAD_ID
        attention[row, :length] = 1
    return ids, attention, clean


def core_rate(cfg: Config, clean: torch.Tensor, lengths: list[int]) -> torch.Tensor | None:
    """The rate core.scoring conditions a row on: eval.rate_value, or 1 / maskable tokens of the clean row."""
    if not cfg.model.time_conditioning:
        return None
    if cfg.eval.rate_value == "realised":
        return torch.tensor([realised_rate(clean[row, :n].tolist()) for row, n in enumerate(lengths)])
    return torch.full((len(lengths),), float(cfg.eval.rate_value))


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_equal_core_model(hf, smoke_tokenizer, tmp_path, variant, padded):
    vocab = smoke_tokenizer.get_vocab_size()
    cfg, model = tiny(vocab, VARIANTS[variant])
    write_folder(tmp_path, model, smoke_tokenizer, cfg, {})
    exported, info = hf.AutoModelForMaskedLM.from_pretrained(
        tmp_path, trust_remote_code=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    lengths = [24, 15, 6] if padded else [24, 24, 24]
    ids, attention, clean = random_batch(vocab, lengths, 24)
    with torch.no_grad():
        got = exported(input_ids=ids, attention_mask=attention).logits
        want = model(ids, attention_mask=attention, rate=core_rate(cfg, clean, lengths))
    assert got.shape == (3, 24, vocab)
    other = torch.arange(vocab) != MASK_ID
    for row, n in enumerate(lengths):
        torch.testing.assert_close(got[row, :n][:, other], want[row, :n][:, other], rtol=0, atol=1e-5)
        rate = core_rate(cfg, clean, lengths)
        with torch.no_grad():  # each row alone, without padding: the pads change nothing
            alone = model(ids[row : row + 1, :n], rate=None if rate is None else rate[row : row + 1])
        torch.testing.assert_close(got[row, :n][:, other], alone[0][:, other], rtol=0, atol=1e-5)
    masked_column = got[..., MASK_ID][attention.bool()]
    if cfg.objective.subs:  # the run never predicts [MASK]: its logit is out of any softmax
        assert (masked_column == torch.finfo(got.dtype).min).all()
    else:
        torch.testing.assert_close(masked_column, want[..., MASK_ID][attention.bool()], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the pipeline's mlm backend


def pipeline_items(shared_data: Path) -> list[dict]:
    """Items as the pipeline reads them: the sentences and the completion whose tokens are scored
    (BLiMP: the whole sentence; EWoK: " " + target after Context1)."""
    items = []
    for name in BLIMP_FILES:
        lines = (shared_data / "evaluation_data" / "full_eval" / name).read_text().splitlines()[:2]
        for record in map(json.loads, lines):
            good, bad = record["sentence_good"], record["sentence_bad"]
            items.append({"record": record, "sentences": [good, bad], "completions": [good, bad]})
    for record in EWOK_ROWS:
        sentences = [f"{record['Context1']} {record['Target1']}", f"{record['Context1']} {record['Target2']}"]
        items.append(
            {
                "record": record,
                "sentences": sentences,
                "completions": [f" {record['Target1']}", f" {record['Target2']}"],
            }
        )
    return items


def pipeline_mlm_scores(model, tokenizer, items: list[dict]) -> list[float]:
    """The pipeline's mlm backend: tokenise each sentence with offsets (special tokens added); every
    token whose span ends past the completion's first character is scored, by masking it alone and
    taking the log-softmax of the logits at its position; a sentence's score is the sum. Rows of all
    items are right-padded into one batch, as its collate function does."""
    rows, owners, slots, targets = [], [], [], []
    sentences = [(s, c) for item in items for s, c in zip(item["sentences"], item["completions"])]
    for owner, (sentence, completion) in enumerate(sentences):
        encoded = tokenizer(text=sentence, return_offsets_mapping=True)
        start = len(sentence) - len(completion)
        for position, (_, end) in enumerate(encoded["offset_mapping"]):
            if end > start:
                row = list(encoded["input_ids"])
                row[position] = tokenizer.mask_token_id
                rows.append(torch.tensor(row))
                owners.append(owner)
                slots.append(position)
                targets.append(encoded["input_ids"][position])
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)
    attention = torch.nn.utils.rnn.pad_sequence(
        [torch.ones_like(r) for r in rows], batch_first=True, padding_value=0
    )
    assert (attention == 0).any(), "the batch should exercise padding"
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits
    log_probs = torch.log_softmax(logits[torch.arange(len(rows)), torch.tensor(slots)], dim=-1)
    picked = log_probs.gather(-1, torch.tensor(targets)[:, None])[:, 0].double()
    return (
        torch.zeros(len(sentences), dtype=torch.float64).index_add_(0, torch.tensor(owners), picked).tolist()
    )


def mdlm_scores(model, tokenizer, cfg: Config, items: list[dict]) -> list[float]:
    parsed = [record_to_item(item["record"], "uid") for item in items]
    texts = [text for item in parsed for text in (item.good, item.bad)]
    contexts = [item.context for item in parsed for _ in range(2)]
    return make_scorer(model, tokenizer, cfg, "cpu").score_texts(texts, contexts)


def check_scores_agree(hf, folder: Path, model, tokenizer, cfg: Config, shared_data: Path) -> None:
    exported = hf.AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
    # as the pipeline loads its tokenizer
    hf_tokenizer = hf.AutoProcessor.from_pretrained(
        folder, padding_side="right", revision=None, trust_remote_code=True
    )
    items = pipeline_items(shared_data)
    theirs = pipeline_mlm_scores(exported, hf_tokenizer, items)
    ours = mdlm_scores(model, tokenizer, cfg, items)
    assert len(theirs) == len(ours) == 2 * len(items)
    assert theirs == pytest.approx(ours, rel=0, abs=2e-5)  # sums of ~20 float32 log-probabilities


def test_pipeline_mlm_scores_equal_mdlm_scoring(hf, exported, finished_smoke_run, shared_data):
    model, tokenizer, cfg, _ = load_for_eval(str(finished_smoke_run), weights="ema", device="cpu")
    check_scores_agree(hf, exported, model, tokenizer, cfg, shared_data)


def test_pipeline_mlm_scores_at_the_realised_rate(hf, smoke_tokenizer, tmp_path, shared_data):
    # stretched time features: rates 1/8 and 1/9 then condition the model far apart
    cfg, model = tiny(smoke_tokenizer.get_vocab_size(), ["eval.rate_value=realised", "model.time_scale=1000"])
    write_folder(tmp_path, model, smoke_tokenizer, cfg, {})
    check_scores_agree(hf, tmp_path, model, smoke_tokenizer, cfg, shared_data)


# ---------------------------------------------------------------- the folder


def test_folder_holds_a_self_contained_model(exported, finished_smoke_run):
    assert {p.name for p in exported.iterdir()} == EXPECTED_FILES
    config = json.loads((exported / "config.json").read_text())
    assert set(config["auto_map"]) >= {
        "AutoConfig",
        "AutoModelForMaskedLM",
        "AutoModelForSequenceClassification",
    }
    assert config["mdlm_tui"] == {"run": "smoke", "checkpoint": "step-8", "step": 8, "weights": "ema"}
    tree = ast.parse((exported / "modeling_mdlm.py").read_text())
    nodes = list(ast.walk(tree))
    imported = {
        alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {node.module.split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "math", "typing", "torch", "transformers"}
    ema = load_file(str(finished_smoke_run / "checkpoints" / "step-8" / "ema.safetensors"))
    weights = load_file(str(exported / "model.safetensors"))
    torch.testing.assert_close(
        weights["mdlm.word_embedding.weight"], ema["word_embedding.weight"], rtol=0, atol=0
    )


def test_tokenizer_prepends_bos_like_training(hf, exported, smoke_tokenizer):
    tokenizer = hf.AutoTokenizer.from_pretrained(exported)
    text = "The children were in the field."
    assert (
        tokenizer(text)["input_ids"] == [BOS_ID] + smoke_tokenizer.encode(text, add_special_tokens=False).ids
    )
    assert (tokenizer.mask_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) == (
        MASK_ID,
        PAD_ID,
        BOS_ID,
    )
    assert tokenizer.model_max_length == 512


def test_sequence_classification_reads_the_first_position(hf, exported):
    load = dict(trust_remote_code=True)
    classifier = hf.AutoModelForSequenceClassification.from_pretrained(exported, num_labels=3, **load)
    encoder = hf.AutoModel.from_pretrained(exported, **load).eval()
    torch.testing.assert_close(
        classifier.mdlm.word_embedding.weight, encoder.word_embedding.weight, rtol=0, atol=0
    )
    # the new head starts as LTG-BERT's init: truncated normal, std sqrt(2 / (5 D)), cut at 2 std
    std = (2 / (5 * classifier.config.hidden_size)) ** 0.5
    head = classifier.classifier[-1].weight.detach()
    assert 0 < head.abs().max() <= 2 * std + 1e-6 and float(head.std()) == pytest.approx(0.88 * std, rel=0.2)
    ids = torch.tensor([[BOS_ID, 300, 301, 302], [BOS_ID, 400, 401, PAD_ID]])
    attention = (ids != PAD_ID).long()
    classifier.eval()
    with torch.no_grad():
        logits = classifier(input_ids=ids, attention_mask=attention).logits
        first = encoder(input_ids=ids, attention_mask=attention).last_hidden_state[:, 0]
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, classifier.classifier(first), rtol=0, atol=1e-6)
    classifier.train()
    out = classifier(input_ids=ids, attention_mask=attention, labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and classifier.classifier[-1].weight.grad is not None


def test_milestones_one_folder_each(finished_smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_smoke_run, run)
    for step, name in ((4, "chck_1M"), (8, "chck_2M")):  # milestone folders are whole checkpoints
        shutil.copytree(run / "checkpoints" / f"step-{step}", run / "checkpoints" / name)
    out = tmp_path / "hub"
    result = mdlm("export", run, out, "--milestones")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["chck_1M", "chck_2M", "main"]
    for name, step in (("main", 8), ("chck_1M", 4), ("chck_2M", 8)):
        assert {p.name for p in (out / name).iterdir()} == EXPECTED_FILES
        ema = load_file(str(run / "checkpoints" / f"step-{step}" / "ema.safetensors"))
        weights = load_file(str(out / name / "model.safetensors"))
        torch.testing.assert_close(weights["head_proj.weight"], ema["head_proj.weight"], rtol=0, atol=0)
    assert json.loads((out / "chck_1M" / "config.json").read_text())["mdlm_tui"]["checkpoint"] == "chck_1M"


# ---------------------------------------------------------------- refusals


def test_unimplemented_configs_are_refused():
    model_cfg = ModelConfig()
    model_cfg.ffn_gelu = "relu"
    with pytest.raises(UserError, match="model.ffn_gelu=relu is not implemented"):
        check_exportable(model_cfg)

    @dataclasses.dataclass
    class Newer(ModelConfig):
        rotary: bool = True

    with pytest.raises(UserError, match="model.rotary=True is not implemented"):
        check_exportable(Newer())
    check_exportable(ModelConfig())  # every released value and every ablation is implemented


@pytest.fixture(scope="module")
def broken_run(finished_smoke_run, tmp_path_factory) -> Path:
    """A copy whose step-4 weights are cut short and whose step-8 kept no EMA weights."""
    run = tmp_path_factory.mktemp("broken") / "run"
    shutil.copytree(finished_smoke_run, run)
    weights = run / "checkpoints" / "step-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    step8 = run / "checkpoints" / "step-8"
    (step8 / "ema.safetensors").unlink()
    meta = json.loads((step8 / "meta.json").read_text())
    for table in ("sizes", "sha256"):
        meta[table].pop("ema.safetensors")
    (step8 / "meta.json").write_text(json.dumps(meta))
    return run


@pytest.mark.parametrize(
    "case", ["missing run", "damaged checkpoint", "no EMA", "no milestones", "bad weights"]
)
def test_bad_input_is_one_sentence_and_writes_nothing(broken_run, tmp_path, case):
    args, expected = {
        "missing run": ([tmp_path / "nowhere"], "does not exist"),
        "damaged checkpoint": ([broken_run / "checkpoints" / "step-4"], "step-4"),
        "no EMA": ([broken_run], "--weights raw"),
        "no milestones": ([broken_run, "--milestones"], "no milestone checkpoints"),
        "bad weights": ([broken_run, "--weights", "best"], "'ema' or 'raw'"),
    }[case]
    out = tmp_path / "out"
    line = error_line(mdlm("export", args[0], out, *args[1:]))
    assert expected in line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left beside OUT


def test_raw_weights_where_there_is_no_ema(broken_run, tmp_path):
    result = mdlm("export", broken_run, tmp_path / "out", "--weights", "raw")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "config.json").read_text())["mdlm_tui"]["weights"] == "raw"


def test_a_non_empty_out_is_left_alone(finished_smoke_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "not empty" in error_line(mdlm("export", finished_smoke_run, out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_full_disk_is_one_sentence_and_leaves_nothing(finished_smoke_run, tmpfs):
    full = tmpfs("200k")  # room for the small files, not for the weights
    line = error_line(mdlm("export", finished_smoke_run, full / "out"))
    assert "No space left on device" in line and "nothing was written there" in line
    assert list(full.iterdir()) == []
