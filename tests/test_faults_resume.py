"""Faults around starting and resuming a run: the config is rewritten only by a resume that holds,
changes the checkpoints cannot follow are refused by name, a run that never reached a checkpoint
starts afresh, read-only folders and stop requests end in one sentence and a true status."""

import shutil
import signal
import subprocess

import pytest
import yaml

from core.runs import read_jsonl
from tests.helpers import error_line, mdlm, run_status, start, wait_until

pytestmark = pytest.mark.slow

SHORT = [
    "--set",
    "train.budget=8 steps",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "train.log_every=1",
    "--set",
    "train.dev_every=0",
    "--set",
    "train.threads=1",
]


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.hidden_size=256", "model.hidden_size"),
        ("train.global_batch=64", "train.global_batch"),
        ("data.seq_len=32", "data.seq_len"),
        ("train.optimizer=lamb", "train.optimizer"),
    ],
)
def test_resume_refuses_a_change_the_checkpoints_cannot_follow(finished_smoke_run, override, key):
    before = (finished_smoke_run / "config.yaml").read_bytes()
    status = run_status(finished_smoke_run)
    error = error_line(mdlm("run", "--resume", "--run-dir", finished_smoke_run, "--set", override))
    assert f"{key} cannot change on resume" in error and "damaged" not in error
    assert (finished_smoke_run / "config.yaml").read_bytes() == before
    assert run_status(finished_smoke_run) == status, "a refused resume leaves the run as it ended"


def test_a_resume_refused_for_its_prompt_leaves_the_run_finished_at_its_step(tmp_path, finished_smoke_run):
    run_dir = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished_smoke_run), str(run_dir)], check=True)
    sets = ["--set", "samples.every=2", "--set", "samples.prompt=<mask>*0 too few"]
    error = error_line(mdlm("run", "--resume", "--run-dir", run_dir, "--set", "train.budget=12 steps", *sets))
    assert "asks for no position" in error
    status = run_status(run_dir)
    assert status["state"] == "finished" and status["step"] == 8


def test_overrides_of_a_resume_that_fails_before_its_next_checkpoint_are_taken_back(
    tmp_path, finished_smoke_run
):
    run_dir = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished_smoke_run), str(run_dir)], check=True)
    before = (run_dir / "config.yaml").read_text()
    diverge = ["--set", "train.budget=12 steps", "--set", "train.lr=1e6"]
    error = error_line(mdlm("run", "--resume", "--run-dir", run_dir, *diverge), code=3)
    assert "non-finite loss" in error
    assert (run_dir / "config.yaml").read_text() == before, "a plain --resume runs as before the --set"
    assert read_jsonl(run_dir / "config-history.jsonl")[-1]["undone"] == diverge[1::2]
    result = mdlm("run", "--resume", "--run-dir", run_dir)
    assert result.returncode == 0 and run_status(run_dir)["step"] == 8, result.stderr


def test_accepted_override_is_written_with_its_history(tmp_path, finished_smoke_run):
    run_dir = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished_smoke_run), str(run_dir)], check=True)
    result = mdlm(
        "run", "--resume", "--run-dir", run_dir, "--set", "train.budget=10 steps", "--set", "train.lr=1e-3"
    )
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["budget"] == "10 steps" and saved["train"]["lr"] == 1e-3
    history = read_jsonl(run_dir / "config-history.jsonl")
    assert history[-1]["set"] == ["train.budget=10 steps", "train.lr=1e-3"] and history[-1]["step"] == 8
    assert run_status(run_dir)["step"] == 10


def test_a_cut_short_config_is_refused_not_filled_with_defaults(tmp_path, finished_smoke_run):
    run_dir = tmp_path / "cut"
    subprocess.run(["cp", "-r", str(finished_smoke_run), str(run_dir)], check=True)
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text[: text.index("train:")])
    error = error_line(mdlm("run", "--resume", "--run-dir", run_dir, "--set", "train.budget=12 steps"))
    assert "lacks train." in error


def test_refused_resume_of_a_live_run_leaves_its_config_alone(tmp_path):
    run_dir = tmp_path / "live"
    proc = start(
        "run", "--preset", "smoke", "--run-dir", run_dir, *SHORT, "--set", "train.budget=100000 steps"
    )
    try:
        wait_until(
            lambda: (run_dir / "status.json").exists() and run_status(run_dir).get("state") == "running",
            "running",
        )
        before = (run_dir / "config.yaml").read_bytes()
        error = error_line(
            mdlm(
                "run",
                "--resume",
                "--run-dir",
                run_dir,
                "--set",
                "train.lr=0.5",
                "--set",
                "train.budget=7 steps",
            )
        )
        assert "still being trained by process" in error
        assert (run_dir / "config.yaml").read_bytes() == before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=300)


