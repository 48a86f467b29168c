"""Importing the paper's released weights as a run folder that `eval`, `sample` and the TUI open.

A source is a released training checkpoint (step_N/ holding pytorch_model.bin and/or
pytorch_model_ema.bin), a Hugging Face style folder (config.json with pytorch_model.bin or
model.safetensors) or a hub id owner/name. config.json and tokenizer.json are looked for beside the
weights, then one folder up. A .bin file is read with torch.load(weights_only=True): a pickle that
would run code is refused, never executed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.checkpoint import load_tensors_only, names_code
from core.config import Config, from_dict, to_yaml, validate
from core.errors import UserError
from core.released import DERIVED_BUFFER, TIED_OUTPUT, from_released, to_released
from core.runs import IMPORTED_MARKER
from core.specials import BOS_ID, EOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, SPECIAL_TOKENS, UNK_ID

RAW_FILES = ("model.safetensors", "pytorch_model.bin")  # the first one present is read
EMA_FILES = ("model_ema.safetensors", "pytorch_model_ema.bin")
# released config.json key -> ours
CONFIG_KEYS = {
    "hidden_size": "model.hidden_size",
    "num_hidden_layers": "model.num_layers",
    "num_layers": "model.num_layers",
    "num_attention_heads": "model.num_heads",
    "intermediate_size": "model.ffn_size",
    "vocab_size": "data.vocab_size",
    "max_position_embeddings": "model.max_position",
    "position_bucket_size": "model.position_buckets",
    "layer_norm_eps": "model.layer_norm_eps",
    "cond_dim": "model.cond_dim",
    "hidden_dropout_prob": "model.dropout",
    "attention_probs_dropout_prob": "model.attention_dropout",
}
# Everything that fixes a tensor's shape or the model's output (and the layer count, under either
# name); the dropouts default to the released 0.1 and a missing cond_dim is read off the weights.
REQUIRED_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "position_bucket_size",
    "layer_norm_eps",
)
HF_BOOKKEEPING = {
    "architectures",
    "auto_map",
    "model_type",
    "torch_dtype",
    "transformers_version",
    "_name_or_path",
    "tie_word_embeddings",
    "use_cache",
}
ANCHOR = "embedding.word_embedding.weight"  # the first tensor of the released `Bert`, found under any prefix
TIME_INPUT = "sigma_map.mlp.0.weight"
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
NAMED_SPECIALS = {"<unk>": UNK_ID, "<s>": BOS_ID, "</s>": EOS_ID, "<pad>": PAD_ID, "<mask>": MASK_ID}


@dataclass
class Imported:
    run_dir: Path
    step: int
    parameters: int
    model_from: str  # the file the run's model weights came from
    ema_from: str | None
    only_file: bool  # model_from was the source's only weights file


def import_released(
    source: str,
    run_dir: Path,
    tokenizer: Path | None = None,
    config: Path | None = None,
    weights: str = "both",
) -> Imported:
    if weights not in ("ema", "raw", "both"):
        raise UserError(f"--weights must be ema, raw or both, got '{weights}'.")
    run_dir = Path(run_dir).expanduser()
    check_target(run_dir)
    folder, name = resolve_source(source)
    model_file, ema_file = pick_weights(folder, weights)
    config_path = config or beside(folder, "config.json", "--config")
    tokenizer_path = tokenizer or beside(folder, "tokenizer.json", "--tokenizer")
    step = int(m.group(1)) if (m := re.fullmatch(r"step_(\d+)", folder.name)) else 0

    model_state = read_state(model_file)
    ema_state = read_state(ema_file) if ema_file else None
    cfg = read_config(Path(config_path), name, f"imported from {source}", model_state)
    if ema_state is None:
        cfg.train.ema = 0.0  # the run has no EMA weights, as if trained without them
    tokenizer_json = convert_tokenizer(Path(tokenizer_path), cfg.data.vocab_size)

    from core.model import build_model

    model = build_model(cfg)
    layers = cfg.model.num_layers
    check_tensors(model_state, model.state_dict(), layers, model_file)
    model.load_state_dict(from_released(model_state, layers), strict=True)
    shadow = None
    if ema_state is not None:
        check_tensors(ema_state, model.state_dict(), layers, ema_file)
        shadow = {k: v.detach().float().clone() for k, v in from_released(ema_state, layers).items()}
    write_run(run_dir, cfg, tokenizer_json, model, shadow, step, str(source))
    parameters = sum(p.numel() for p in model.parameters())
    only = weights == "both" and ema_file is None
    return Imported(run_dir, step, parameters, model_file.name, ema_file.name if ema_file else None, only)


# ---------------------------------------------------------------- finding the files


def check_target(run_dir: Path) -> None:
    if (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} already holds a run; choose another --run-dir.")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(f"{run_dir} exists and is not an empty folder; choose another --run-dir.")


def resolve_source(source: str) -> tuple[Path, str]:
    """(the folder holding the weights, a name for the run)."""
    path = Path(source).expanduser()
    if path.is_dir():
        full = path.resolve()
        return path, f"{full.parent.name}-{full.name}" if full.name.startswith("step_") else full.name
    if path.exists():
        raise UserError(f"{source} is a file; give the folder that holds it.")
    if not HUB_ID.fullmatch(source):
        raise UserError(
            f"{source} does not exist: give a released checkpoint folder, a model folder "
            "or a hub id owner/name."
        )
    return download(source), source.split("/")[1]


def download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.bin", "*.safetensors"]))
    except Exception as e:  # not installed, offline, unknown id: all end the same way
        raise UserError(
            f"{repo_id} is not a folder here and the Hugging Face hub could not be reached "
            f"({_reason(e)}); download the model folder and pass its path."
        ) from None


def pick_weights(folder: Path, weights: str) -> tuple[Path, Path | None]:
    """(the file for the run's model weights, the file for its EMA weights or None)."""
    raw = next((folder / n for n in RAW_FILES if (folder / n).is_file()), None)
    ema = next((folder / n for n in EMA_FILES if (folder / n).is_file()), None)
    if raw is None and ema is None:
        raise UserError(f"{folder} holds no weights ({', '.join(RAW_FILES + EMA_FILES)}).")
    if weights == "raw":
        if raw is None:
            raise UserError(f"{folder} holds only EMA weights ({ema.name}); import them with --weights ema.")
        return raw, None
    if weights == "ema":
        if ema is None:
            raise UserError(
                f"{folder} holds no EMA weights ({' or '.join(EMA_FILES)}); "
                f"import {raw.name} with --weights raw."
            )
        return ema, None
    if raw is None or ema is None:
        return raw or ema, None
    return raw, ema


def beside(folder: Path, name: str, option: str) -> Path:
    for candidate in (folder / name, folder.parent / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"No {name} in {folder} or the folder above it; pass {option} FILE.")


# ---------------------------------------------------------------- reading them


def read_state(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = load_tensors_only(path)
    except pickle.UnpicklingError as e:  # the safe loader met something other than tensors
        if names_code(e):
            raise UserError(
                f"{path} holds more than tensors (unpickling it would run code), so it was not loaded."
            ) from None
        raise UserError(
            f"{path} is not a tensors-only PyTorch weights file (damaged, or written by something else), "
            "so it was not loaded."
        ) from None
    except Exception as e:  # truncated or foreign files raise many kinds
        raise UserError(f"{path} cannot be read as weights ({_reason(e)}).") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise UserError(f"{path} is not a state dict of named tensors.")
    if ANCHOR not in state:  # a Hugging Face export keeps the model under an attribute such as "model."
        prefix = next((k[: -len(ANCHOR)] for k in state if k.endswith("." + ANCHOR)), "")
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def read_config(path: Path, name: str, description: str, state: dict[str, Tensor]) -> Config:
    try:
        released = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable JSON file ({str(e)[:120]}).") from None
    if not isinstance(released, dict):
        raise UserError(f"{path} must hold a JSON object of configuration keys.")
    unknown = sorted(k for k in released if k not in CONFIG_KEYS and k not in HF_BOOKKEEPING)
    if unknown:
        raise UserError(f"{path} has keys the released model does not use: {', '.join(unknown)}.")
    missing = [k for k in REQUIRED_KEYS if k not in released]
    layers = {json.dumps(released[k]) for k in ("num_hidden_layers", "num_layers") if k in released}
    if not layers:
        missing.append("num_hidden_layers")
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}.")
    if len(layers) > 1:
        raise UserError(f"{path} gives num_hidden_layers and num_layers different values.")
    if "cond_dim" not in released:  # the training run's setting, not the model config's: the weights tell
        released["cond_dim"] = state[TIME_INPUT].shape[0] if TIME_INPUT in state else None
    values: dict = {"name": name, "description": description, "objective": {"subs": False}}
    for key, value in released.items():
        if key not in CONFIG_KEYS or (key == "cond_dim" and value is None):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{path}: {key} must be a number, got {json.dumps(value)}.")
        section, field = CONFIG_KEYS[key].split(".")
        values.setdefault(section, {})[field] = value
    values["model"]["time_conditioning"] = released["cond_dim"] is not None
    values["data"]["seq_len"] = min(Config().data.seq_len, int(released["max_position_embeddings"]))
    cfg = from_dict(values, where=str(path))
    validate(cfg)
    return cfg


def convert_tokenizer(path: Path, vocab_size: int) -> str:
    """The released tokenizer as this package's: the reserved ids 5..15 renamed to ours, and no
    post-processor, because the code adds <s> itself (the released one would add a second)."""
    from tokenizers import Tokenizer

    from core.tokenizer import check_tokenizer

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        tok = Tokenizer.from_str(text)
    except Exception as e:  # unreadable, not JSON, or JSON the tokenizers library rejects
        raise UserError(f"{path} is not a tokenizer file ({_reason(e)}).") from None
    for token, expected in NAMED_SPECIALS.items():
        found = tok.token_to_id(token)
        if found != expected:
            got = f"has no {token}" if found is None else f"gives {token} id {found}"
            raise UserError(
                f"{path} {got}, but the model needs it at id {expected}: it is not the released tokenizer."
            )
    added = {entry.get("id"): entry for entry in data.get("added_tokens") or []}
    vocab = data.get("model", {}).get("vocab")
    for i in range(len(NAMED_SPECIALS), NUM_SPECIAL):
        entry = added.get(i)
        if entry is None or not entry.get("special"):
            raise UserError(
                f"{path} has no special token at id {i}; ids 0-{NUM_SPECIAL - 1} must be reserved specials."
            )
        old, entry["content"] = entry["content"], SPECIAL_TOKENS[i]
        if isinstance(vocab, dict) and vocab.get(old) == i:
            del vocab[old]
            vocab[SPECIAL_TOKENS[i]] = i
    data["post_processor"] = None
    text = json.dumps(data, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_str(text)
    check_tokenizer(tok, where=str(path))
    if tok.get_vocab_size() > vocab_size:
        raise UserError(
            f"{path} has {tok.get_vocab_size():,} ids but the model only {vocab_size:,}: "
            "it belongs to another model."
        )
    return text


def _reason(error: Exception) -> str:
    """The first sentence of an error's message, to fit inside ours."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 160 else text[:157] + "..."


def _few(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def check_tensors(state: dict[str, Tensor], ours: dict[str, Tensor], num_layers: int, path: Path) -> None:
    """Every tensor the config's model needs, of its shape, and nothing else (the derived position
    buffers aside; the tied output matrix may be there, equal to the word embedding)."""
    expected = {name: tuple(t.shape) for name, t in to_released(ours, num_layers).items()}
    missing = [k for k in expected if k not in state and k != TIED_OUTPUT]
    if missing:
        raise UserError(f"{path} lacks {_few(missing)}: it does not hold the model its config describes.")
    unused = [k for k in state if k not in expected and not k.endswith(DERIVED_BUFFER)]
    if unused:
        raise UserError(f"{path} has tensors the model its config describes does not use: {_few(unused)}.")
    wrong = [
        f"{k} is {list(state[k].shape)}, not {list(shape)}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    if wrong:
        raise UserError(f"{path} does not fit its config: {_few(wrong)}.")
    broken = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:  # a diverged or damaged save: every score from it would be NaN
        raise UserError(f"{path} holds NaN or infinite values in {_few(broken)}.")
    if TIED_OUTPUT in state and not torch.equal(state[TIED_OUTPUT], state[ANCHOR]):
        raise UserError(
            f"{path} has an output matrix ({TIED_OUTPUT}) that differs from the word embedding, "
            "which the model ties to it."
        )


# ---------------------------------------------------------------- writing the run


def write_run(
    run_dir: Path, cfg: Config, tokenizer_json: str, model, shadow: dict | None, step: int, source: str
) -> None:
    """Built in a hidden folder beside run_dir and renamed into place: a failure leaves no half run."""
    from core.checkpoint import save_checkpoint
    from core.runs import RunDir

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_dir.parent / f".{run_dir.name}.import-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        run = RunDir(tmp)
        run.create(to_yaml(cfg))
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        ema = {"shadow": shadow, "decay": cfg.train.ema, "num_updates": step} if shadow is not None else None
        # No optimizer state comes with released weights: an empty one keeps the checkpoint format.
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        state = {"step": step, "imported_from": source}
        save_checkpoint(
            run.checkpoints_dir, step, model, ema, optimizer, state, keep=1, tokenizer=tmp / "tokenizer.json"
        )
        # Tells `run --resume` that this run has weights but no optimizer or data position to continue.
        (tmp / IMPORTED_MARKER).write_text(json.dumps({"source": source, "step": step}) + "\n")
        run.update_status(
            state="finished",
            step=step,
            total_steps=step,
            checkpoint=f"step-{step}",
            message=f"imported from {source}",
        )
        if run_dir.exists():
            run_dir.rmdir()  # empty (checked before); os.replace cannot take its place on every system
        os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
