"""Typed run configuration: dataclasses, YAML presets and `key=value` overrides.

A config is plain data. `load_config` resolves a preset (a name under presets/ or a YAML path),
applies `--set` overrides and validates; unknown keys fail with a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import warnings
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from core.errors import UserError
from core.registry import MASKING_KINDS, SAMPLERS, SCHEDULES


@dataclass
class DataConfig:
    source: str = "auto"  # auto | embedded | babylm | text | hf
    path: str | None = None  # corpus folder/file, or a Hugging Face dataset id or local files for hf
    dev_path: str | None = None  # explicit dev split; otherwise found (BabyLM dev/) or held out
    dev_fraction: float = 0.05  # documents held out for dev when the source has no dev split
    hf_config: str | None = None
    hf_split: str = "train"
    hf_text_field: str = "text"
    vocab_size: int = 16384
    seq_len: int = 128
    cache_dir: str | None = None  # default: $XDG_CACHE_HOME/mdlm-tui


@dataclass
class ModelConfig:
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_size: int = 2560
    cond_dim: int = 128
    time_conditioning: bool = True
    position_buckets: int = 32
    max_position: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    # The released model's conventions (SPEC section 4); each has today's earlier variant as an ablation.
    time_scale: float = (
        1.0  # the rate is fed to the sinusoidal features times this (1 as released; 1000 is DiT-style)
    )
    position_terms: str = (
        "ltg"  # ltg: both position terms index bucket(i - j); mirrored: c2p indexes bucket(j - i)
    )
    layer_norm_eps: float = 1e-7  # every LayerNorm (released 1e-7; PyTorch's default is 1e-5)
    init: str = "released"  # released: FFN weights of layer i scaled by sqrt(1 / (2 (1 + i))), time MLP at
    # PyTorch's default init; plain: every weight truncated normal, no depth scaling
    ffn_gelu: str = "tanh"  # GELU of the GEGLU gate: tanh approximation as released, or exact
    # per-layer: attention_dropout on the position table in every layer; shared: dropout once for all
    position_dropout: str = "per-layer"
    head_dropout: bool = True  # dropout before the head's output projection, as released


@dataclass
class ScheduleConfig:
    # linear | cosine | cosine-squared | log-linear | gaussian | bimodal | one registered in core.registry's
    # SCHEDULES; a registered schedule may read extra keys schedule.<param> (see schedule_extras)
    name: str = "cosine"
    power: float = 1.0  # derivative power p in w = |alpha'|^p / (1 - alpha)
    eps: float = 1e-3  # log-linear
    mu: float = 0.3  # gaussian: mean mask rate
    sigma: float = 0.1  # gaussian: std of the mask rate
    w_left: float = 0.6  # bimodal: weight of the left (low-rate) mode
    mu_left: float = 0.12
    sigma_left: float = 0.02
    mu_right_start: float = 0.40
    mu_right_end: float = 0.85
    sigma_right: float = 0.08
    k: float = 1.0  # bimodal: speed of the right mode's move, mu_R0 + (mu_R1 - mu_R0)(1 - e^{-k progress})


@dataclass
class MaskingConfig:
    kind: str = "uniform"  # uniform | frequency | one registered in core.registry's MASKING_KINDS
    # sequence: min, max and mean over all L positions, <s> and pads included, counts over the padded
    # sequences (as released); maskable: over maskable positions only, counts without specials
    statistics: str = "sequence"
    p_freq: float = 0.02  # softening exponent of frequency-informed masking
    curriculum: bool = True  # grow p from 0 (first epoch) to p_freq (last epoch)


@dataclass
class ObjectiveConfig:
    subs: bool = True  # exclude the [MASK] logit from the softmax (MDLM SUBS)
    on_nonfinite: str = "fail"  # fail | skip: what a NaN/inf loss does
    max_skipped: int = 100  # with skip: fail after this many skipped steps


@dataclass
class TrainConfig:
    budget: str = "1000 steps"  # "N steps", "N tokens", "N words" (K/M/B suffixes allowed) or "N epochs"
    # The recipe states sequences per optimizer step over all workers; each device runs micro_batch
    # of them at a time and accumulates global_batch / (workers x micro_batch) micro-batches.
    global_batch: int = 32
    micro_batch: int = 32
    optimizer: str = "lamb"  # lamb | adamw
    lr: float = 7e-3
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-8
    weight_decay: float = 0.1
    warmup: float = 0.016  # fraction of steps
    cooldown: float = 0.016  # fraction of steps, linear to 0 at the end
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    clip: float = 2.0  # gradient norm clip; 0 disables
    first_lr_zero: bool = (
        True  # the first update uses the schedule's lr at step 0 (0 with warm-up), as released
    )
    # per-matrix: one LAMB trust ratio per released matrix (query-key, value-gate apart); per-tensor
    lamb_trust: str = "per-matrix"
    ema: float = 0.999  # 0 disables
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    tf32: bool = True  # CUDA: fp32 matmuls (those outside bf16 autocast) on TF32 tensor cores
    compile: bool = False  # torch.compile the model; a compilation that fails falls back to eager
    threads: int = 0  # CPU threads; 0 = OMP_NUM_THREADS where set, else all cores
    log_every: int = 10
    dev_every: int = 500  # steps between dev-split losses; 0 disables
    dev_batches: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    # words seen at which to keep a checkpoint (checkpoints/chck_<N>): babylm (1M..10M, 20M..100M,
    # 200M..1000M, the BabyLM pipeline's revisions) or a list such as 1M,2M,5M; none for none
    save_at_words: str | None = None


@dataclass
class EvalConfig:
    every: int = 0  # steps between zero-shot evaluations while training; 0 disables
    suites: str = "builtin"  # comma-separated: builtin, blimp, supplement, ewok, all, a .jsonl path, hf:<id>
    data_dir: str | None = None  # BabyLM evaluation_data folder for blimp / supplement / ewok
    limit: int = 100  # items per UID while training (0 = all); `mdlm-tui eval --limit` overrides
    backend: str = "pll"  # pll | nelbo
    rate_value: str = "0"  # time-conditioning input while scoring: a rate in [0, 1] or "realised" (1/L)
    draws: int = 16  # Monte-Carlo draws of the nelbo backend
    weights: str = "ema"  # ema | raw


@dataclass
class SamplesConfig:
    every: int = 0  # steps between unmasking traces written to samples.jsonl; 0 disables
    length: int = 64
    steps: int = 32
    sampler: str = "ancestral"  # ancestral | confidence
    temperature: float = 1.0
    top_p: float = 1.0
    prompt: str | None = None  # a prefix or an infill template with <mask>*N


@dataclass
class Config:
    name: str = "custom"
    description: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)


# The allowed values of a key; a registry (iterable, `in`) for the extension points, so that a schedule
# masking kind or sampler registered at runtime is allowed too.
CHOICES = {
    "data.source": ("auto", "embedded", "babylm", "text", "hf"),
    "schedule.name": SCHEDULES,
    "masking.kind": MASKING_KINDS,
    "masking.statistics": ("sequence", "maskable"),
    "model.position_terms": ("ltg", "mirrored"),
    "model.ffn_gelu": ("tanh", "exact"),
    "model.init": ("released", "plain"),
    "model.position_dropout": ("per-layer", "shared"),
    "train.lamb_trust": ("per-matrix", "per-tensor"),
    "objective.on_nonfinite": ("fail", "skip"),
    "train.optimizer": ("lamb", "adamw"),
    "train.precision": ("auto", "fp32", "bf16"),
    "eval.backend": ("pll", "nelbo"),
    "eval.weights": ("ema", "raw"),
    "samples.sampler": SAMPLERS,
}


# ---------------------------------------------------------------- presets


def preset_dir() -> Path:
    return Path(str(resources.files("presets")))


def _is_base(path: Path) -> bool:
    # only a file with a top-level `base:` key is parsed: the TUI lists the presets while it draws
    text = path.read_text(encoding="utf-8-sig")
    return bool(re.search(r"^base\s*:", text, re.M)) and read_yaml(path).get("base") is True


def _builtin_presets() -> dict[str, bool]:
    """Every preset shipped under presets/, by name: whether it is a base (`base: true`)."""
    paths = sorted(preset_dir().glob("*.yaml"), key=lambda path: path.stem)
    return {path.stem: _is_base(path) for path in paths}


def preset_names() -> list[str]:
    """The presets to train: every shipped preset but the bases, which others extend."""
    return [name for name, base in _builtin_presets().items() if not base]


def base_names() -> list[str]:
    """The shipped bases: recipes the presets extend, not offered for training on their own."""
    return [name for name, base in _builtin_presets().items() if base]


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        super().__init__(key, line)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a config must not say two things."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise _DuplicateKey(key_node.value, key_node.start_mark.line + 1)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e.strerror}.") from None
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8."
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise UserError(f"{path} sets '{e.key}' twice (again at line {e.line}); keep one of them.") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid syntax"
        raise UserError(f"{path} is not valid YAML{where}: {problem}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of config keys, not a {type(data).__name__}.")
    return data


def preset_path(name: str) -> Path:
    """A preset name (`smoke`) or a path to a YAML file."""
    candidate = Path(name)
    # A file by that name is the preset; a folder (say a run folder named `smoke`) never shadows one.
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise UserError(f"Preset file {name} does not exist.")
        return candidate
    path = preset_dir() / f"{name}.yaml"
    if not path.is_file():
        names = preset_names()
        close = difflib.get_close_matches(name, names + base_names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UserError(f"Unknown preset '{name}'.{hint} Available: {', '.join(names)}.")
    return path


SET, DEFAULT = "--set", "default"  # where a value comes from, when not from a preset


# Two keys of a preset file are about the file itself, never config values and never inherited:
# `extends` names the preset it starts from, `base: true` marks a recipe to extend rather than train.
@dataclass
class PresetFile:
    path: Path
    shown: str  # how messages name the file
    label: str  # how provenance names it: the preset's name
    data: dict  # its config keys, the meta keys taken out


def _is_builtin(path: Path) -> bool:
    return path.resolve().parent == preset_dir().resolve()


def _shown(path: Path) -> str:
    return path.name if _is_builtin(path) else os.path.normpath(path)


def _what(value: Any) -> str:
    if value is None or value == "":
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return "a list" if isinstance(value, list) else "a mapping"


def _parent_path(value: Any, child: PresetFile) -> Path:
    """Where `extends: VALUE` in the child leads: a preset name, or a YAML file beside the child."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(
            f"'extends' in {child.shown} must be one preset name or YAML file (extends: cosine), "
            f"got {_what(value)}."
        )
    value = value.strip()
    if value.endswith((".yaml", ".yml")) or "/" in value or os.sep in value:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else child.path.parent / path
        if not path.is_file():
            stem = Path(value).stem
            builtin = (
                f" For the preset '{stem}', write `extends: {stem}`." if stem in _builtin_presets() else ""
            )
            raise UserError(f"{child.shown} extends {value}, but there is no file {_shown(path)}.{builtin}")
        return path
    path = preset_dir() / f"{value}.yaml"
    if not path.is_file():
        names = preset_names()
        close = difflib.get_close_matches(value, names + base_names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        if (child.path.parent / f"{value}.yaml").is_file() and not _is_builtin(child.path):
            hint = f" For the file beside it, write `extends: {value}.yaml`."
        raise UserError(
            f"{child.shown} extends '{value}', which is not a preset.{hint} Available: {', '.join(names)}."
        )
    return path


def _preset_file(path: Path, shown: str) -> PresetFile:
    data = read_yaml(path)
    if not isinstance(data.get("base", False), bool):
        raise UserError(f"'base' in {shown} must be true or false, got {_what(data['base'])}.")
    data.pop("base", None)
    return PresetFile(path, shown, path.stem, data)


def preset_chain(preset: str) -> list[PresetFile]:
    """The preset and the presets it extends, nearest first; a cycle or a missing parent is refused."""
    path = preset_path(preset)
    chain = [_preset_file(path, _shown(path))]
    seen = [path.resolve()]
    while "extends" in chain[-1].data:
        child = chain[-1]
        path = _parent_path(child.data.pop("extends"), child)
        chain.append(_preset_file(path, _shown(path)))
        if path.resolve() in seen:
            circle = " -> ".join(f.shown for f in chain)
            raise UserError(f"Presets cannot extend in a circle: {circle}; remove one of these `extends`.")
        seen.append(path.resolve())
    labels = [f.label for f in chain]
    for f in chain:  # two files of one name (your cosine.yaml extending the preset cosine): the path tells
        if (labels.count(f.label) > 1 or f.label in (SET, DEFAULT)) and not _is_builtin(f.path):
            f.label = f.shown
    return chain


# ---------------------------------------------------------------- building and overriding


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in fields(Config) if f.default_factory is not dataclasses.MISSING}


