"""Presets that inherit: `extends: NAME` (or a YAML file beside the preset), deep-merged by section, with
`mdlm-tui inspect` saying where each value comes from."""

import json
import warnings

import pytest
import yaml

from core.config import (
    RenamedKey,
    base_names,
    from_dict,
    load_config,
    preset_names,
    resolve_config,
    to_dict,
    to_yaml_with_sources,
)
from core.errors import UserError
from tests.helpers import error_line, mdlm

# What every shipped preset resolved to before the paper presets were rewritten as `extends: paper` plus
# a few lines each (dumped from the tree then): the built-in defaults, and each preset's other values.
# The rewrite must change none of them.
DEFAULTS = {
    "name": "custom",
    "description": "",
    "seed": 0,
    "data.source": "auto",
    "data.path": None,
    "data.dev_path": None,
    "data.dev_fraction": 0.05,
    "data.hf_config": None,
    "data.hf_split": "train",
    "data.hf_text_field": "text",
    "data.vocab_size": 16384,
    "data.seq_len": 128,
    "data.cache_dir": None,
    "model.hidden_size": 768,
    "model.num_layers": 12,
    "model.num_heads": 12,
    "model.ffn_size": 2560,
    "model.cond_dim": 128,
    "model.time_conditioning": True,
    "model.position_buckets": 32,
    "model.max_position": 512,
    "model.dropout": 0.1,
    "model.attention_dropout": 0.1,
    "model.time_scale": 1.0,
    "model.position_terms": "ltg",
    "model.layer_norm_eps": 1e-07,
    "model.init": "released",
    "model.ffn_gelu": "tanh",
    "model.position_dropout": "per-layer",
    "model.head_dropout": True,
    "schedule.name": "cosine",
    "schedule.power": 1.0,
    "schedule.eps": 0.001,
    "schedule.mu": 0.3,
    "schedule.sigma": 0.1,
    "schedule.w_left": 0.6,
    "schedule.mu_left": 0.12,
    "schedule.sigma_left": 0.02,
    "schedule.mu_right_start": 0.4,
    "schedule.mu_right_end": 0.85,
    "schedule.sigma_right": 0.08,
    "schedule.k": 1.0,
    "masking.kind": "uniform",
    "masking.statistics": "sequence",
    "masking.p_freq": 0.02,
    "masking.curriculum": True,
    "objective.subs": True,
    "objective.on_nonfinite": "fail",
    "objective.max_skipped": 100,
    "train.budget": "1000 steps",
    "train.global_batch": 32,
    "train.micro_batch": 32,
    "train.optimizer": "lamb",
    "train.lr": 0.007,
    "train.beta1": 0.9,
    "train.beta2": 0.98,
    "train.adam_eps": 1e-08,
    "train.weight_decay": 0.1,
    "train.warmup": 0.016,
    "train.cooldown": 0.016,
    "train.min_lr_ratio": 0.1,
    "train.clip": 2.0,
    "train.first_lr_zero": True,
    "train.lamb_trust": "per-matrix",
    "train.ema": 0.999,
    "train.device": "auto",
    "train.precision": "auto",
    "train.tf32": True,
    "train.compile": False,
    "train.threads": 0,
    "train.log_every": 10,
    "train.dev_every": 500,
    "train.dev_batches": 10,
    "train.checkpoint_every": 1000,
    "train.keep_checkpoints": 3,
    "train.save_at_words": None,
    "eval.every": 0,
    "eval.suites": "builtin",
    "eval.data_dir": None,
    "eval.limit": 100,
    "eval.backend": "pll",
    "eval.rate_value": "0",
    "eval.draws": 16,
    "eval.weights": "ema",
    "samples.every": 0,
    "samples.length": 64,
    "samples.steps": 32,
    "samples.sampler": "ancestral",
    "samples.temperature": 1.0,
    "samples.top_p": 1.0,
    "samples.prompt": None,
}
PINNED = {
    "bimodal-p0": {
        "name": "bimodal-p0",
        "description": (
            "Paper size, bimodal gaussian schedule, p = 0 (the paper's best), "
            "frequency masking, sequence length 512; 256 x 512 tokens a step"
        ),
        "data.source": "babylm",
        "data.seq_len": 512,
        "schedule.name": "bimodal",
        "schedule.power": 0.0,
        "masking.kind": "frequency",
        "objective.subs": False,
        "train.budget": "10 epochs",
        "train.global_batch": 256,
        "train.log_every": 50,
        "train.dev_every": 2000,
        "train.dev_batches": 20,
        "train.checkpoint_every": 2000,
    },
    "bimodal-p0.1": {
        "name": "bimodal-p0.1",
        "description": (
            "Paper size, bimodal gaussian schedule, p = 0.1 (the released code's setting), "
            "frequency masking, sequence length 512; 256 x 512 tokens a step"
        ),
        "data.source": "babylm",
        "data.seq_len": 512,
        "schedule.name": "bimodal",
        "schedule.power": 0.1,
        "masking.kind": "frequency",
        "objective.subs": False,
        "train.budget": "10 epochs",
        "train.global_batch": 256,
        "train.log_every": 50,
        "train.dev_every": 2000,
        "train.dev_batches": 20,
        "train.checkpoint_every": 2000,
    },
    "bimodal-p1": {
        "name": "bimodal-p1",
        "description": (
            "Paper size, bimodal gaussian schedule, p = 1, frequency masking, "
            "sequence length 512; 256 x 512 tokens a step"
        ),
        "data.source": "babylm",
        "data.seq_len": 512,
        "schedule.name": "bimodal",
        "masking.kind": "frequency",
        "objective.subs": False,
        "train.budget": "10 epochs",
        "train.global_batch": 256,
        "train.log_every": 50,
        "train.dev_every": 2000,
        "train.dev_batches": 20,
        "train.checkpoint_every": 2000,
    },
    "cosine": {
        "name": "cosine",
        "description": (
            "The paper's submission: paper size, cosine schedule, p = 1, "
            "frequency masking; 1024 x 128 tokens a step"
        ),
        "data.source": "babylm",
        "masking.kind": "frequency",
        "objective.subs": False,
        "train.budget": "10 epochs",
        "train.global_batch": 1024,
        "train.log_every": 50,
        "train.dev_every": 2000,
        "train.dev_batches": 20,
        "train.checkpoint_every": 2000,
    },
    "cpu-small": {
        "name": "cpu-small",
        "description": (
            "Small model that learns in about 15 minutes on 2 CPU cores (point data.path at a BabyLM folder)"
        ),
        "data.vocab_size": 4096,
        "data.seq_len": 64,
        "model.hidden_size": 128,
        "model.num_layers": 4,
        "model.num_heads": 4,
        "model.ffn_size": 384,
        "model.cond_dim": 64,
        "model.dropout": 0.0,
        "model.attention_dropout": 0.0,
        "masking.kind": "frequency",
        "objective.subs": False,
        "train.budget": "5000 steps",
        "train.lr": 0.005,
        "train.warmup": 0.03,
        "train.cooldown": 0.03,
        "train.ema": 0.99,
        "train.log_every": 25,
        "train.dev_every": 500,
        "train.dev_batches": 8,
        "train.checkpoint_every": 500,
    },
    "linear": {
        "name": "linear",
        "description": (
            "Paper size (126.6M), linear schedule, p = 1, frequency masking; 1024 x 128 tokens a step"
        ),
        "data.source": "babylm",
        "schedule.name": "linear",
        "masking.kind": "frequency",
        "objective.subs": False,
        "train.budget": "10 epochs",
        "train.global_batch": 1024,
        "train.log_every": 50,
        "train.dev_every": 2000,
        "train.dev_batches": 20,
        "train.checkpoint_every": 2000,
    },
    "smoke": {
        "name": "smoke",
        "description": "CPU smoke test: tiny model on the embedded corpus, under 2 minutes on 2 cores",
        "data.vocab_size": 4096,
        "data.seq_len": 64,
        "model.hidden_size": 128,
        "model.num_layers": 2,
        "model.num_heads": 4,
        "model.ffn_size": 384,
        "model.cond_dim": 64,
        "model.dropout": 0.0,
        "model.attention_dropout": 0.0,
        "masking.kind": "frequency",
        "train.budget": "500 steps",
        "train.micro_batch": 16,
        "train.optimizer": "adamw",
        "train.lr": 0.003,
        "train.weight_decay": 0.01,
        "train.warmup": 0.05,
        "train.cooldown": 0.05,
        "train.ema": 0.99,
        "train.dev_every": 100,
        "train.dev_batches": 4,
        "train.checkpoint_every": 100,
        "train.keep_checkpoints": 2,
    },
}


