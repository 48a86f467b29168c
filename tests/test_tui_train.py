"""The Train screen on a real run: a trainer subprocess writes the folder, the app watches it, and
the screen's keys pause, resume, checkpoint and stop it. Quitting the app leaves training alone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdlm_tui.app import MdlmApp
from mdlm_tui.screens.train import TrainScreen
from mdlm_tui.widgets.curves import CurvePlot
from mdlm_tui.widgets.state_label import StateLabel
from tests.helpers import wait_for

STARTUP_TIMEOUT_S = 180  # a fresh test cache builds the tokenizer of the embedded corpus first
STEP_TIMEOUT_S = 60


def start_trainer(run_dir: Path) -> subprocess.Popen:
    run_dir.mkdir(parents=True)
    log = open(run_dir / "train.log", "w")
    cmd = [sys.executable, "-m", "mdlm_tui", "run", "--preset", "smoke", "--run-dir", str(run_dir),
           "--set", "train.budget=100000 steps", "--set", "train.log_every=1", "--set", "train.threads=1",
           "--set", "train.dev_every=5", "--set", "train.dev_batches=1"]
    # Its own session, like a trainer started from a shell: nothing the app does reaches it.
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def screen_step(app: MdlmApp) -> int:
    screen = app.screen
    return screen.latest_train.get("step", 0) if isinstance(screen, TrainScreen) else 0


@pytest.fixture
def trainer(tmp_path):
    run_dir = tmp_path / "runs" / "live"
    proc = start_trainer(run_dir)
    yield run_dir, proc
    if proc.poll() is None:  # a failed assertion must not leave a trainer behind
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_train_screen_follows_and_controls_a_real_trainer(trainer):
    run_dir, proc = trainer

    async def watch_and_quit():
        app = MdlmApp(runs_root=run_dir.parent, watch=run_dir)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 10, "the Train screen")
            screen = app.screen
            await wait_for(pilot, lambda: screen_step(app) >= 2, STARTUP_TIMEOUT_S, "the first steps")
            first = screen_step(app)
            await wait_for(pilot, lambda: screen_step(app) >= first + 3, STEP_TIMEOUT_S, "steps advancing")
            assert screen.query_one(StateLabel).health == "running"
            assert screen.query_one("#train-log").line_count > 0  # train.log lines
            await wait_for(pilot, lambda: screen.query_one("#plot-loss", CurvePlot).points > 0, 10, "the loss curve")
            assert "step" in str(screen.query_one("#train-numbers").render())
            assert "no GPU" in str(screen.query_one("#train-system").render())

            await pilot.press("p")
            await wait_for(pilot, lambda: read_status(run_dir).get("state") == "paused", STEP_TIMEOUT_S, "paused")
            await wait_for(pilot, lambda: screen.query_one(StateLabel).health == "paused", 5, "paused on screen")
            paused_at = read_status(run_dir)["step"]

            await pilot.press("k")  # a checkpoint while paused is honoured at once
            await wait_for(pilot, lambda: (run_dir / "checkpoints" / f"step-{paused_at}").is_dir(), STEP_TIMEOUT_S,
                        "the requested checkpoint")
            assert read_status(run_dir)["step"] == paused_at

            await pilot.press("p")
            await wait_for(pilot, lambda: read_status(run_dir).get("state") == "running", STEP_TIMEOUT_S, "resumed")
            await wait_for(pilot, lambda: screen_step(app) > paused_at, STEP_TIMEOUT_S, "steps after resuming")
            await pilot.press("q")
        return paused_at

    paused_at = asyncio.run(watch_and_quit())

    # Closing the TUI never stops a run: the trainer is alive and still stepping.
    assert proc.poll() is None
    os.kill(proc.pid, 0)
    step_after_quit = read_status(run_dir).get("step", 0)
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while read_status(run_dir).get("step", 0) <= step_after_quit:
        assert time.monotonic() < deadline, "the trainer stopped stepping after the TUI closed"
        time.sleep(0.2)

    async def attach_and_stop():
        app = MdlmApp(runs_root=run_dir.parent, watch=run_dir)  # a second TUI attaches to the same run
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: screen_step(app) > paused_at, 20, "the history on attaching")
            await pilot.press("x")
            await wait_for(pilot, lambda: read_status(run_dir).get("state") == "stopped", STEP_TIMEOUT_S, "stopped")
            await wait_for(pilot, lambda: screen.query_one(StateLabel).health == "stopped", 5, "stopped on screen")
            sent = (run_dir / "control.json").read_text()
            await pilot.press("x")  # a stopped run takes no more requests
            await pilot.pause(0.2)
            assert (run_dir / "control.json").read_text() == sent

    asyncio.run(attach_and_stop())
    assert proc.wait(60) == 0
    status = read_status(run_dir)
    final = status["step"]
    assert status["checkpoint"] == f"step-{final}"
    assert (run_dir / "checkpoints" / f"step-{final}").is_dir()
    assert (run_dir / "checkpoints" / "latest").exists()


def test_watcher_follows_appends_and_a_resume_truncation(tmp_path):
    from mdlm_tui.watcher import RunWatcher

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = run_dir / "metrics.jsonl"

    def records(steps):
        return "".join(json.dumps({"event": "train", "step": s, "loss": 7.0 - s / 100, "masked_ce": 7.0,
                                   "lr": 1e-3, "tokens_per_s": 1000.0, "time": 0}) + "\n" for s in steps)

    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "step": 10, "total_steps": 10}))
    metrics.write_text(records(range(1, 11)))
    watcher = RunWatcher(run_dir, target=None, history_points=8)
    first = watcher.poll()
    assert first.status["state"] == "finished" and first.metrics_changed
    assert len(first.history["loss"][0]) <= 8 and first.history["loss"][0][-1] == 10  # capped, newest kept
    assert len(first.log_lines) == 10 and "step 10/10" in first.log_lines[-1]  # no train.log: rebuilt
    assert watcher.poll() is None  # nothing new

    with open(metrics, "a") as f:
        f.write(records([11]) + '{"event": "train", "st')  # a torn line waits for its end
    update = watcher.poll()
    assert [r["step"] for r in update.new_records] == [11]

    rewritten = tmp_path / "rewritten"
    rewritten.write_text(records(range(1, 6)))
    os.replace(rewritten, metrics)  # what RunDir.truncate_after does on resume
    update = watcher.poll()
    assert update.log_reset and update.history["loss"][0] == [1, 2, 3, 4, 5]
    assert update.latest_train["step"] == 5


def test_system_pane_shows_gpus_or_says_there_is_none():
    from mdlm_tui.widgets.system_pane import system_lines

    cpu_only = system_lines({"cpu_percent": 12.0, "process_cpu_percent": 100.0, "rss_mb": 700.4, "ram_used_percent": 40.0})
    assert cpu_only[0].startswith("no GPU")
    assert cpu_only[-1] == "RAM  40%  RSS 700 MB"
    gpu = system_lines({"cpu_percent": 12.0, "gpus": [{"index": 0, "util_percent": 87, "mem_used_mb": 40960,
                                                       "mem_total_mb": 81920, "temp_c": 64, "power_w": 312.5},
                                                      {"index": 1, "util_percent": 5}]})
    assert gpu[0] == "GPU0  87% 40.0/80G 64C 312W"
    assert gpu[1].startswith("GPU1   5% --")  # a field the driver does not report is a dash
    assert system_lines(None) == ["no system stats yet"]
