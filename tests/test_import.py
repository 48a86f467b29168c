"""`mdlm-tui import`: the paper's released checkpoints become runs that eval and sample open.

The released folders here are written as the released code writes them (its `Bert` state-dict names
and shapes, spelled out below rather than derived from core.released, and torch.save), with random
weights: a real checkpoint is hundreds of megabytes.
"""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, processors

from core.released import to_released
from core.runs import RunDir
from core.tokenizer import train_tokenizer
from tests.helpers import mdlm

TIED = "classifier.nonlinearity.5.weight"
HIDDEN, LAYERS, HEADS, FFN, COND, MAX_POSITION, BUCKETS = 16, 2, 2, 32, 8, 512, 32
WORDS = "the king servant city house river went came saw blessed gold bread people were was is are".split()


def released_tokenizer() -> str:
    """A tiny BPE written like the released tokenizer: reserved ids named <special_i>, and a
    post-processor that prepends <s>."""
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(400)]
    tok = train_tokenizer(lines, 300)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    data = json.loads(tok.to_str())
    for entry in data["added_tokens"]:
        if entry["id"] >= 5:
            old, entry["content"] = entry["content"], f"<special_{entry['id'] - 5}>"
            data["model"]["vocab"][entry["content"]] = data["model"]["vocab"].pop(old)
    return json.dumps(data)


