"""Bad input ends with one clear sentence, a non-zero exit and no traceback."""

import json

import pytest
import torch

from tests.helpers import mdlm


def assert_clean_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_preset(tmp_path):
    assert_clean_error(
        mdlm("run", "--preset", "bimodal-p2", "--run-dir", tmp_path / "r"), "Unknown preset", "Did you mean"
    )


def test_unknown_key_suggests(tmp_path):
    assert_clean_error(
        mdlm("run", "--preset", "smoke", "--set", "train.lerning_rate=1", "--run-dir", tmp_path / "r"),
        "train.lerning_rate",
        "Did you mean 'train.",
    )


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: 128\n   num_layers: 2\n")
    assert_clean_error(mdlm("run", "--preset", bad, "--run-dir", tmp_path / "r"), "not valid YAML", "line")


def test_missing_corpus(tmp_path):
    result = mdlm(
        "run",
        "--preset",
        "smoke",
        "--set",
        f"data.path={tmp_path / 'nowhere'}",
        "--set",
        "data.source=text",
        "--run-dir",
        tmp_path / "r",
    )
    assert_clean_error(result, "nowhere")


def test_empty_corpus(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("\n\n   \n")
    result = mdlm(
        "run", "--preset", "smoke", "--set", f"data.path={tmp_path / 'corpus'}", "--run-dir", tmp_path / "r"
    )
    assert_clean_error(result)
    assert json.loads((tmp_path / "r" / "status.json").read_text())["state"] == "failed"


def test_paper_preset_without_corpus_says_what_to_set(tmp_path):
    assert_clean_error(mdlm("run", "--preset", "bimodal-p0", "--run-dir", tmp_path / "r"), "data.path")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(tmp_path):
    result = mdlm("run", "--preset", "smoke", "--device", "cuda", "--run-dir", tmp_path / "r")
    assert_clean_error(result, "no CUDA GPU")
    assert not (tmp_path / "r").exists(), "nothing is written for a run that cannot start"


def test_existing_run_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: mine\n")
    assert_clean_error(
        mdlm("run", "--preset", "smoke", "--run-dir", run_dir), "already holds a run", "--resume"
    )
    assert (run_dir / "config.yaml").read_text() == "name: mine\n"


def test_resume_without_a_run(tmp_path):
    assert_clean_error(mdlm("run", "--resume", "--run-dir", tmp_path), "no run to resume")


def test_presets_lists_one_line_each():
    result = mdlm("presets")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert {"smoke", "cpu-small", "linear", "cosine", "bimodal-p0", "bimodal-p1", "bimodal-p0.1"} <= set(
        names
    )
    assert len(lines) == len(names)


def test_inspect_json_prints_config_and_parameter_count():
    result = mdlm("inspect", "--preset", "cosine", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["parameters"] == 126_636_800
    assert report["config"]["schedule"]["name"] == "cosine"
    off = json.loads(
        mdlm("inspect", "--preset", "cosine", "--set", "model.time_conditioning=false", "--json").stdout
    )
    assert off["parameters"] == 119_454_208


def test_schedule_json_shows_what_p_does():
    p1 = json.loads(mdlm("schedule", "gaussian", "--set", "power=1", "--json").stdout)
    p01 = json.loads(mdlm("schedule", "gaussian", "--set", "power=0.1", "--json").stdout)
    assert p1["weight"]["max"] > 100 * p01["weight"]["max"]
    bimodal = json.loads(mdlm("schedule", "bimodal", "--json").stdout)
    assert [round(r["mean_rate"], 3) for r in bimodal] == [0.232, 0.303, 0.346]


def test_schedule_unknown_name():
    assert_clean_error(mdlm("schedule", "cosin"), "Did you mean 'cosine'")


def _command_names():
    import typer

    from mdlm_tui.cli import app

    return sorted(typer.main.get_command(app).commands)


def test_the_command_list_reads_whole_at_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = mdlm("--help")
    listed = result.stdout.split("Commands:")[1].strip().splitlines()
    assert len(listed) == len(_command_names()) and not [line for line in listed if line.endswith("...")], (
        listed
    )


@pytest.mark.parametrize(
    "command", [[]] + [[name] for name in _command_names()], ids=lambda c: " ".join(c) or "top"
)
def test_help_shows_flags_as_plain_flags(command):
    result = mdlm(*command, "--help")
    assert result.returncode == 0, result.stderr
    for metavar in ("<bool>", "BOOLEAN"):
        assert metavar not in result.stdout, (
            f"`mdlm-tui {' '.join(command + ['--help'])}` shows {metavar}:\n{result.stdout}"
        )
    assert "--help" in result.stdout


def test_a_run_another_host_is_training_is_never_cleared(tmp_path):
    import time

    from core.config import load_config, to_yaml

    run_dir = tmp_path / "shared-disk-run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(load_config("smoke", [])))
    status = {"state": "running", "pid": 4242, "host": "elsewhere", "step": 3, "heartbeat": time.time()}
    (run_dir / "status.json").write_text(json.dumps(status))
    (run_dir / "metrics.jsonl").write_text('{"event": "train", "step": 3}\n')
    before = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    assert_clean_error(
        mdlm(
            "run",
            "--preset",
            "smoke",
            "--run-dir",
            run_dir,
            "--set",
            "train.budget=2 steps",
            "--set",
            "train.dev_every=0",
            "--set",
            "train.threads=1",
        ),
        "still being trained on elsewhere",
        "another --run-dir",
    )
    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == before
