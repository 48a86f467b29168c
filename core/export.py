"""Exporting checkpoints as Hugging Face model folders, the format the BabyLM pipeline loads.

One folder per checkpoint:
    config.json              the model's shape and conventions, with auto_map naming the classes below
    modeling_mdlm.py         core/hf_modeling.py verbatim: torch and transformers only
    model.safetensors        the weights (EMA or raw), named as in modeling_mdlm.py
    tokenizer.json           the run's tokenizer, with a post-processor that prepends <s> as training did
    tokenizer_config.json, special_tokens_map.json

The folder conditions the model on the run's evaluation rate (eval.rate_value) and drops the [MASK]
logit when the run scores without it (objective.subs), so the pipeline's `mlm` backend computes the
same pseudo-log-likelihoods as `mdlm-tui eval`. Everything is written into a temporary folder beside
OUT and renamed into place at the end: a failed export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, processors

from core.checkpoint import read_meta, write_failure
from core.config import MILESTONE_PREFIX, Config, ModelConfig, load_saved_config
from core.errors import UserError
from core.runs import milestone_dirs
from core.specials import BOS_ID, EOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, SPECIAL_TOKENS, UNK_ID

MODELING_FILE = "modeling_mdlm.py"
AUTO_MAP = {
    "AutoConfig": "modeling_mdlm.MDLMConfig",
    "AutoModel": "modeling_mdlm.MDLMModel",
    "AutoModelForMaskedLM": "modeling_mdlm.MDLMForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_mdlm.MDLMForSequenceClassification",
}
HEAD_TENSORS = (
    "head_proj.weight",
    "head_proj.bias",
    "output_bias",
)  # the rest sit under the encoder, "mdlm."

# What modeling_mdlm.py implements of model.*: any value of these keys ...
_ANY_VALUE = {
    "hidden_size",
    "num_layers",
    "num_heads",
    "ffn_size",
    "cond_dim",
    "time_conditioning",
    "position_buckets",
    "max_position",
    "dropout",
    "attention_dropout",
    "time_scale",
    "layer_norm_eps",
    "head_dropout",
    "init",
}  # init shapes only the starting weights, which an export does not need
# ... and these values of these keys. A key or value missing here is refused rather than exported wrong.
_VALUES = {
    "position_terms": ("ltg", "mirrored"),
    "ffn_gelu": ("tanh", "exact"),
    "position_dropout": ("per-layer", "shared"),
}


def check_exportable(model_cfg: ModelConfig) -> None:
    for key, value in dataclasses.asdict(model_cfg).items():
        if key in _ANY_VALUE or value in _VALUES.get(key, ()):
            continue
        raise UserError(
            f"model.{key}={value} is not implemented by the exported Hugging Face model, so this run "
            "cannot be exported."
        )


def eval_rate(cfg: Config) -> float | str:
    """The time-conditioning input of the run's scoring (eval.rate_value): a rate, or "realised"."""
    from core.scoring import check_rate_value

    try:
        return check_rate_value(cfg.eval.rate_value)
    except ValueError as e:
        raise UserError(f"eval.rate_value in the run's config.yaml is not usable: {e}.") from None


def hf_config(cfg: Config, source: dict) -> dict:
    m = cfg.model
    return {
        "architectures": ["MDLMForMaskedLM"],
        "auto_map": AUTO_MAP,
        "model_type": "mdlm_tui",
        "vocab_size": cfg.data.vocab_size,
        "hidden_size": m.hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads,
        "intermediate_size": m.ffn_size,
        "cond_dim": m.cond_dim,
        "time_conditioning": m.time_conditioning,
        "time_features": 256,
        "time_scale": m.time_scale,
        "time_rate": eval_rate(cfg),
        "position_buckets": m.position_buckets,
        "max_position_embeddings": m.max_position,
        "position_terms": m.position_terms,
        "layer_norm_eps": m.layer_norm_eps,
        "ffn_gelu": m.ffn_gelu,
        "hidden_dropout_prob": m.dropout,
        "attention_probs_dropout_prob": m.attention_dropout,
        "position_dropout": m.position_dropout,
        "head_dropout": m.head_dropout,
        "suppress_mask_logit": cfg.objective.subs,
        "num_special_tokens": NUM_SPECIAL,
        "mask_token_id": MASK_ID,
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "mdlm_tui": source,
    }


def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        (name if name in HEAD_TENSORS else f"mdlm.{name}"): tensor.detach().float().contiguous().cpu()
        for name, tensor in model.state_dict().items()
    }


def hf_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A copy that prepends <s> when called with special tokens, as training and scoring do; a pair is
    <s> A </s> B (for fine-tuning tasks)."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    bos, eos = SPECIAL_TOKENS[BOS_ID], SPECIAL_TOKENS[EOS_ID]
    copy.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {eos} $B:1", special_tokens=[(bos, BOS_ID), (eos, EOS_ID)]
    )
    copy.no_padding()
    copy.no_truncation()
    return copy


