"""`mdlm-tui sample` and `mdlm-tui eval` on a real (briefly trained) run."""

import json

import pytest

from core.runs import read_jsonl
from tests.helpers import mdlm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = mdlm(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        run_dir,
        "--set",
        "train.budget=20 steps",
        "--set",
        "train.checkpoint_every=10",
        "--set",
        "train.dev_every=0",
        "--set",
        "eval.every=10",
        "--set",
        "eval.limit=5",
        "--set",
        "samples.every=10",
        "--set",
        "samples.length=24",
        "--set",
        "samples.steps=6",
    )
    assert result.returncode == 0, result.stderr
    return run_dir


def test_sample_prints_text_and_writes_a_trace(trained_run, tmp_path):
    trace = tmp_path / "trace.jsonl"
    result = mdlm(
        "sample", trained_run, "--length", 24, "--steps", 8, "--prompt", "And God said", "--trace", trace
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("And God said") and "[MASK]" not in result.stdout
    steps = [json.loads(line) for line in trace.read_text().splitlines()]
    assert steps[-1]["final"] and steps[-1]["text"] == result.stdout.rstrip("\n")
    masks = [s["masked"] for s in steps[:-1]]
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0


def test_sample_is_reproducible_and_takes_a_checkpoint_folder(trained_run):
    a = mdlm("sample", trained_run, "--length", 20, "--steps", 5, "--seed", 7)
    b = mdlm("sample", trained_run / "checkpoints" / "step-20", "--length", 20, "--steps", 5, "--seed", 7)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_sample_bad_input_is_one_sentence(trained_run):
    result = mdlm("sample", trained_run, "--sampler", "beam")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")


def test_training_evaluates_and_samples_on_schedule(trained_run):
    evals = [r for r in read_jsonl(trained_run / "metrics.jsonl") if r["event"] == "eval"]
    assert [(r["step"], r["suite"]) for r in evals] == [(10, "builtin"), (20, "builtin")]
    assert 0 <= evals[-1]["macro"] <= 1 and len(evals[-1]["per_uid"]) == 7 and evals[-1]["n"] == 35
    # eval.limit=5 left items out; the name ends in the UTC time the report was made
    assert len(list((trained_run / "eval").glob("builtin-step-20-pll-limit5-*T*.json"))) == 1
    samples = read_jsonl(trained_run / "samples.jsonl")
    assert [s["step"] for s in samples] == [10, 20]
    trace = samples[-1]["trace"]
    assert trace[0]["masked"] == 23 and trace[-1]["masked"] == 0 and "[MASK]" not in samples[-1]["text"]


def test_eval_prints_a_table_and_saves_the_report(trained_run, tmp_path):
    out = tmp_path / "report.json"
    result = mdlm("eval", trained_run, "--suite", "builtin", "--limit", 10, "--json", out)
    assert result.returncode == 0, result.stderr
    assert "macro average" in result.stdout and "subject_verb_agreement" in result.stdout
    report = json.loads(out.read_text())
    assert report["suite"] == "builtin" and report["n"] == 70 and len(report["per_uid"]) == 7
    assert abs(report["macro"] - sum(r["accuracy"] for r in report["per_uid"].values()) / 7) < 1e-12
    # a limited evaluation is saved under its own name, beside the full one made during training
    [path] = (trained_run / "eval").glob("builtin-step-20-pll-limit10-*.json")
    saved = json.loads(path.read_text())
    assert saved["limit"] == 10
    assert saved["macro"] == report["macro"]


def test_eval_on_babylm_layout(trained_run, shared_data):
    result = mdlm(
        "eval",
        trained_run,
        "--suite",
        "blimp,supplement",
        "--data",
        shared_data / "evaluation_data",
        "--limit",
        2,
    )
    assert result.returncode == 0, result.stderr
    assert "anaphor_gender_agreement" in result.stdout and "hypernym" in result.stdout


def test_eval_dev_nelbo(trained_run):
    result = mdlm("eval", trained_run, "--suite", "dev")
    assert result.returncode == 0, result.stderr
    assert "dev NELBO" in result.stdout and "perplexity bound" in result.stdout


@pytest.mark.parametrize("suite, message", [("blimpp", "Unknown suite"), ("missing.jsonl", "missing.jsonl")])
def test_eval_bad_suite_is_one_sentence(trained_run, suite, message):
    result = mdlm("eval", trained_run, "--suite", suite)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_malformed_line_is_refused_or_skipped(trained_run, tmp_path):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"sentence_good": "He is here.", "sentence_bad": "He are here.", "UID": "sva"}\n{oops\n')
    refused = mdlm("eval", trained_run, "--suite", bad)
    assert refused.returncode == 2 and f"{bad}:2" in refused.stderr
    skipped = mdlm("eval", trained_run, "--suite", bad, "--on-bad-line", "skip")
    assert skipped.returncode == 0 and f"{bad}:2" in skipped.stderr and "sva" in skipped.stdout


def test_checkpoint_from_another_vocab_is_refused(trained_run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    config = other / "config.yaml"
    config.write_text(config.read_text().replace("vocab_size: 4096", "vocab_size: 8192"))
    result = mdlm("eval", other, "--suite", "builtin")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "vocabulary of 4,096 ids" in result.stderr
