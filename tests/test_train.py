"""End to end: the installed command trains, checkpoints, stops and resumes for real."""

import json
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from core.runs import read_jsonl
from tests.helpers import error_line, mdlm, start

pytestmark = pytest.mark.slow

# The smoke model, shortened; dropout on so that resuming must restore the RNG too.
TINY = [
    "--set",
    "model.dropout=0.1",
    "--set",
    "train.log_every=1",
    "--set",
    "train.dev_every=10",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "train.keep_checkpoints=3",
    "--set",
    "train.threads=1",
]


def train_records(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


def status(run_dir):
    return json.loads((run_dir / "status.json").read_text())


def test_smoke_preset_learns_from_any_folder(tmp_path):
    run_dir = tmp_path / "smoke"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = time.time()
    # the whole preset (500 steps) is the README's first command, which .ci/run runs; a third of it
    # shows the same here: learning, dev evaluation and checkpoints, from any folder
    result = mdlm(
        "run", "--preset", "smoke", "--set", "train.budget=150 steps", "--run-dir", run_dir, cwd=elsewhere
    )
    assert result.returncode == 0, result.stderr
    records = train_records(run_dir)
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    assert records[-1]["step"] == 150
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-150"
    assert (run_dir / "checkpoints" / "step-150" / "model.safetensors").is_file()
    assert status(run_dir)["state"] == "finished"
    assert any(r["event"] == "dev" for r in read_jsonl(run_dir / "metrics.jsonl"))
    assert "cpu_percent" in records[-1]["sys"] and records[-1]["sys"]["rss_mb"] > 0
    assert "\r" not in result.stdout, "no progress bar when stdout is not a terminal"
    print(f"smoke run took {time.time() - started:.0f} s")


def _weights(run_dir, step):
    folder = run_dir / "checkpoints" / f"step-{step}"
    return load_file(str(folder / "model.safetensors")), load_file(str(folder / "ema.safetensors"))


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    steps = 40
    # the paper's optimizer, with gradient accumulation (smoke: two micro-batches a step), so both must
    # resume exactly
    budget = ["--set", f"train.budget={steps} steps", "--set", "train.optimizer=lamb"]
    straight = tmp_path / "straight"
    assert mdlm("run", "--preset", "smoke", "--run-dir", straight, *TINY, *budget).returncode == 0

    killed = tmp_path / "killed"
    proc = start("run", "--preset", "smoke", "--run-dir", killed, *TINY, *budget)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline:
        if latest.exists() and int(latest.read_text().strip()[5:]) >= steps // 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert status(killed)["state"] == "running"  # a killed trainer leaves its last word behind
    assert train_records(killed)[-1]["step"] < steps, "the run finished before it could be killed"

    resumed = mdlm("run", "--resume", "--run-dir", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stdout
    assert status(killed)["state"] == "finished"

    for a, b in zip(_weights(straight, steps), _weights(killed, steps)):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert [r["step"] for r in train_records(killed)] == list(range(1, steps + 1))
    assert [r["loss"] for r in train_records(killed)] == [r["loss"] for r in train_records(straight)]


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        run_dir,
        *TINY,
        "--set",
        "train.checkpoint_every=1000",
        "--set",
        "train.optimizer=lamb",
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "metrics.jsonl").exists():
        time.sleep(0.05)
    clash = mdlm("run", "--resume", "--run-dir", run_dir)
    assert clash.returncode == 2 and "still being trained by process" in clash.stderr
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    st = status(run_dir)
    assert st["state"] == "stopped"
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step-{st['step']}"
    assert 0 < st["step"] < 500

    again = mdlm(
        "run", "--resume", "--run-dir", run_dir, "--set", "train.budget=" + f"{st['step'] + 3} steps"
    )
    assert again.returncode == 0, again.stderr
    assert f"resumed from step {st['step']}" in again.stdout
    assert status(run_dir)["step"] == st["step"] + 3


def test_truncated_latest_checkpoint_falls_back(tmp_path):
    run_dir = tmp_path / "run"
    assert (
        mdlm(
            "run", "--preset", "smoke", "--run-dir", run_dir, *TINY, "--set", "train.budget=8 steps"
        ).returncode
        == 0
    )
    weights = run_dir / "checkpoints" / "step-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = mdlm("run", "--resume", "--run-dir", run_dir, "--set", "train.budget=10 steps")
    assert result.returncode == 0, result.stderr
    assert "step-8 is damaged" in result.stdout and "resumed from step 4" in result.stdout
    assert [r["step"] for r in train_records(run_dir)] == list(range(1, 11))


def test_nonfinite_loss_fails_clearly(tmp_path):
    run_dir = tmp_path / "run"
    result = mdlm(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        run_dir,
        *TINY,
        "--set",
        "train.lr=1e30",
        "--set",
        "train.clip=0",
        "--set",
        "train.warmup=0",
    )
    assert result.returncode == 3
    assert "non-finite" in result.stderr and "Traceback" not in result.stderr
    st = status(run_dir)
    assert st["state"] == "failed" and "non-finite" in st["error"]


def test_nonfinite_steps_can_be_skipped_and_counted(tmp_path):
    run_dir = tmp_path / "run"
    result = mdlm(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        run_dir,
        *TINY,
        "--set",
        "train.lr=1e30",
        "--set",
        "train.clip=0",
        "--set",
        "train.warmup=0",
        "--set",
        "objective.on_nonfinite=skip",
        "--set",
        "objective.max_skipped=3",
    )
    assert result.returncode == 3
    assert "more than objective.max_skipped = 3" in result.stderr
    assert "update skipped (3 so far)" in result.stdout


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_control_pause_checkpoint_resume_and_stop(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        run_dir,
        *TINY,
        "--set",
        "train.checkpoint_every=1000",
        "--set",
        "train.budget=100000 steps",
    )
    assert _wait_for(
        lambda: status(run_dir).get("state") == "running" if (run_dir / "status.json").exists() else False
    )

    assert mdlm("control", run_dir, "pause").returncode == 0
    assert _wait_for(lambda: status(run_dir)["state"] == "paused")
    paused_at = status(run_dir)["step"]
    assert mdlm("control", run_dir, "checkpoint").returncode == 0
    assert _wait_for(lambda: (run_dir / "checkpoints" / "latest").exists())
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step-{paused_at}"
    time.sleep(0.5)
    assert status(run_dir)["step"] == paused_at, "a paused run does not train"

    assert mdlm("control", run_dir, "resume").returncode == 0
    assert _wait_for(lambda: status(run_dir)["step"] > paused_at and status(run_dir)["state"] == "running")
    assert mdlm("control", run_dir, "stop").returncode == 0
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    st = status(run_dir)
    assert (
        st["state"] == "stopped"
        and (run_dir / "checkpoints" / "latest").read_text().strip() == f"step-{st['step']}"
    )
    gone = mdlm("control", run_dir, "stop")
    assert gone.returncode == 2 and "No trainer is working" in gone.stderr


def test_first_update_takes_lr_zero_and_records_log_both_mask_rates(tmp_path):
    """As released, warm-up starts at lr 0 for the first update; each record sets the realised mask rate
    over real tokens beside the schedule's mean rate (padded sequences mask real tokens above it)."""
    short = [
        "--set",
        "train.budget=3 steps",
        "--set",
        "train.log_every=1",
        "--set",
        "train.warmup=0.5",
        "--set",
        "train.checkpoint_every=100",
        "--set",
        "train.dev_every=0",
        "--set",
        "train.threads=1",
    ]
    released, shifted = tmp_path / "released", tmp_path / "shifted"
    assert mdlm("run", "--preset", "smoke", "--run-dir", released, *short).returncode == 0
    assert (
        mdlm(
            "run", "--preset", "smoke", "--run-dir", shifted, *short, "--set", "train.first_lr_zero=false"
        ).returncode
        == 0
    )
    first, again = train_records(released), train_records(shifted)
    assert first[0]["lr"] == 0.0 and first[1]["lr"] > 0
    assert again[0]["lr"] == pytest.approx(first[1]["lr"])
    for record in first:
        assert 0 < record["schedule_rate"] < 1 and 0 < record["mask_rate"] < 1


FAST = ["--set", "train.budget=2 steps", "--set", "train.dev_every=0", "--set", "train.threads=1"]


def test_a_start_that_failed_can_be_run_again_in_the_same_folder(tmp_path):
    run_dir = tmp_path / "x"
    error = error_line(
        mdlm(
            "run", "--preset", "smoke", "--run-dir", run_dir, *FAST, "--set", f"data.path={tmp_path / 'nope'}"
        )
    )
    assert "nope does not exist" in error
    empty = tmp_path / "empty.txt"  # found, but fails while the data is prepared, leaving the folder behind
    empty.write_text("\n")
    error_line(mdlm("run", "--preset", "smoke", "--run-dir", run_dir, *FAST, "--set", f"data.path={empty}"))
    assert status(run_dir)["state"] == "failed"

    fixed = mdlm("run", "--preset", "smoke", "--run-dir", run_dir, *FAST)
    assert fixed.returncode == 0, fixed.stderr
    said = [line for line in fixed.stdout.splitlines() if "afresh" in line]
    assert len(said) == 1 and "earlier attempt failed before any checkpoint" in said[0], fixed.stdout
    assert status(run_dir)["state"] == "finished" and status(run_dir)["step"] == 2
    assert status(run_dir)["error"] is None


def test_a_run_with_a_checkpoint_is_refused_saying_how_to_go_on(finished_smoke_run):
    error = error_line(mdlm("run", "--preset", "smoke", "--run-dir", finished_smoke_run, *FAST))
    assert "already holds a run" in error and "--resume" in error and "another --run-dir" in error
    assert status(finished_smoke_run)["state"] == "finished"


def test_console_shows_a_config_summary_and_config_yaml_the_whole(tmp_path):
    run_dir = tmp_path / "run"
    result = mdlm("run", "--preset", "smoke", "--run-dir", run_dir, *FAST)
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stdout.splitlines() if "config:" in line]
    assert len(summary) == 1, result.stdout
    for part in (
        "smoke preset",
        "cosine schedule (p=1)",
        "frequency masking (p_freq 0.02, curriculum)",
        "2 layers x 128 (4 heads)",
        "budget 2 steps",
        f"in full: {run_dir / 'config.yaml'}",
    ):
        assert part in summary[0], summary[0]
    assert "layer_norm_eps" not in result.stdout, "the full config stays out of the console"
    assert "layer_norm_eps" in (run_dir / "config.yaml").read_text()
    assert "layer_norm_eps" in mdlm("inspect", "--preset", "smoke").stdout
