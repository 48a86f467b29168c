"""`mdlm-tui sample` and `mdlm-tui eval` on a real (briefly trained) run."""

import json

import pytest

from tests.helpers import mdlm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = mdlm("run", "--preset", "smoke", "--run-dir", run_dir, "--set", "train.budget=20 steps",
                  "--set", "train.checkpoint_every=10", "--set", "train.dev_every=0")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_sample_prints_text_and_writes_a_trace(trained_run, tmp_path):
    trace = tmp_path / "trace.jsonl"
    result = mdlm("sample", trained_run, "--length", 24, "--steps", 8, "--prompt", "And God said", "--trace", trace)
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
