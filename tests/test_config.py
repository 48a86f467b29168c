import pytest

from core.config import (
    Config,
    apply_overrides,
    from_dict,
    load_config,
    parse_budget,
    preset_names,
    read_yaml,
    to_yaml,
)
from core.errors import UserError

PAPER_PRESETS = ["linear", "cosine", "bimodal-p0", "bimodal-p1", "bimodal-p0.1"]


def test_every_required_preset_ships():
    assert {"smoke", "cpu-small", *PAPER_PRESETS} <= set(preset_names())


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_follow_the_paper_recipe(name):
    cfg = load_config(name)
    m, t = cfg.model, cfg.train
    assert (m.hidden_size, m.num_layers, m.num_heads, m.ffn_size, cfg.data.vocab_size) == (
        768,
        12,
        12,
        2560,
        16384,
    )
    assert (t.optimizer, t.lr, t.beta1, t.beta2, t.weight_decay, t.clip, t.ema) == (
        "lamb",
        7e-3,
        0.9,
        0.98,
        0.1,
        2.0,
        0.999,
    )
    assert (t.warmup, t.cooldown, t.min_lr_ratio) == (0.016, 0.016, 0.1)
    assert cfg.masking.kind == "frequency" and cfg.masking.p_freq == 0.02 and cfg.masking.curriculum
    assert t.global_batch * cfg.data.seq_len == 1024 * 128 and t.micro_batch == 32  # as released
    assert parse_budget(t.budget) == (10, "epochs")


# The released code's conventions, and the earlier variant of each, one --set away.
RELEASED = {
    "masking.statistics": "sequence",
    "model.time_scale": 1.0,
    "model.position_terms": "ltg",
    "model.layer_norm_eps": 1e-7,
    "model.init": "released",
    "model.ffn_gelu": "tanh",
    "model.position_dropout": "per-layer",
    "model.head_dropout": True,
    "train.lamb_trust": "per-matrix",
    "objective.subs": False,
    "train.first_lr_zero": True,
}
EARLIER = {
    "masking.statistics": "maskable",
    "model.time_scale": 1000.0,
    "model.position_terms": "mirrored",
    "model.layer_norm_eps": 1e-5,
    "model.init": "plain",
    "model.ffn_gelu": "exact",
    "model.position_dropout": "shared",
    "model.head_dropout": False,
    "train.lamb_trust": "per-tensor",
    "objective.subs": True,
    "train.first_lr_zero": False,
}


def _value(cfg, key):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_resolve_to_the_released_conventions(name):
    cfg = load_config(name)
    assert {key: _value(cfg, key) for key in RELEASED} == RELEASED
    for key, value in EARLIER.items():
        assert _value(load_config(name, [f"{key}={value}"]), key) == value


def test_bimodal_presets_differ_only_in_power():
    powers = {name: load_config(name).schedule.power for name in ("bimodal-p0", "bimodal-p1", "bimodal-p0.1")}
    assert powers == {"bimodal-p0": 0.0, "bimodal-p1": 1.0, "bimodal-p0.1": 0.1}
    s = load_config("bimodal-p0").schedule
    assert (
        s.name,
        s.w_left,
        s.mu_left,
        s.sigma_left,
        s.mu_right_start,
        s.mu_right_end,
        s.sigma_right,
        s.k,
    ) == ("bimodal", 0.6, 0.12, 0.02, 0.40, 0.85, 0.08, 1.0)


def test_overrides_are_typed():
    cfg = apply_overrides(
        load_config("smoke"),
        ["train.lr=3e-4", "model.time_conditioning=false", "data.path=/x", "train.budget=50 steps"],
    )
    assert cfg.train.lr == 3e-4 and cfg.model.time_conditioning is False and cfg.data.path == "/x"
    assert cfg.train.budget == "50 steps"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "Did you mean 'train.lr'"),
        ("schedule.powr=0", "Did you mean 'schedule.power'"),
        ("train.lr=fast", "train.lr must be a number"),
        ("train.micro_batch=1.5", "train.micro_batch must be an integer"),
        ("train.global_batch=40", "must be a multiple of train.micro_batch"),
        ("schedule.name=bimodl", "Did you mean 'bimodal'"),
        ("train.budget=ten steps", "train.budget"),
        ("model.num_heads=5", "divisible"),
        ("noequals", "key=value"),
    ],
)
def test_bad_overrides_explain_themselves(override, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(load_config("smoke"), [override])


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(UserError, match="Did you mean 'smoke'"):
        load_config("smok")


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n  budget: 3 steps\n")
    with pytest.raises(UserError, match=r"bad.yaml is not valid YAML at line \d+"):
        load_config(str(bad))


def test_unknown_key_in_a_preset_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match="mine.yaml: Unknown config key 'train.learning_rate'"):
        load_config(str(f))


def test_saved_config_round_trips(tmp_path):
    cfg = apply_overrides(load_config("bimodal-p0"), ["data.path=/data/train_100M"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert from_dict(read_yaml(path)) == cfg


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("2000 steps", (2000, "steps")),
        ("50M tokens", (5e7, "tokens")),
        ("10 epochs", (10, "epochs")),
        ("1 epoch", (1, "epochs")),
        ("1.5k steps", (1500, "steps")),
    ],
)
def test_budget_forms(text, parsed):
    assert parse_budget(text) == parsed


def test_defaults_validate():
    apply_overrides(Config(), [])


def test_the_old_batch_keys_still_read_and_say_what_they_became(tmp_path):
    import yaml

    from core.config import RenamedKey, load_saved_config, to_dict

    with pytest.warns(
        RenamedKey,
        match=r"train.batch_size=8 and train.grad_accum=4 are now train.micro_batch=8 "
        r"and train.global_batch=32",
    ):
        cfg = apply_overrides(load_config("smoke"), ["train.batch_size=8", "train.grad_accum=4"])
    assert (cfg.train.micro_batch, cfg.train.global_batch) == (8, 32)
    with pytest.warns(RenamedKey, match="train.grad_accum=2 is now"):  # the micro-batch stays the preset's
        cfg = apply_overrides(load_config("smoke"), ["train.grad_accum=2"])
    assert (cfg.train.micro_batch, cfg.train.global_batch) == (16, 32)

    # A run folder written before the rename: its config.yaml has the old pair, and loads whole.
    old = to_dict(load_config("smoke"))
    del old["train"]["global_batch"], old["train"]["micro_batch"]
    old["train"].update(batch_size=32, grad_accum=2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(RenamedKey):
        saved = load_saved_config(path)
    assert (saved.train.micro_batch, saved.train.global_batch) == (32, 64)
    with pytest.warns(RenamedKey):
        assert from_dict({"train": {"batch_size": 4}}).train.global_batch == 4


def test_a_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "smoke").mkdir()  # the run folder of `mdlm-tui run --preset smoke --run-dir smoke`
    monkeypatch.chdir(tmp_path)
    assert load_config("smoke").name == "smoke"
