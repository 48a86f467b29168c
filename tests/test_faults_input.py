"""Faults in what a user types or hands over: settings that would ruin a run or end in a traceback,
YAML that says one key twice or is not UTF-8, outputs that name a folder, lengths past the model's
positions, eval files with a byte-order mark, an unreachable hub, a read-only run folder. Each ends
in one sentence and exit 2, with nothing already written lost."""

import json
import math
import shutil
import subprocess
from dataclasses import fields

import pytest

from core.config import all_keys, apply_overrides, load_config
from core.errors import UserError
from tests.helpers import error_line, mdlm

SHORT = ["--preset", "smoke", "--set", "train.budget=3 steps", "--set", "train.threads=1"]


# ---------------------------------------------------------------- settings, checked before anything runs


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["schedule.name=gaussian", "schedule.sigma=0"], "schedule.sigma"),
        (["schedule.name=log-linear", "schedule.eps=1"], "schedule.eps"),
        (["model.dropout=2"], "model.dropout"),
        (["model.attention_dropout=1"], "model.attention_dropout"),
        (["model.attention_dropout=-0.1"], "model.attention_dropout"),
        (["model.position_buckets=0"], "model.position_buckets"),
        (["train.threads=-3"], "train.threads"),
        (["train.lr=nan"], "train.lr"),
        (["train.lr=-0.01"], "train.lr"),
        (["train.lr=inf"], "train.lr"),
        (["train.beta2=nan"], "train.beta2"),
        (["seed=99999999999999999999"], "seed"),
        (["seed=12345678901234567890"], "seed"),  # would be trained as ...67168: a float cannot hold it
        (["seed=-1"], "seed"),
    ],
)
def test_settings_that_ruin_a_run_are_refused_before_anything_is_written(tmp_path, overrides, key):
    sets = [arg for override in overrides for arg in ("--set", override)]
    error = error_line(alone=True, result=mdlm("run", *SHORT, *sets, "--run-dir", tmp_path / "r"))
    assert key in error
    assert not (tmp_path / "r").exists()


def test_every_float_key_refuses_nan_and_inf():
    from core.config import Config, _sections

    float_keys = [
        f"{section}.{f.name}"
        for section, cls in _sections().items()
        for f in fields(cls)
        if f.type in ("float", float)
    ]
    assert "train.lr" in float_keys and "schedule.sigma" in float_keys
    for key in float_keys:
        for value in ("nan", "inf", "-inf", ".nan"):
            with pytest.raises(UserError, match=f"{key} must be a finite number"):
                apply_overrides(Config(), [f"{key}={value}"])


def test_integers_are_kept_exactly_and_seeds_fit_the_generators():
    big = "train.checkpoint_every=12345678901234567"  # past 2**53, where a float would round it
    cfg = apply_overrides(load_config("smoke"), ["seed=4294967295", big])
    assert cfg.seed == 2**32 - 1 and cfg.train.checkpoint_every == 12345678901234567
    assert "seed" in all_keys()
    with pytest.raises(UserError, match=r"seed must be in \[0, 4294967295\]"):
        apply_overrides(load_config("smoke"), ["seed=4294967296"])


def test_a_preset_file_that_is_not_utf8_is_one_sentence(tmp_path):
    preset = tmp_path / "latin1.yaml"
    preset.write_bytes('description: "caf\xe9"\n'.encode("latin-1"))
    error = error_line(alone=True, result=mdlm("inspect", "--preset", preset))
    assert "latin1.yaml is not UTF-8" in error and "0xe9" in error


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("train:\n  lr: 1.0e-3\n  budget: 3 steps\n  lr: 2.0e-3\n", "lr", 4),
        ("train:\n  lr: 1.0e-3\nmodel:\n  hidden_size: 64\ntrain:\n  budget: 3 steps\n", "train", 5),
    ],
)
def test_a_key_given_twice_in_yaml_is_refused_by_name_and_line(tmp_path, text, key, line):
    preset = tmp_path / "twice.yaml"
    preset.write_text(text)
    error = error_line(alone=True, result=mdlm("inspect", "--preset", preset))
    assert f"twice.yaml sets '{key}' twice (again at line {line})" in error


def test_the_memory_estimate_refuses_a_model_that_cannot_fit(monkeypatch):
    from core import memory
    from core.model import count_parameters

    for name in ("smoke", "cpu-small", "bimodal-p0"):
        cfg = load_config(name)
        assert memory.count_parameters(cfg) == count_parameters(cfg.model, cfg.data.vocab_size)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)
    assert memory.check_fits(load_config("smoke"), "cpu").total_bytes < 2**30
    sizes = ["model.hidden_size=8192", "model.ffn_size=32768", "model.num_heads=64"]
    big = apply_overrides(load_config("smoke"), sizes)
    refusal = r"needs about [\d.,]+ GiB to train \([\d,]+ parameters.*only 1.0 GiB is available on cpu"
    with pytest.raises(UserError, match=refusal):
        memory.check_fits(big, "cpu")


def test_run_refuses_a_micro_batch_too_big_for_memory(tmp_path):
    result = mdlm(
        "run",
        *SHORT,
        "--set",
        "train.global_batch=16777216",
        "--set",
        "train.micro_batch=16777216",
        "--run-dir",
        tmp_path / "r",
    )
    error = error_line(alone=True, result=result)
    assert "needs about" in error and "available" in error
    assert not (tmp_path / "r").exists(), "refused before anything was written"


@pytest.mark.slow
def test_a_vocab_size_beyond_the_tokenizer_is_said(tmp_path):
    result = mdlm(
        "run",
        *SHORT,
        "--set",
        "data.vocab_size=16000",
        "--set",
        "train.dev_every=0",
        "--run-dir",
        tmp_path / "r",
    )
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    said = [line for line in lines if "warning" in line and "vocab_size" in line]
    assert len(said) == 1 and "14,865" in said[0]