def all_keys() -> list[str]:
    """The keys of every config (the dataclass fields); schedule_extras adds a registered schedule's."""
    sections = _sections()
    keys = [f.name for f in fields(Config) if f.name not in sections]
    for name, cls in sections.items():
        keys += [f"{name}.{g.name}" for g in fields(cls)]
    return keys


def schedule_extras(name: str | None = None) -> dict[str, Any]:
    """The parameters registered schedules declare (their `params`) beyond ScheduleConfig's fields, with
    their defaults: those of the schedule `name`, or of every registered one (the first declared default
    when two declare one parameter). Each is a key schedule.<param> while its schedule is registered; its
    value lives as an attribute of the ScheduleConfig, written to config.yaml when the schedule is chosen,
    and an unset one takes the schedule's default."""
    shared = {f.name for f in fields(ScheduleConfig)}
    extras: dict[str, Any] = {}
    for key, cls in SCHEDULES.registered().items():
        if name is None or key == name:
            for param, default in getattr(cls, "params", {}).items():
                if param not in shared:
                    extras.setdefault(param, default)
    return extras


def config_keys(cfg: Config) -> list[str]:
    """all_keys() and the extra schedule.* keys of cfg's schedule: every key its YAML holds."""
    return all_keys() + [f"schedule.{param}" for param in schedule_extras(cfg.schedule.name)]


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or explain why it cannot be."""
    text = str(typ)
    optional = "None" in text
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
        if optional:
            return None
        raise UserError(f"{key} cannot be empty.")
    try:
        if "bool" in text:
            if isinstance(value, bool):
                return value
            low = str(value).lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if "int" in text and "float" not in text:
            if isinstance(value, bool):
                raise ValueError
            try:
                return int(str(value).strip())  # exact: a float would round a 20-digit seed
            except ValueError:
                number = float(value)  # "1e3"
            if not number.is_integer():
                raise ValueError
            return int(number)
        if "float" not in text:
            return str(value)
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        kind = (
            "true or false"
            if "bool" in text
            else ("an integer" if "int" in text and "float" not in text else "a number")
        )
        raise UserError(f"{key} must be {kind}, got '{value}'.") from None
    if not math.isfinite(number):  # nan slips through every range check; inf is never a setting
        raise UserError(f"{key} must be a finite number, got '{value}'.")
    return number


def _apply(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    known = all_keys()
    if key not in known:
        extras = schedule_extras()
        if parts[0] == "schedule" and len(parts) == 2 and parts[1] in extras:
            default = extras[parts[1]]
            setattr(cfg.schedule, parts[1], _coerce(key, value, type(default)))
            return
        known += [f"schedule.{param}" for param in extras]
        raise UserError(f"Unknown config key '{key}'.{_did_you_mean(key, known)}")
    if len(parts) == 1:
        typ = get_type_hints(Config)[key]
        setattr(cfg, key, _coerce(key, value, typ))
        return
    section = getattr(cfg, parts[0])
    typ = get_type_hints(type(section))[parts[1]]
    setattr(section, parts[1], _coerce(key, value, typ))


def _flatten(data: dict, where: str) -> list[tuple[str, Any]]:
    sections = _sections()
    items = []
    for k, v in data.items():
        if k in sections:
            if not isinstance(v, dict):
                raise UserError(f"'{k}' in {where} must be a mapping of keys, not a value.")
            items += [(f"{k}.{sk}", sv) for sk, sv in v.items()]
        else:
            items.append((str(k), v))
    return items


# Keys that were renamed, read still: the micro-batch and accumulation became the global batch
# (sequences per optimizer step) and the per-device micro-batch.
RENAMED = {"train.batch_size": "train.micro_batch", "train.grad_accum": "train.global_batch"}


class RenamedKey(UserWarning):
    """A config used a renamed key; the message says what it became."""


def _renamed(cfg: Config, items: list[tuple[str, Any]], where: str) -> list[tuple[str, Any]]:
    """Rewrite train.batch_size / train.grad_accum into train.micro_batch / train.global_batch, keeping
    the sequences per optimizer step they meant (batch_size x grad_accum), and say so once."""
    old = {key: value for key, value in items if key in RENAMED}
    if not old:
        return items
    rest = [(key, value) for key, value in items if key not in RENAMED]
    given = dict(rest)
    micro = _coerce(
        "train.batch_size",
        old.get("train.batch_size", given.get("train.micro_batch", cfg.train.micro_batch)),
        int,
    )
    accum = (
        _coerce("train.grad_accum", old["train.grad_accum"], int)
        if "train.grad_accum" in old
        else max(1, cfg.train.global_batch // max(cfg.train.micro_batch, 1))
    )
    new = [("train.micro_batch", micro)]
    if "train.global_batch" not in given:
        new.append(("train.global_batch", micro * accum))
    said = " and ".join(f"{key}={value}" for key, value in old.items())
    became = " and ".join(f"{key}={value}" for key, value in new)
    warnings.warn(
        f"{where}: {said} {'are' if len(old) > 1 else 'is'} now {became} (sequences per optimizer "
        "step over all workers, and per device).",
        RenamedKey,
        stacklevel=3,
    )
    return rest + [item for item in new if item[0] not in given]


def _set_from(cfg: Config, data: dict, where: str) -> list[str]:
    """Set the keys of a YAML mapping on cfg; returns the keys set (renamed ones under their new names)."""
    items = _renamed(cfg, _flatten(data, where), where)
    for key, value in items:
        try:
            _apply(cfg, key, value)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    return [key for key, _ in items]


def from_dict(data: dict, where: str = "config", base: Config | None = None) -> Config:
    cfg = base or Config()
    _set_from(cfg, data, where)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise UserError(f"Override '{text}' must look like key=value, for example train.lr=3e-4.")
    key, value = text.split("=", 1)
    key = key.strip()
    value = value.strip()
    parsed = yaml.safe_load(value) if value else None
    return key, parsed if not isinstance(parsed, (dict, list)) else value


def _set_overrides(cfg: Config, overrides: list[str]) -> list[str]:
    items = _renamed(cfg, [parse_override(text) for text in overrides or []], "--set")
    for key, value in items:
        _apply(cfg, key, value)
    return [key for key, _ in items]


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    _set_overrides(cfg, overrides)
    validate(cfg)
    return cfg


@dataclass
class Resolved:
    config: Config
    # every key (all_keys()) -> where its value comes from: a preset's name, SET or DEFAULT
    sources: dict[str, str]
    chain: list[str]  # the preset and those it extends, nearest first, by name


def resolve_config(preset: str, overrides: list[str] | None = None) -> Resolved:
    """load_config, saying where each value comes from.

    The presets of the chain apply from the farthest to the preset itself, each setting only the keys it
    lists (a child's `train: {lr: 1e-3}` changes train.lr alone), then --set. `name` and `description`
    are never inherited: the name is the preset's own (its file name unless it sets one), and a preset
    that extends another without a description of its own reads "extends PARENT"."""
    chain = preset_chain(preset)
    cfg, sources, defaults = Config(), {}, Config()
    for file in reversed(chain):
        if file is chain[0]:  # a parent's name and description describe the parent
            cfg.name, cfg.description = defaults.name, defaults.description
            for key in ("name", "description"):
                sources.pop(key, None)
        sources.update(dict.fromkeys(_set_from(cfg, file.data, file.path.name), file.label))
    itself = chain[0]
    if cfg.name == defaults.name:
        cfg.name = itself.path.stem
    sources["name"] = itself.label
    if "description" not in sources and len(chain) > 1:
        cfg.description = f"extends {chain[1].label}"
        sources["description"] = itself.label
    sources.update(dict.fromkeys(_set_overrides(cfg, overrides or []), SET))
    validate(cfg)
    keys = config_keys(cfg)
    return Resolved(cfg, {key: sources.get(key, DEFAULT) for key in keys}, [f.label for f in chain])


def load_config(preset: str, overrides: list[str] | None = None) -> Config:
    """A preset (a name under presets/ or a YAML path, with whatever it extends) with --set overrides."""
    return resolve_config(preset, overrides).config


# Keys added after run folders were first written, with the value that reproduces what those runs
# trained: a config.yaml without them comes from before they existed, not from a cut-short file.
LEGACY_VALUES = {
    "masking.statistics": "maskable",
    "model.time_scale": 1000.0,
    "model.position_terms": "mirrored",
    "model.layer_norm_eps": 1e-5,
    "model.init": "plain",
    "model.ffn_gelu": "exact",
    "model.position_dropout": "shared",
    "model.head_dropout": False,
    "train.lamb_trust": "per-tensor",
    "train.first_lr_zero": False,
    "train.save_at_words": None,
    "train.tf32": True,
    "train.compile": False,
}

# What the checkpoints of a run depend on: a resume cannot change these.
FIXED_ON_RESUME = (
    "seed",
    "model.hidden_size",
    "model.num_layers",
    "model.num_heads",
    "model.ffn_size",
    "model.cond_dim",
    "model.time_conditioning",
    "model.position_buckets",
    "data.source",
    "data.path",
    "data.dev_path",
    "data.dev_fraction",
    "data.hf_config",
    "data.hf_split",
    "data.hf_text_field",
    "data.vocab_size",
    "data.seq_len",
    "train.global_batch",
    "train.optimizer",
)


def load_saved_config(path: Path, overrides: list[str] | None = None) -> Config:
    """A run's config.yaml, which must be whole: a key missing (other than one newer than the run)
    means a cut-short or hand-edited file, and defaults would silently train another recipe."""
    data = read_yaml(path)
    present = {key for key, _ in _flatten(data, str(path))}
    if present & RENAMED.keys():  # written before the global batch: its old pair stands for both
        present |= set(RENAMED.values())
    missing = [key for key in all_keys() if key not in present and key not in LEGACY_VALUES]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise UserError(
            f"{path} lacks {shown}: it was cut short or edited; restore the missing keys "
            "(`mdlm-tui inspect --preset NAME` prints a whole config)."
        )
    cfg = Config()
    for key in LEGACY_VALUES.keys() - present:
        _apply(cfg, key, LEGACY_VALUES[key])
    return apply_overrides(from_dict(data, where=str(path), base=cfg), overrides or [])


def check_resume_changes(saved: Config, wanted: Config) -> None:
    """Refuse an override that the run's checkpoints cannot follow, naming the key."""
    for key in FIXED_ON_RESUME:
        old, new = _get(saved, key), _get(wanted, key)
        if old != new:
            raise UserError(
                f"{key} cannot change on resume: the checkpoints were trained with {key}={old}; "
                f"start a new run (another --run-dir) to train with {new}."
            )


def _get(cfg: Config, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


# ---------------------------------------------------------------- validation and budget

_BUDGET = re.compile(r"^\s*([\d.]+(?:e\d+)?)\s*([kmbg]?)\s*(steps?|tokens?|words?|epochs?)\s*$", re.I)
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


def parse_budget(text: str) -> tuple[float, str]:
    """'2000 steps' -> (2000, 'steps'); '50M tokens' -> (5e7, 'tokens'); '10M words' -> (1e7, 'words');
    '10 epochs' -> (10, 'epochs')."""
    m = _BUDGET.match(str(text))
    if not m:
        raise UserError(
            f"train.budget '{text}' must look like '2000 steps', '50M tokens', '10M words' or '10 epochs'."
        )
    amount = float(m.group(1)) * _SCALE[m.group(2).lower()]
    unit = m.group(3).lower().rstrip("s") + "s"
    if amount <= 0:
        raise UserError(f"train.budget must be positive, got '{text}'.")
    return amount, unit


BABYLM_MILESTONES = [*range(1, 10), *range(10, 100, 10), *range(100, 1001, 100)]  # millions of words
_WORDS = re.compile(r"([\d.]+(?:e\d+)?)\s*([kmbg]?)", re.I)
MILESTONE_PREFIX = "chck_"


def parse_milestones(text: str) -> list[int]:
    """train.save_at_words as word counts, ascending: 'babylm', '20K,50K' -> [20000, 50000], None -> []."""
    text = str(text or "").strip()
    if text.lower() == "babylm":
        return [m * 1_000_000 for m in BABYLM_MILESTONES]
    counts = set()
    for part in filter(None, (p.strip() for p in text.strip("[]").split(","))):
        m = _WORDS.fullmatch(part.strip("'\""))
        value = float(m.group(1)) * _SCALE[m.group(2).lower()] if m else 0.0
        if not (value >= 1 and value.is_integer()):
            raise UserError(
                f"train.save_at_words must be babylm or whole word counts separated by commas, "
                f"such as 1M,2M,5M; got '{text}'."
            )
        counts.add(int(value))
    return sorted(counts)


def milestone_name(words: int) -> str:
    """A milestone's checkpoint folder, named as the BabyLM pipeline names revisions: chck_1M, chck_20K."""
    for scale, suffix in ((1_000_000, "M"), (1_000, "K")):
        if words % scale == 0:
            return f"{MILESTONE_PREFIX}{words // scale}{suffix}"
    return f"{MILESTONE_PREFIX}{words}"


def milestone_words(name: str) -> int | None:
    """The word count a milestone folder is named by (milestone_name's inverse): chck_2M -> 2000000; None
    for any other name."""
    found = re.fullmatch(re.escape(MILESTONE_PREFIX) + r"(\d+(?:\.\d+)?)([KMB]?)", name)
    if not found:
        return None
    return round(float(found.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}[found.group(2)])


# Allowed values of numeric keys, as intervals; relations between keys are checked in `validate`.
_SIZE = f"(0, {2**24}]"  # tensor dimensions: larger ones overflow PyTorch's size arithmetic
RANGES = {
    "seed": f"[0, {2**32 - 1}]",  # what numpy and every torch generator accept, with room for seed + k
    "data.dev_fraction": "[0, 1)",
    "data.vocab_size": _SIZE,
    "data.seq_len": _SIZE,
    "model.hidden_size": _SIZE,
    "model.num_layers": "(0, 4096]",
    "model.num_heads": _SIZE,
    "model.ffn_size": _SIZE,
    "model.cond_dim": _SIZE,
    "model.position_buckets": f"[2, {2**24}]",
    "model.max_position": _SIZE,
    "model.dropout": "[0, 1)",
    "model.attention_dropout": "[0, 1)",
    "model.time_scale": "(0, 1000000]",
    "model.layer_norm_eps": "(0, 1)",
    "schedule.power": "[0, inf)",
    "schedule.eps": "[0, 1)",
    "schedule.mu": "(0, 1)",
    "schedule.sigma": "(0, inf)",
    "schedule.w_left": "[0, 1]",
    "schedule.mu_left": "(0, 1)",
    "schedule.sigma_left": "(0, inf)",
    "schedule.mu_right_start": "(0, 1)",
    "schedule.mu_right_end": "(0, 1)",
    "schedule.sigma_right": "(0, inf)",
    "schedule.k": "[0, inf)",
    "masking.p_freq": "[0, inf)",
    "objective.max_skipped": "[0, inf)",
    "train.global_batch": _SIZE,
    "train.micro_batch": _SIZE,
    "train.lr": "(0, inf)",
    "train.beta1": "[0, 1)",
    "train.beta2": "[0, 1)",
    "train.adam_eps": "(0, inf)",
    "train.weight_decay": "[0, inf)",
    "train.warmup": "[0, 1]",
    "train.cooldown": "[0, 1]",
    "train.min_lr_ratio": "[0, 1]",
    "train.clip": "[0, inf)",
    "train.ema": "[0, 1)",
    "train.threads": "[0, 4096]",
    "train.log_every": "(0, inf)",
    "train.dev_every": "[0, inf)",
    "train.dev_batches": "(0, inf)",
    "train.checkpoint_every": "(0, inf)",
    "train.keep_checkpoints": "(0, inf)",
    "eval.every": "[0, inf)",
    "eval.limit": "[0, inf)",
    "eval.draws": "(0, inf)",
    "samples.every": "[0, inf)",
    "samples.length": "[2, inf)",
    "samples.steps": "(0, inf)",
    "samples.temperature": "[0, inf)",
    "samples.top_p": "(0, 1]",
}


def _check_range(key: str, value: float, interval: str) -> None:
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    if above and below:
        return
    if interval == "(0, inf)":
        wanted = "positive"
    elif interval == "[0, inf)":
        wanted = "non-negative"
    elif high == math.inf:
        wanted = f"at least {low:g}"
    else:
        wanted = f"in {interval}"
    raise UserError(f"{key} must be {wanted}, got {value}.")


def validate(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise UserError(
                f"{key} must be one of {', '.join(allowed)}; got '{value}'."
                f"{_did_you_mean(str(value), list(allowed))}"
            )
    parse_budget(cfg.train.budget)
    parse_milestones(cfg.train.save_at_words)
    for key, interval in RANGES.items():
        _check_range(key, _get(cfg, key), interval)
    # a registered schedule's own parameters, by the intervals its class declares (`ranges`)
    extras = schedule_extras(cfg.schedule.name)
    for param, interval in SCHEDULES.trait(cfg.schedule.name, "ranges", {}).items():
        _check_range(f"schedule.{param}", getattr(cfg.schedule, param, extras.get(param)), interval)
    m, d = cfg.model, cfg.data
    if m.hidden_size % m.num_heads:
        raise UserError(
            f"model.hidden_size ({m.hidden_size}) must be divisible by model.num_heads ({m.num_heads})."
        )
    if d.seq_len > m.max_position:
        raise UserError(f"data.seq_len ({d.seq_len}) exceeds model.max_position ({m.max_position}).")
    if m.max_position <= m.position_buckets // 2 + 1:  # the logarithmic buckets span the offsets in between
        raise UserError(
            f"model.max_position ({m.max_position}) must exceed half of model.position_buckets "
            f"plus 1 ({m.position_buckets // 2 + 1})."
        )
    if d.vocab_size <= 16 + 256:
        raise UserError(f"data.vocab_size must exceed 272 (16 specials + 256 bytes), got {d.vocab_size}.")
    if d.source == "embedded" and d.path:
        raise UserError(
            f"data.path is set ({d.path}) but data.source is 'embedded'; "
            "set data.source=auto to train on the path."
        )
    t = cfg.train
    if t.global_batch % t.micro_batch:
        raise UserError(
            f"train.global_batch ({t.global_batch}) must be a multiple of train.micro_batch "
            f"({t.micro_batch}): each optimizer step accumulates whole micro-batches."
        )
    if cfg.train.warmup + cfg.train.cooldown > 1:
        raise UserError(
            "train.warmup and train.cooldown are fractions of the run and must add up to at most 1."
        )
    if cfg.eval.rate_value != "realised":
        try:
            rate = float(cfg.eval.rate_value)
        except ValueError:
            rate = -1.0
        if not 0 <= rate <= 1:
            raise UserError(
                f"eval.rate_value must be a rate in [0, 1] or 'realised', got '{cfg.eval.rate_value}'."
            )


# ---------------------------------------------------------------- output


def to_dict(cfg: Config) -> dict:
    """The config as plain data; the chosen schedule's extra parameters (schedule_extras) included."""
    data = dataclasses.asdict(cfg)
    for param, default in schedule_extras(cfg.schedule.name).items():
        data["schedule"][param] = getattr(cfg.schedule, param, default)
    return data


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def _entry(key: str, value: Any, indent: int) -> list[str]:
    # PyYAML breaks a long string at the first space past `width`: 70 keeps it within 80 columns
    text = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False, width=70 - indent)
    return [" " * indent + line for line in text.rstrip("\n").split("\n")]


def to_yaml_with_sources(resolved: Resolved, column: int = 44) -> str:
    """The config as YAML, each value followed by a comment saying where it comes from (`from PRESET`,
    `--set` or `default`), aligned so that lines stay within 80 characters; still valid YAML, read back
    as the same config. A value long enough to wrap over lines (a long description) goes without one."""
    lines: list[tuple[str, str | None]] = []  # (line, the source said to its right, if any)
    for top, value in to_dict(resolved.config).items():
        if isinstance(value, dict):
            lines.append((f"{top}:", None))
            entries = [(f"{top}.{key}", _entry(key, one, 2)) for key, one in value.items()]
        else:
            entries = [(top, _entry(top, value, 0))]
        for key, text in entries:
            source = resolved.sources[key]
            said = source if source in (SET, DEFAULT) else f"from {source}"
            lines += [(line, said if len(text) == 1 else None) for line in text]
    width = min(column, max(len(line) for line, said in lines if said)) + 2
    parents = "".join(
        f"{', which' if i else ''} extends {parent}" for i, parent in enumerate(resolved.chain[1:])
    )
    head = [
        f"# preset {resolved.chain[0]}{parents}",
        "# each value's source on the right: from PRESET, --set or default (built in)",
    ]
    return "\n".join(head + [f"{line:<{width}}# {said}" if said else line for line, said in lines]) + "\n"