def released_state(vocab: int, cond_dim: int | None, seed: int) -> dict[str, torch.Tensor]:
    """The released `Bert`'s state dict, in its module order, with random weights."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    D, F = HIDDEN, FFN
    state = {
        "embedding.word_embedding.weight": r(vocab, D),
        "embedding.relative_embedding": r(2 * BUCKETS - 1, D),
        "embedding.relative_layer_norm.weight": r(D),
        "embedding.relative_layer_norm.bias": r(D),
    }
    positions = torch.randint(0, 2 * BUCKETS - 1, (MAX_POSITION, MAX_POSITION), generator=g)
    for i in range(LAYERS):
        layer = f"transformer.attention_layers.{i}."
        state.update(
            {
                layer + "in_proj_qk.weight": r(2 * D, D),
                layer + "in_proj_qk.bias": r(2 * D),
                layer + "in_proj_vg.weight": r(2 * D, D),
                layer + "in_proj_vg.bias": r(2 * D),
                layer + "out_proj.weight": r(D, D),
                layer + "out_proj.bias": r(D),
                layer + "position_indices": positions.clone(),
            }
        )
    for i in range(LAYERS):
        state[f"transformer.mlp_layers.{i}.mlp.1.weight"] = r(2 * F, D)
        state[f"transformer.mlp_layers.{i}.mlp.4.weight"] = r(D, F)
    if cond_dim is not None:
        for i in range(LAYERS):
            state[f"transformer.adaLN_modulations.{i}.weight"] = r(6 * D, cond_dim)
            state[f"transformer.adaLN_modulations.{i}.bias"] = r(6 * D)
    state.update(
        {
            "classifier.nonlinearity.1.weight": r(D, D),
            "classifier.nonlinearity.1.bias": r(D),
            # tied: the very tensor of the word embedding, as torch.save stores a shared parameter
            "classifier.nonlinearity.5.weight": state["embedding.word_embedding.weight"],
            "classifier.nonlinearity.5.bias": r(vocab),
        }
    )
    if cond_dim is not None:
        state.update(
            {
                "sigma_map.mlp.0.weight": r(cond_dim, 256),
                "sigma_map.mlp.0.bias": r(cond_dim),
                "sigma_map.mlp.2.weight": r(cond_dim, cond_dim),
                "sigma_map.mlp.2.bias": r(cond_dim),
            }
        )
    return state


def released_config(vocab: int, cond_dim: int | None = COND) -> dict:
    return {
        "attention_probs_dropout_prob": 0.1,
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "max_position_embeddings": MAX_POSITION,
        "position_bucket_size": BUCKETS,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-7,
        "cond_dim": cond_dim,
    }


def write_released(root: Path) -> tuple[Path, dict, dict]:
    """root/config.json, root/tokenizer.json and root/step_120/ as the released training writes them;
    returns the step folder and its raw and EMA state dicts."""
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = released_tokenizer()
    (root / "tokenizer.json").write_text(tokenizer)
    vocab = Tokenizer.from_str(tokenizer).get_vocab_size()
    (root / "config.json").write_text(json.dumps(released_config(vocab)))
    step = root / "step_120"
    step.mkdir()
    raw, ema = released_state(vocab, COND, seed=1), released_state(vocab, COND, seed=2)
    torch.save(raw, step / "pytorch_model.bin")
    torch.save(ema, step / "pytorch_model_ema.bin")
    torch.save({"model": raw, "global_step": 120}, step / "training_checkpoint.pt")
    return step, raw, ema


def assert_one_sentence(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_released_equal(ours: dict, released: dict) -> None:
    """Our state dict, mapped back, is the released one tensor for tensor (the derived position
    buffers aside; the tied output matrix is the word embedding, whether the file kept it or not)."""
    back = to_released(ours, LAYERS)
    released = {**released, TIED: released["embedding.word_embedding.weight"]}
    assert set(back) == {k for k in released if not k.endswith(".position_indices")}
    for name, tensor in back.items():
        assert torch.equal(tensor, released[name]), name


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return write_released(tmp_path_factory.mktemp("released") / "cosine")


@pytest.fixture(scope="module")
def imported(released, tmp_path_factory):
    step, _, _ = released
    run_dir = tmp_path_factory.mktemp("runs") / "cosine"
    result = mdlm("import", step, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert "step 120" in result.stdout and "pytorch_model_ema.bin" in result.stdout
    return run_dir


def test_import_writes_a_finished_run_with_the_released_weights(released, imported):
    _, raw, ema = released
    run = RunDir(imported)
    assert run.read_status()["state"] == "finished" and run.read_status()["step"] == 120
    assert sorted(p.name for p in imported.iterdir() if not p.name.startswith(".")) == [
        "checkpoints",
        "config.yaml",
        "eval",
        "imported.json",
        "status.json",
        "tokenizer.json",
    ]
    ckpt = imported / "checkpoints" / "step-120"
    assert_released_equal(load_file(ckpt / "model.safetensors"), raw)
    assert_released_equal(load_file(ckpt / "ema.safetensors"), ema)
    assert not list(imported.parent.glob(".*.tmp")), "the temporary folder is gone"


def test_imported_config_maps_the_released_keys(imported):
    from core.config import load_saved_config

    cfg = load_saved_config(imported / "config.yaml")
    m = cfg.model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.ffn_size) == (HIDDEN, LAYERS, HEADS, FFN)
    assert (m.cond_dim, m.time_conditioning) == (COND, True)
    assert (m.max_position, m.position_buckets, m.layer_norm_eps) == (MAX_POSITION, BUCKETS, 1e-7)
    assert cfg.objective.subs is False and cfg.name == "cosine-step_120"


def test_imported_tokenizer_has_our_specials_and_adds_no_bos(imported):
    from core.tokenizer import load_tokenizer

    tok = load_tokenizer(imported / "tokenizer.json")  # refuses a tokenizer without our 16 specials
    assert tok.token_to_id("<reserved_5>") == 5 and tok.token_to_id("<special_0>") is None
    assert tok.encode("the king went").ids[0] != 1, "the code adds <s> itself: the tokenizer must not"


def test_eval_loads_the_imported_weights(released, imported):
    from core.evaluate import load_for_eval

    _, raw, ema = released
    model, _, _, _ = load_for_eval(str(imported), weights="ema", device="cpu")
    assert_released_equal(model.state_dict(), ema)
    model, _, _, _ = load_for_eval(str(imported), weights="raw", device="cpu")
    assert_released_equal(model.state_dict(), raw)


def test_imported_model_computes_the_released_forward(released, imported):
    """The imported run's model gives the logits of the naive SPEC forward run on the released file's
    own tensors (float64, padded batch, time-conditioned): the paper's model, not a near relative."""
    from core.evaluate import load_for_eval
    from tests.reference_model import reference_logits

    _, raw, _ = released
    model, tokenizer, _, _ = load_for_eval(str(imported), weights="raw", device="cpu")
    ids = torch.tensor(
        [
            tokenizer.encode("the king went to the city").ids[:6],
            tokenizer.encode("gold bread").ids[:3] + [3, 3, 3],
        ]
    )
    ids = torch.cat([torch.ones(2, 1, dtype=torch.long), ids], dim=1)  # <s>
    mask, rate = ids != 3, torch.tensor([0.2, 0.6])
    with torch.no_grad():
        ours = model.double()(ids, attention_mask=mask, rate=rate)
    ref = reference_logits(
        raw,
        num_layers=LAYERS,
        num_heads=HEADS,
        buckets=BUCKETS,
        eps=1e-7,
        input_ids=ids,
        attention_mask=mask,
        rate=rate,
    )
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def test_eval_with_predictions_on_an_imported_run(imported, tmp_path):
    out, report = tmp_path / "predictions.jsonl", tmp_path / "report.json"
    result = mdlm(
        "eval",
        imported,
        "--suite",
        "builtin",
        "--limit",
        2,
        "--predictions",
        out,
        "--json",
        report,
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    per_uid = json.loads(report.read_text())["per_uid"]
    assert len(records) == sum(row["n"] for row in per_uid.values()) == 2 * len(per_uid)
    for record in records:
        assert set(record) == {"suite", "uid", "index", "scores", "chosen", "credit"}
        assert record["suite"] == "builtin" and len(record["scores"]) == 2 and record["chosen"] in (0, 1)
        assert record["credit"] in (0, 0.5, 1)
    assert sorted((r["uid"], r["index"]) for r in records) == sorted(
        (uid, i) for uid in per_uid for i in range(2)
    )


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_weights_option_imports_one_set_as_the_model(released, tmp_path, weights):
    step, raw, ema = released
    result = mdlm("import", step, "--run-dir", tmp_path / "run", "--weights", weights)
    assert result.returncode == 0, result.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "step-120"
    assert_released_equal(load_file(ckpt / "model.safetensors"), ema if weights == "ema" else raw)
    assert not (ckpt / "ema.safetensors").exists()


def test_resume_of_an_imported_run_is_refused(imported):
    assert_one_sentence(mdlm("run", "--resume", "--run-dir", imported), "imported weights", "start a new run")


def test_sample_from_an_imported_run(imported):
    result = mdlm("sample", imported, "--length", 12, "--steps", 4, "--device", "cpu")
    assert result.returncode == 0, result.stderr


def test_hugging_face_folder_with_prefix_and_safetensors(released, tmp_path):
    step, _, _ = released
    folder = tmp_path / "diffusion_hf"
    folder.mkdir()
    shutil.copy(step.parent / "tokenizer.json", folder)
    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    config = {
        **released_config(vocab, cond_dim=None),
        "architectures": ["Bert"],
        "model_type": "diffusion",
        "torch_dtype": "float32",
        "transformers_version": "4.52.4",
        "auto_map": {"AutoModel": "model.Bert"},
    }
    config["num_layers"] = config.pop("num_hidden_layers")
    (folder / "config.json").write_text(json.dumps(config))
    state = released_state(vocab, None, seed=3)
    del state["classifier.nonlinearity.5.weight"]  # safetensors keeps one copy of a tied tensor
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))

    run_dir = tmp_path / "run"
    result = mdlm("import", folder, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert "model weights from model.safetensors (the only weights file there" in result.stdout
    ckpt = run_dir / "checkpoints" / "step-0"
    assert_released_equal(load_file(ckpt / "model.safetensors"), state)
    assert not (ckpt / "ema.safetensors").exists()
    assert "time_conditioning: false" in (run_dir / "config.yaml").read_text()


class Payload:
    """Unpickling this opens (creates) a file: what a malicious .bin could do with any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _break(step: Path, case: str) -> Path:
    """Damage a copy of the released folder in one way; returns the folder to import."""
    config = json.loads((step.parent / "config.json").read_text())
    if case == "no weights":
        for path in step.glob("*.bin"):
            path.unlink()
    elif case == "missing key":
        del config["hidden_size"]
    elif case == "unknown key":
        config["rope_theta"] = 10000
    elif case in ("wrong shape", "missing tensor", "unused tensor", "untied output"):
        for name in ("pytorch_model.bin", "pytorch_model_ema.bin"):
            state = torch.load(step / name, weights_only=True)
            if case == "wrong shape":
                state["sigma_map.mlp.0.weight"] = torch.zeros(COND, 128)
            elif case == "missing tensor":
                del state["transformer.mlp_layers.1.mlp.4.weight"]
            elif case == "unused tensor":
                state["transformer.attention_layers.2.out_proj.bias"] = torch.zeros(HIDDEN)
            else:
                state["classifier.nonlinearity.5.weight"] = state["classifier.nonlinearity.5.weight"] + 1
            torch.save(state, step / name)
    elif case == "pickle":
        (step / "pytorch_model_ema.bin").unlink()
        payload = {"embedding.word_embedding.weight": Payload(step.parent / "pwned")}
        torch.save(payload, step / "pytorch_model.bin")
    elif case == "nan":
        (step / "pytorch_model_ema.bin").unlink()
        state = torch.load(step / "pytorch_model.bin", weights_only=True)
        state["sigma_map.mlp.0.weight"][0, 0] = float("nan")
        torch.save(state, step / "pytorch_model.bin")
    elif case == "garbage":
        (step / "pytorch_model_ema.bin").unlink()
        (step / "pytorch_model.bin").write_bytes(bytes(range(256)) * 64)
    elif case == "mask id":
        data = json.loads((step.parent / "tokenizer.json").read_text())
        swap = {"<mask>": "<special_0>", "<special_0>": "<mask>"}
        for entry in data["added_tokens"]:
            entry["content"] = swap.get(entry["content"], entry["content"])
        vocab = data["model"]["vocab"]
        vocab["<mask>"], vocab["<special_0>"] = vocab["<special_0>"], vocab["<mask>"]
        (step.parent / "tokenizer.json").write_text(json.dumps(data))
    (step.parent / "config.json").write_text(json.dumps(config))
    return step


BAD = [
    ("no weights", ["holds no weights", "pytorch_model.bin"]),
    ("missing key", ["config.json lacks hidden_size"]),
    ("unknown key", ["rope_theta"]),
    ("wrong shape", ["sigma_map.mlp.0.weight is [8, 128], not [8, 256]"]),
    ("missing tensor", ["lacks transformer.mlp_layers.1.mlp.4.weight"]),
    ("unused tensor", ["does not use: transformer.attention_layers.2.out_proj.bias"]),
    ("untied output", ["classifier.nonlinearity.5.weight", "word embedding"]),
    ("pickle", ["would run code"]),
    ("garbage", ["is not a tensors-only PyTorch weights file"]),
    ("nan", ["NaN or infinite values in sigma_map.mlp.0.weight"]),
    ("mask id", ["gives <mask> id 5", "at id 4"]),
]


@pytest.mark.parametrize("case,fragments", BAD, ids=[case for case, _ in BAD])
def test_bad_folder_is_one_sentence_and_writes_nothing(released, tmp_path, case, fragments):
    step, _, _ = released
    copy = tmp_path / "copy"
    shutil.copytree(step.parent, copy)
    source = _break(copy / step.name, case)
    run_dir = tmp_path / "run"
    assert_one_sentence(mdlm("import", source, "--run-dir", run_dir), *fragments)
    assert not run_dir.exists() and not list(tmp_path.glob(".*"))
    assert not (copy / "pwned").exists(), "the pickle's code never ran"


def test_the_pickle_payload_is_live(tmp_path):
    # What the refusal above protects against: a plain unpickle runs the payload.
    torch.save({"x": Payload(tmp_path / "ran")}, tmp_path / "evil.bin")
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert (tmp_path / "ran").exists()


def test_a_run_is_never_overwritten(released, imported):
    step, _, _ = released
    before = (imported / "config.yaml").read_text()
    assert_one_sentence(mdlm("import", step, "--run-dir", imported), "already holds a run")
    assert (imported / "config.yaml").read_text() == before


def test_unreachable_hub_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = mdlm("import", "despoinakk/no_such_model_here", "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_one_sentence(result, "hub could not be reached", "download the model folder and pass its path")