def special_tokens_map() -> dict:
    return {
        "bos_token": SPECIAL_TOKENS[BOS_ID],
        "eos_token": SPECIAL_TOKENS[EOS_ID],
        "unk_token": SPECIAL_TOKENS[UNK_ID],
        "pad_token": SPECIAL_TOKENS[PAD_ID],
        "mask_token": SPECIAL_TOKENS[MASK_ID],
        "cls_token": SPECIAL_TOKENS[BOS_ID],
        "sep_token": SPECIAL_TOKENS[EOS_ID],
    }


def tokenizer_config(cfg: Config) -> dict:
    # token_type_ids left out: the model has no segment embedding
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens_map(),
        "model_max_length": cfg.model.max_position,
        "padding_side": "right",
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    }


def modeling_source() -> str:
    return resources.files("core").joinpath("hf_modeling.py").read_text(encoding="utf-8")


def write_folder(
    folder: Path, model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, source: dict
) -> None:
    """Write one model folder into `folder` (which exists and is empty)."""
    check_exportable(cfg.model)
    folder = Path(folder)
    save_file(hf_state_dict(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf_tokenizer(tokenizer).save(str(folder / "tokenizer.json"))
    (folder / MODELING_FILE).write_text(modeling_source(), encoding="utf-8")
    for name, obj in (
        ("config.json", hf_config(cfg, source)),
        ("tokenizer_config.json", tokenizer_config(cfg)),
        ("special_tokens_map.json", special_tokens_map()),
    ):
        (folder / name).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():  # safetensors creates its file readable by the owner only
        path.chmod(0o666 & ~umask)


# ---------------------------------------------------------------- from a run folder


def _plan(target: str, milestones: bool) -> list[tuple[str | None, Path]]:
    """(subfolder of OUT or None for OUT itself, checkpoint folder) for everything to export."""
    from core.checkpoint import latest_checkpoint
    from core.evaluate import find_run_and_checkpoint

    run, ckpt = find_run_and_checkpoint(target)
    check_exportable(load_saved_config(run / "config.yaml").model)
    if not milestones:
        return [(None, ckpt)]
    if not (Path(target).expanduser() / "config.yaml").is_file():
        raise UserError(
            f"--milestones needs a run folder, and {target} is a checkpoint folder: give {run} instead."
        )
    found = milestone_dirs(run / "checkpoints")
    if not found:
        raise UserError(
            f"Run {run} has no milestone checkpoints (checkpoints/{MILESTONE_PREFIX}*): export without "
            "--milestones to write its latest checkpoint."
        )
    return [("main", latest_checkpoint(run / "checkpoints") or found[-1])] + [(d.name, d) for d in found]


def _load(ckpt: Path, weights: str):
    from core.evaluate import load_for_eval

    model, tokenizer, cfg, ckpt = load_for_eval(
        str(ckpt), weights=weights, device="cpu", warn=lambda message: None
    )
    # the load verified every file meta.json lists, so a missing EMA file means the run kept none
    if weights == "ema" and not (ckpt / "ema.safetensors").is_file():
        raise UserError(
            f"Checkpoint {ckpt} has no EMA weights (the run trained with train.ema=0): export it "
            "with --weights raw."
        )
    return model, tokenizer, cfg


def _check_out(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out} exists and is not a folder: choose a new folder to export to.")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty: choose a new folder, or empty it first.")


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def export(
    target: str, out: Path, weights: str = "ema", milestones: bool = False, log: Callable[[str], None] = print
) -> list[Path]:
    """Export the checkpoint(s) of `target` to `out`; returns the model folders written."""
    if weights not in ("ema", "raw"):
        raise UserError(f"--weights must be 'ema' or 'raw', got '{weights}'.")
    out = Path(out).expanduser()
    _check_out(out)
    plan = _plan(target, milestones)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create {out.parent} ({e.strerror or e}).") from None
    tmp = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for sub, ckpt in plan:
            model, tokenizer, cfg = _load(ckpt, weights)
            folder = tmp / sub if sub else tmp
            folder.mkdir(exist_ok=True)
            source = {
                "run": cfg.name,
                "checkpoint": ckpt.name,
                "step": read_meta(ckpt).get("step"),
                "weights": weights,
            }
            write_folder(folder, model, tokenizer, cfg, source)
            log(f"{ckpt.name} ({weights} weights, time rate {eval_rate(cfg)}) -> {out / sub if sub else out}")
        _check_out(out)  # nothing appeared there meanwhile
        _fsync_tree(tmp)
        os.replace(tmp, out)  # onto an empty folder too
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        # a refused write (full disk, read-only folder), also as safetensors reports it, is one sentence
        reason = write_failure(e) if isinstance(e, Exception) else None
        if reason is None:
            raise
        raise UserError(f"Exporting to {out} failed ({reason}); nothing was written there.") from None
    return [out / sub if sub else out for sub, _ in plan]