PAPER_PRESETS = ["linear", "cosine", "bimodal-p0", "bimodal-p1", "bimodal-p0.1"]


def _flat(cfg) -> dict:
    out = {}
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict):
            out.update({f"{key}.{name}": one for name, one in value.items()})
        else:
            out[key] = value
    return out


def _typed(values: dict) -> dict:
    return {key: (type(value).__name__, value) for key, value in values.items()}  # 0 is not 0.0


@pytest.mark.parametrize("name", sorted(PINNED))
def test_every_preset_resolves_to_exactly_its_values_before_extends(name):
    resolved = _flat(load_config(name))
    # the keys pinned (a key added to the config later has no value to keep)
    assert _typed({key: resolved[key] for key in DEFAULTS}) == _typed({**DEFAULTS, **PINNED[name]})


def test_the_pins_cover_the_shipped_presets_and_the_paper_ones_extend_one_base():
    assert set(PINNED) <= set(preset_names())
    assert base_names() == ["paper"] and "paper" not in preset_names()
    for name in PAPER_PRESETS:
        chain = resolve_config(name).chain
        assert chain[0] == name and chain[-1] == "paper", chain
    assert resolve_config("bimodal-p0.1").chain == ["bimodal-p0.1", "bimodal-p0", "paper"]
    assert load_config("paper").name == "paper"  # a base still loads, for inspect and for extends