@pytest.mark.slow
def test_a_vocab_size_far_beyond_the_tokenizer_is_refused_before_the_model_is_built(tmp_path):
    result = mdlm("run", *SHORT, "--set", "data.vocab_size=200000", "--run-dir", tmp_path / "r")
    error = error_line(alone=True, result=result)
    assert "14,865 ids" in error and "data.vocab_size=14865" in error
    assert not list((tmp_path / "r").glob("checkpoints/step-*")), "no 26M-parameter model was trained"


# ---------------------------------------------------------------- eval and sample on a trained run


@pytest.mark.slow
def test_eval_with_no_draws_is_one_sentence(finished_smoke_run):
    assert "eval.draws must be positive" in error_line(
        alone=True,
        result=mdlm("eval", finished_smoke_run, "--backend", "nelbo", "--draws", "0", "--limit", "2"),
    )


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--json", "--predictions"])
def test_eval_output_that_names_a_folder_is_refused_before_scoring(finished_smoke_run, tmp_path, option):
    def reports():
        return sorted((finished_smoke_run / "eval").glob("*"))

    before = reports()
    error = error_line(
        alone=True,
        result=mdlm("eval", finished_smoke_run, "--suite", "builtin", "--limit", "2", option, tmp_path),
    )
    assert f"{option} {tmp_path} is a folder" in error
    assert reports() == before, "refused before anything was scored"
    nowhere = tmp_path / "no-such-folder" / "out.json"
    error = error_line(
        alone=True,
        result=mdlm("eval", finished_smoke_run, "--suite", "builtin", "--limit", "2", option, nowhere),
    )
    assert f"the folder {nowhere.parent} does not exist" in error
    assert reports() == before, "refused before anything was scored"


@pytest.mark.slow
def test_sample_trace_that_names_a_folder_is_refused(finished_smoke_run, tmp_path):
    error = error_line(alone=True, result=mdlm("sample", finished_smoke_run, "--trace", tmp_path))
    assert f"--trace {tmp_path} is a folder" in error


@pytest.mark.slow
def test_sample_longer_than_the_model_is_refused(finished_smoke_run):
    error = error_line(
        alone=True, result=mdlm("sample", finished_smoke_run, "--length", "1000", "--steps", "2")
    )
    assert "Sample length 1000 exceeds the model's 512 positions" in error


@pytest.mark.slow
def test_sample_mask_count_beyond_the_length_is_refused(finished_smoke_run):
    error = error_line(
        alone=True, result=mdlm("sample", finished_smoke_run, "--prompt", "The <mask>*99999999999999999999")
    )
    assert "more than the sample length 64" in error


@pytest.mark.slow
def test_eval_skips_and_counts_items_longer_than_the_model(finished_smoke_run, tmp_path):
    long_text = " ".join(["and the king said unto them"] * 120)  # about 720 tokens
    suite = tmp_path / "mixed.jsonl"
    pairs = [("The king is here.", "The king are here."), (long_text, long_text + " king")]
    suite.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n" for g, b in pairs))
    out = tmp_path / "report.json"
    run = shutil.copytree(
        finished_smoke_run, tmp_path / "run"
    )  # the report goes into the run: not the shared one
    result = mdlm("eval", run, "--suite", suite, "--json", out, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mixed: 1 of 2 items skipped, longer than the model's 512 positions" in result.stdout
    report = json.loads(out.read_text())
    assert report["n"] == 1 and report["skipped"] == 1


@pytest.mark.slow
def test_eval_reads_jsonl_with_a_byte_order_mark(finished_smoke_run, tmp_path):
    suite = tmp_path / "bom.jsonl"
    line = json.dumps({"sentence_good": "The king is here.", "sentence_bad": "The king are here."})
    suite.write_bytes(b"\xef\xbb\xbf" + (line + "\n").encode())
    run = shutil.copytree(
        finished_smoke_run, tmp_path / "run"
    )  # the report goes into the run: not the shared one
    result = mdlm("eval", run, "--suite", suite)
    assert result.returncode == 0, result.stderr
    assert "macro average" in result.stdout


@pytest.mark.slow
def test_unreachable_hub_suite_ends_in_one_sentence_without_library_noise(
    finished_smoke_run, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refused at once; the hub then retries for 23 s
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached copy to fall back on
    error = error_line(
        alone=True, result=mdlm("eval", finished_smoke_run, "--suite", "hf:nyu-mll/blimp:adjunct_island")
    )
    assert "Cannot load Hugging Face dataset 'nyu-mll/blimp'" in error


@pytest.mark.slow
def test_eval_in_a_read_only_run_prints_the_results_then_one_sentence(tmpfs, finished_smoke_run, tmp_path):
    read_only_mount = tmpfs()
    run_dir = read_only_mount / "run"
    subprocess.run(["cp", "-r", str(finished_smoke_run), str(run_dir)], check=True)
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    out = tmp_path / "elsewhere.json"
    result = mdlm("eval", run_dir, "--suite", "dev,builtin", "--limit", "2", "--json", out)
    error = error_line(result)  # the dev loss says where its data came from on stderr too
    assert "macro average" in result.stdout, "the results come first, every suite's"
    assert "could not be saved in" in error and "Read-only file system" in error
    assert f"they are kept in {out}" in error
    dev, builtin = json.loads(out.read_text())
    assert math.isfinite(dev["dev_nelbo_per_token"]), "what can be written still is"
    assert math.isfinite(builtin["macro"]), "the suites after a dev loss that was not saved are scored"