def test_a_run_that_failed_before_its_first_checkpoint_starts_afresh(tmp_path):
    run_dir = tmp_path / "failed-start"
    empty = tmp_path / "empty.txt"  # found, but fails while the data is prepared
    empty.write_text("\n")
    error_line(mdlm("run", "--preset", "smoke", "--run-dir", run_dir, "--set", f"data.path={empty}"))
    assert run_status(run_dir)["state"] == "failed"
    again = mdlm("run", "--preset", "smoke", "--run-dir", run_dir, *SHORT)
    assert again.returncode == 0, again.stderr
    assert "starting it afresh in place" in again.stdout
    assert run_status(run_dir)["state"] == "finished" and run_status(run_dir)["step"] == 8


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_afresh(tmp_path):
    run_dir = tmp_path / "killed-early"
    proc = start(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        run_dir,
        *SHORT,
        "--set",
        "train.checkpoint_every=100000",
        "--set",
        "train.budget=100000 steps",
    )
    wait_until(
        lambda: (run_dir / "status.json").exists() and run_status(run_dir).get("state") == "running",
        "running",
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    resumed = mdlm("run", "--resume", "--run-dir", run_dir, *SHORT)
    assert resumed.returncode == 0 and "starting it afresh" in resumed.stdout, resumed.stderr
    assert run_status(run_dir)["state"] == "finished" and run_status(run_dir)["step"] == 8


def test_a_prompt_that_cannot_work_is_refused_before_training(tmp_path):
    run_dir = tmp_path / "prompt"
    error = error_line(
        mdlm(
            "run",
            "--preset",
            "smoke",
            "--run-dir",
            run_dir,
            *SHORT,
            "--set",
            "samples.every=2",
            "--set",
            "samples.prompt=<mask>*0 too few",
        )
    )
    assert "asks for no position" in error
    assert not [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


def test_an_unknown_suite_is_refused_before_training(tmp_path):
    run_dir = tmp_path / "suite"
    sets = ["--set", "eval.every=2", "--set", "eval.suites=builtin,nosuch"]
    error = error_line(mdlm("run", "--preset", "smoke", "--run-dir", run_dir, *SHORT, *sets))
    assert "Unknown suite 'nosuch'" in error
    assert not [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


def test_run_dir_naming_a_file_is_refused(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    assert "is a file" in error_line(mdlm("run", "--preset", "smoke", "--run-dir", target, *SHORT))
    assert target.read_text() == "mine\n"


def test_stop_sent_while_data_is_prepared_is_obeyed(tmp_path, monkeypatch):
    monkeypatch.setenv("MDLM_TUI_CACHE", str(tmp_path / "fresh-cache"))  # so preparing takes a while
    run_dir = tmp_path / "stop-early"
    proc = start(
        "run", "--preset", "smoke", "--run-dir", run_dir, *SHORT, "--set", "train.budget=100000 steps"
    )
    wait_until(lambda: (run_dir / "status.json").exists(), "status.json")
    sent = mdlm("control", run_dir, "stop")
    assert sent.returncode == 0, sent.stderr
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert run_status(run_dir)["state"] == "stopped" and run_status(run_dir)["step"] < 50


def test_second_sigterm_exits_143_with_status_at_the_checkpoint(tmp_path):
    run_dir = tmp_path / "double"
    proc = start(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        run_dir,
        *SHORT,
        "--set",
        "train.budget=100000 steps",
        "--set",
        "train.checkpoint_every=3",
    )
    latest = run_dir / "checkpoints" / "latest"
    wait_until(lambda: latest.exists() and int(latest.read_text().strip()[5:]) >= 6, "a checkpoint at step 6")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    final = run_status(run_dir)
    assert final["state"] == "stopped"
    assert final["step"] == int(latest.read_text().strip()[5:])


def test_read_only_folder_ends_in_one_sentence(tmpfs, finished_smoke_run):
    read_only_mount = tmpfs()
    run_dir = read_only_mount / "run"
    subprocess.run(["cp", "-r", str(finished_smoke_run), str(run_dir)], check=True)
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    error = error_line(mdlm("run", "--resume", "--run-dir", run_dir, "--set", "train.budget=12 steps"))
    assert "Cannot write the run folder" in error
    fresh = error_line(mdlm("run", "--preset", "smoke", "--run-dir", read_only_mount / "new", *SHORT))
    assert "Cannot write the run folder" in fresh


def test_a_run_folder_removed_mid_run_ends_in_one_sentence(tmp_path):
    run_dir = tmp_path / "removed"
    proc = start(
        "run", "--preset", "smoke", "--run-dir", run_dir, *SHORT, "--set", "train.budget=100000 steps"
    )
    wait_until(
        lambda: (run_dir / "status.json").exists() and run_status(run_dir).get("state") == "running",
        "running",
    )
    shutil.rmtree(run_dir)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert "Cannot write the run folder" in stderr.strip().splitlines()[-1]


def test_a_write_that_fails_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import errno
    import os

    from core.runs import atomic_write_text

    target = tmp_path / "status.json"
    target.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]