def test_a_users_file_extends_a_shipped_preset_by_name_and_changes_one_key(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: cosine\ntrain:\n  lr: 1.0e-3\n")
    cfg, cosine = load_config(str(mine)), load_config("cosine")
    assert cfg.train.lr == 1e-3
    # deep merge: the rest of train, and every other section, stays the parent's
    cfg.train.lr = cosine.train.lr
    assert (cfg.name, cfg.description) == ("mine", "extends cosine")  # never the parent's, silently
    cfg.name, cfg.description = cosine.name, cosine.description
    assert cfg == cosine
    # its own description, and a name it sets, are kept; a parent's name never passes to a child
    mine.write_text("extends: cosine\ndescription: my cosine\n")
    assert (load_config(str(mine)).name, load_config(str(mine)).description) == ("mine", "my cosine")
    (tmp_path / "named.yaml").write_text("name: special\ndescription: named\n")
    mine.write_text("extends: named.yaml\n")
    assert (load_config(str(mine)).name, load_config(str(mine)).description) == ("mine", "extends named")


def test_a_chain_resolves_each_parent_beside_its_child(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "small.yaml").write_text(
        "extends: smoke\ndescription: smaller\nmodel:\n  num_layers: 1\ntrain:\n  lr: 1.0e-3\n"
    )
    (tmp_path / "recipes" / "fast.yaml").write_text("extends: small.yaml\ntrain:\n  budget: 20 steps\n")
    (tmp_path / "mine.yaml").write_text("extends: recipes/fast.yaml\ntrain:\n  lr: 2.0e-3\n")
    monkeypatch.chdir(tmp_path / "recipes")  # paths in `extends` do not depend on where you stand
    resolved = resolve_config(str(tmp_path / "mine.yaml"), ["seed=3"])
    cfg, sources = resolved.config, resolved.sources
    assert resolved.chain == ["mine", "fast", "small", "smoke"]
    assert (cfg.train.lr, cfg.train.budget, cfg.model.num_layers, cfg.seed) == (2e-3, "20 steps", 1, 3)
    assert cfg.model.hidden_size == load_config("smoke").model.hidden_size
    assert (cfg.name, cfg.description) == ("mine", "extends fast")
    assert {key: sources[key] for key in ("train.lr", "train.budget", "model.num_layers", "seed")} == {
        "train.lr": "mine",
        "train.budget": "fast",
        "model.num_layers": "small",
        "seed": "--set",
    }
    assert (sources["model.hidden_size"], sources["model.init"], sources["name"]) == (
        "smoke",
        "default",
        "mine",
    )
    assert set(sources) == set(_flat(cfg))


def test_a_cycle_is_refused_naming_the_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: sub/c.yaml\n")
    (tmp_path / "sub" / "c.yaml").write_text("extends: ../a.yaml\n")
    with pytest.raises(UserError) as e:
        load_config(str(tmp_path / "a.yaml"))
    message = str(e.value)
    assert "circle" in message and message.count(".") >= 4
    assert [part.rsplit("/", 2)[-1] for part in message.split(": ")[1].split(";")[0].split(" -> ")] == [
        "a.yaml",
        "b.yaml",
        "c.yaml",
        "a.yaml",
    ]
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    with pytest.raises(UserError, match=r"circle: .*self.yaml -> .*self.yaml;"):
        load_config(str(tmp_path / "self.yaml"))


def test_a_missing_parent_is_refused_naming_the_file(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: cosin\n")
    with pytest.raises(
        UserError, match=r"mine.yaml extends 'cosin', which is not a preset. Did you mean 'cosine'"
    ):
        load_config(str(mine))
    mine.write_text("extends: base.yaml\n")
    with pytest.raises(UserError, match=r"mine.yaml extends base.yaml, but there is no file .*base.yaml\."):
        load_config(str(mine))
    mine.write_text("extends: cosine.yaml\n")  # a path, beside the file: the preset is by name
    with pytest.raises(UserError, match=r"write `extends: cosine`"):
        load_config(str(mine))
    (tmp_path / "base.yaml").write_text("seed: 1\n")
    mine.write_text("extends: base\n")  # a name is a shipped preset: the file beside it needs .yaml
    with pytest.raises(UserError, match=r"write `extends: base.yaml`"):
        load_config(str(mine))


@pytest.mark.parametrize(
    "value, said",
    [("[cosine, smoke]", "a list"), ("", "nothing"), ("3", "the number 3"), ("{name: cosine}", "a mapping")],
)
def test_extends_of_a_wrong_type_is_refused(tmp_path, value, said):
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"extends: {value}\n")
    with pytest.raises(
        UserError, match=rf"'extends' in .*mine.yaml must be one preset name or YAML file.*{said}"
    ):
        load_config(str(mine))


def test_an_unknown_key_in_a_child_names_the_child(tmp_path):
    (tmp_path / "parent.yaml").write_text("extends: cosine\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\ntrain:\n  lrr: 1.0e-3\n")
    with pytest.raises(
        UserError, match=r"^child.yaml: Unknown config key 'train.lrr'. Did you mean 'train.lr'\?"
    ):
        load_config(str(child))
    child.write_text("extends: parent.yaml\ntrain:\n  extends: smoke\n")  # meta keys are top-level only
    with pytest.raises(UserError, match="child.yaml: Unknown config key 'train.extends'"):
        load_config(str(child))


def test_a_renamed_key_in_a_child_reads_against_the_parents_batch(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: smoke\ntrain:\n  grad_accum: 4\n")  # smoke: micro-batch 16
    with pytest.warns(
        RenamedKey,
        match=r"child.yaml: train.grad_accum=4 is now train.micro_batch=16 and train.global_batch=64",
    ):
        resolved = resolve_config(str(child))
    assert (resolved.config.train.micro_batch, resolved.config.train.global_batch) == (16, 64)
    assert resolved.sources["train.global_batch"] == "child"


def _sources(lines: list[str]) -> dict:
    """The comment to the right of each key of inspect's YAML, by dotted key."""
    found, section = {}, ""
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        if not line.startswith(" "):
            section = line.split(":")[0] if line.rstrip().endswith(":") else ""
        if "  # " in line:
            key = line.split(":")[0].strip()
            found[f"{section}.{key}" if line.startswith(" ") else key] = line.rsplit("  # ", 1)[1]
    return found


def test_the_sourced_yaml_reads_back_as_the_same_config_within_80_columns():
    resolved = resolve_config("bimodal-p1", ["train.lr=1e-3"])
    text = to_yaml_with_sources(resolved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert from_dict(yaml.safe_load(text)) == resolved.config
    lines = text.splitlines()
    assert lines[0] == "# preset bimodal-p1 extends bimodal-p0, which extends paper"
    assert max(map(len, lines)) <= 80
    said = _sources(lines)
    assert "description" not in said and said["name"] == "from bimodal-p1"  # a wrapped value goes without
    assert (said["schedule.power"], said["data.seq_len"], said["train.lr"], said["model.init"]) == (
        "from bimodal-p1",
        "from bimodal-p0",
        "--set",
        "default",
    )


def test_inspect_shows_where_each_value_comes_from(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: bimodal-p0\nschedule:\n  power: 0.5\n")
    result = mdlm("inspect", "--preset", mine, "--set", "train.lr=1e-3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# preset mine extends bimodal-p0, which extends paper"
    assert max(map(len, lines)) <= 80 and lines[-1] == "# parameters: 126,636,800"
    source = _sources(lines)
    assert source["schedule.power"] == "from mine" and source["name"] == "from mine"
    assert source["description"] == "from mine"  # "extends bimodal-p0": never the parent's, silently
    assert (
        source["data.seq_len"],
        source["model.hidden_size"],
        source["train.lr"],
        source["masking.statistics"],
    ) == (
        "from bimodal-p0",
        "from paper",
        "--set",
        "default",
    )

    report = json.loads(mdlm("inspect", "--preset", "bimodal-p1", "--set", "seed=2", "--json").stdout)
    assert report["parameters"] == 126_636_800 and report["config"]["schedule"]["power"] == 1.0  # as before
    assert report["chain"] == ["bimodal-p1", "bimodal-p0", "paper"]
    assert {
        key: report["sources"][key] for key in ("schedule.power", "data.seq_len", "train.lr", "seed")
    } == {
        "schedule.power": "bimodal-p1",
        "data.seq_len": "bimodal-p0",
        "train.lr": "paper",
        "seed": "--set",
    }
    assert report["sources"]["model.init"] == "default" and len(report["sources"]) == len(
        _flat(load_config("smoke"))
    )


def test_an_extends_error_through_the_cli_is_one_sentence(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: mine.yaml\n")
    assert "circle" in error_line(alone=True, result=mdlm("inspect", "--preset", mine))


def test_presets_lists_the_base_last_and_marked():
    lines = mdlm("presets").stdout.strip().splitlines()
    assert [line.split()[0] for line in lines][:-1] == preset_names()
    assert lines[-1].split()[:2] == ["paper", "[base]"]


def test_a_base_is_not_trained_on_its_own(tmp_path):
    from tests.helpers import mdlm

    result = mdlm("run", "--preset", "paper", "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and "paper is a base recipe" in result.stderr
    assert not (tmp_path / "r").exists()
