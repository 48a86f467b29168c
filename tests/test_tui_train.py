"""The Train screen on a real run: a trainer subprocess writes the folder, the app watches it, and
the screen's keys pause, resume, checkpoint and stop it. Quitting the app leaves training alone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.geometry import Region

from mdlm_tui.app import MdlmApp
from mdlm_tui.common.curves import CurvePlot
from mdlm_tui.common.state_label import StateLabel
from mdlm_tui.train.screen import TrainScreen
from tests.helpers import wait_for

STARTUP_TIMEOUT_S = 180  # a fresh test cache builds the tokenizer of the embedded corpus first
STEP_TIMEOUT_S = 60


def start_trainer(run_dir: Path) -> subprocess.Popen:
    run_dir.mkdir(parents=True)
    log = open(run_dir / "train.log", "w")
    cmd = [
        sys.executable,
        "-m",
        "mdlm_tui",
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        str(run_dir),
        "--set",
        "train.budget=100000 steps",
        "--set",
        "train.log_every=1",
        "--set",
        "train.threads=1",
        "--set",
        "train.dev_every=5",
        "--set",
        "train.dev_batches=1",
    ]
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
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            screen = app.screen
            await wait_for(pilot, lambda: screen_step(app) >= 2, STARTUP_TIMEOUT_S, "the first steps")
            first = screen_step(app)
            await wait_for(pilot, lambda: screen_step(app) >= first + 3, STEP_TIMEOUT_S, "steps advancing")
            assert screen.query_one(StateLabel).health == "running"
            assert screen.query_one("#train-log").line_count > 0  # train.log lines
            await wait_for(
                pilot, lambda: screen.query_one("#plot-loss", CurvePlot).points > 0, 60, "the loss curve"
            )
            assert "step" in str(screen.query_one("#train-numbers").render())
            assert "no GPU" in str(screen.query_one("#train-system").render())

            await pilot.press("p")
            await wait_for(
                pilot, lambda: read_status(run_dir).get("state") == "paused", STEP_TIMEOUT_S, "paused"
            )
            await wait_for(
                pilot, lambda: screen.query_one(StateLabel).health == "paused", 60, "paused on screen"
            )
            paused_at = read_status(run_dir)["step"]

            await pilot.press("k")  # a checkpoint while paused is honoured at once
            await wait_for(
                pilot,
                lambda: (run_dir / "checkpoints" / f"step-{paused_at}").is_dir(),
                STEP_TIMEOUT_S,
                "the requested checkpoint",
            )
            assert read_status(run_dir)["step"] == paused_at

            await pilot.press("p")
            await wait_for(
                pilot, lambda: read_status(run_dir).get("state") == "running", STEP_TIMEOUT_S, "resumed"
            )
            await wait_for(
                pilot, lambda: screen_step(app) > paused_at, STEP_TIMEOUT_S, "steps after resuming"
            )
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
            await wait_for(pilot, lambda: screen_step(app) > paused_at, 60, "the history on attaching")
            await pilot.press("x")
            await wait_for(
                pilot, lambda: read_status(run_dir).get("state") == "stopped", STEP_TIMEOUT_S, "stopped"
            )
            await wait_for(
                pilot, lambda: screen.query_one(StateLabel).health == "stopped", 60, "stopped on screen"
            )
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
        return "".join(
            json.dumps(
                {
                    "event": "train",
                    "step": s,
                    "loss": 7.0 - s / 100,
                    "masked_ce": 7.0,
                    "lr": 1e-3,
                    "tokens_per_s": 1000.0,
                    "time": 0,
                }
            )
            + "\n"
            for s in steps
        )

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
    from mdlm_tui.train.system_pane import system_lines

    cpu_only = system_lines(
        {"cpu_percent": 12.0, "ram_used_percent": 40.0},
        trainer={"process_cpu_percent": 100.0, "rss_mb": 700.4},
    )
    assert cpu_only == ["no GPU", "machine now: CPU  12%  RAM 40%", "trainer now: CPU 100%  RSS 700 MB"]
    gpu = system_lines(
        {
            "cpu_percent": 12.0,
            "gpus": [
                {
                    "index": 0,
                    "util_percent": 87,
                    "mem_used_mb": 40960,
                    "mem_total_mb": 81920,
                    "temp_c": 64,
                    "power_w": 312.5,
                },
                {"index": 1, "util_percent": 5},
            ],
        }
    )
    assert gpu[0] == "GPU0  87% 40.0/80G 64C 312W"
    assert gpu[1].startswith("GPU1   5% --")  # a field the driver does not report is a dash
    assert system_lines(None) == ["machine now: reading..."]
    # no trainer read live: the run's last record, labelled
    assert system_lines({"cpu_percent": None}, record=LAST_SYS)[1:] == [
        "machine now: CPU   --  RAM --",
        "last record (not live):",
        "  trainer CPU 199%  RSS 1050 MB",
    ]


# ---------------------------------------------------------------- a run folder written by hand

LAST_SYS = {"cpu_percent": 100.0, "process_cpu_percent": 199.0, "rss_mb": 1050.0, "ram_used_percent": 61.0}


def write_run(
    run_dir: Path,
    state: str,
    step: int = 8,
    total: int = 8,
    pid: int | None = None,
    log_lines: list[str] | None = None,
) -> Path:
    """A run folder as the trainer leaves it: status.json, metrics.jsonl (train records with a `sys`
    record, no eval events) and train.log. pid None: a trainer that is gone."""
    (run_dir / "eval").mkdir(parents=True)
    now = time.time()
    status = {
        "state": state,
        "pid": pid or 999_999_999,
        "host": socket.gethostname(),
        "step": step,
        "total_steps": total,
        "tokens": step * 1000,
        "loss": 5.0,
        "heartbeat": now,
        "eta_s": 0.0,
    }
    (run_dir / "status.json").write_text(json.dumps(status))
    records = [
        {
            "event": "train",
            "step": s,
            "epoch": s / 10,
            "tokens": s * 1000,
            "loss": 7 - s / 10,
            "masked_ce": 7.0,
            "lr": 1e-3,
            "tokens_per_s": 1234.0,
            "time": now,
            "sys": LAST_SYS,
        }
        for s in range(1, step + 1)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "train.log").write_text("".join(line + "\n" for line in log_lines or ["[09:00:00] started"]))
    return run_dir


def drawn(widget) -> str:
    """The text a widget draws at its size now, as the screen shows it."""
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.size)))


def report(suite: str, macro: float) -> dict:
    return {
        "suite": suite,
        "per_uid": {"u": {"accuracy": macro, "n": 20, "field": "f", "term": "t"}},
        "per_field": {"f": macro},
        "macro": macro,
        "n": 20,
        "seconds": 1.0,
        "backend": "pll",
        "checkpoint": "step-8",
    }


def test_train_screen_shows_the_latest_saved_eval_report(tmp_path):
    """Reports saved by `mdlm-tui eval` (no eval event in metrics.jsonl) show on the Train screen as on
    the Runs row: the newest one, whatever its file name says; a dev report is not a suite result."""
    run = write_run(tmp_path / "runs" / "done", "finished")
    olds = [
        ("blimp-step-4-pll.json", 0.51),
        ("blimp-step-8-pll.json", 0.55),
        ("builtin-step-8-pll.json", 0.6),
    ]
    for age, (name, macro) in enumerate(reversed(olds), 1):
        path = run / "eval" / name
        path.write_text(json.dumps(report(name.split("-")[0], macro)))
        os.utime(path, (time.time() - 100 * age,) * 2)
    (run / "eval" / "blimp-step-8-limit20.json").write_text(json.dumps(report("blimp", 0.576)))
    dev = run / "eval" / "dev-step-8-nelbo.json"
    dev.write_text(json.dumps({"suite": "dev", "dev_nelbo_per_token": 5.0}))
    os.utime(dev, (time.time() + 10,) * 2)  # the newest file, but no suite result

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            detail = app.screen.query_one("#train-detail")
            await wait_for(
                pilot,
                lambda: "step" in str(app.screen.query_one("#train-numbers").render()),
                10,
                "the first update",
            )
            await pilot.pause(0.3)
            assert "eval blimp 57.6%" in str(detail.render()), str(detail.render())

    asyncio.run(body())


def test_latest_eval_report_reads_any_name_and_breaks_a_time_tie_by_step(tmp_path):
    from mdlm_tui.watcher import latest_eval_report

    assert latest_eval_report(tmp_path / "missing") == {}
    for name, macro in (("builtin-step-250-pll.json", 0.59), ("builtin-step-500-limit20.json", 0.68)):
        (tmp_path / name).write_text(json.dumps(report("builtin", macro)))
        os.utime(tmp_path / name, (1000.0, 1000.0))  # written within one tick of the clock
    (tmp_path / "notes.json").write_text("not json")
    assert latest_eval_report(tmp_path)["macro"] == 0.68


def system_text(screen) -> str:
    return str(screen.query_one("#train-system").render())


@pytest.mark.parametrize("state", ["finished", "stopped", "failed"])
def test_a_run_without_a_trainer_shows_its_last_record_as_such_and_this_machine_live(tmp_path, state):
    run = write_run(tmp_path / "runs" / "done", state)

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            screen = app.screen
            numbers = screen.query_one("#train-numbers")
            await wait_for(pilot, lambda: "step 8/8" in str(numbers.render()), 60, "the first update")
            assert "ETA" not in str(numbers.render()) and str(numbers.render()).endswith(
                "last record: 1.23K tok/s"
            )
            await wait_for(
                pilot,
                lambda: re.search(r"machine now: CPU +\d+%", system_text(screen)),
                10,
                "a live reading of this machine",
            )
            lines = system_text(screen).splitlines()
            assert "trainer now" not in system_text(screen), lines
            record = next(i for i, line in enumerate(lines) if line.startswith("last record"))
            assert "trainer CPU 199%  RSS 1050 MB" in lines[record + 1], lines  # labelled, on the next line
            assert not any("199%" in line or "1050" in line for line in lines[:record]), lines

    asyncio.run(body())


def test_a_running_trainer_is_read_live_by_its_pid(tmp_path):
    run = write_run(tmp_path / "runs" / "live", "running", step=3, total=100, pid=os.getpid())

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            screen = app.screen
            await wait_for(
                pilot,
                lambda: re.search(r"trainer now: CPU +\d+%  RSS \d+ MB", system_text(screen)),
                10,
                "the trainer's process read live",
            )
            assert "1050" not in system_text(screen) and "last record" not in system_text(screen)
            assert "ETA" in str(screen.query_one("#train-numbers").render())

    asyncio.run(body())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_long_log_lines_wrap(tmp_path, size):
    long_line = (
        "[09:00:05] step 8/8 | " + " | ".join(f"field{i} {i}.0000" for i in range(14)) + " | tail-marker"
    )
    run = write_run(tmp_path / "runs" / "done", "finished", log_lines=["[09:00:00] started", long_line])

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=size) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            log = app.screen.query_one("#train-log")
            await wait_for(pilot, lambda: "started" in drawn(log), 60, "the log")
            await wait_for(
                pilot, lambda: "tail-marker" in drawn(log), 60, f"the end of a long line drawn:\n{drawn(log)}"
            )

    asyncio.run(body())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_toasts_leave_the_log_visible(tmp_path, size):
    run = write_run(tmp_path / "runs" / "done", "finished")

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=size, notifications=True) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            log = app.screen.query_one("#train-log")
            await wait_for(pilot, lambda: "started" in drawn(log), 60, "the log")
            app.notify("Stop sent: the trainer saves a checkpoint, then stops. " * 2)
            await wait_for(pilot, lambda: app.screen.query("Toast"), 60, "the toast")
            await pilot.pause(0.2)
            toast = app.screen.query_one("Toast")
            assert not toast.region.overlaps(log.region), (
                f"the toast {toast.region} covers the log {log.region}"
            )

    asyncio.run(body())


def fake_gpus(count: int) -> list[dict]:
    return [
        {
            "index": i,
            "util_percent": 90.0 + i,
            "mem_used_mb": 70_000.0,
            "mem_total_mb": 143_771.0,
            "temp_c": 60.0,
            "power_w": 650.0,
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("gpus, size", [(4, (80, 24)), (8, (80, 24)), (8, (120, 40))])
def test_a_multi_process_run_shows_its_workers_and_every_gpu_of_the_node(tmp_path, monkeypatch, gpus, size):
    """Four workers on a node of `gpus` GPUs: the pace line says the tokens/s are the four together,
    and the system pane has a row per GPU of the live reading. Four rows fit at 80x24; eight fit at
    120x40 and, at 80x24, scroll into view in the side column."""
    from core.telemetry import LiveStats

    # the live reading, pinned as tests/snapshot_runs.py's frozen_clock pins it
    monkeypatch.setattr(
        LiveStats,
        "machine",
        lambda self: {"cpu_percent": 50.0, "ram_used_percent": 40.0, "gpus": fake_gpus(gpus)},
    )
    monkeypatch.setattr(
        LiveStats, "process", lambda self, pid: {"process_cpu_percent": 99.0, "rss_mb": 2048.0}
    )
    run = write_run(tmp_path / "runs" / "ddp", "running", step=3, total=100, pid=os.getpid())
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "world_size": 4}))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({**r, "world_size": 4, "sys": {**r["sys"], "gpus": fake_gpus(4)}}) + "\n"
            for r in records
        )
    )

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=size) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            screen = app.screen
            numbers = screen.query_one("#train-numbers")
            await wait_for(
                pilot, lambda: "(4 workers)" in str(numbers.render()), 10, "the workers on the pace line"
            )
            assert re.search(r"ETA \S+  1\.23K tok/s \(4 workers\)$", str(numbers.render())), str(
                numbers.render()
            )
            await wait_for(pilot, lambda: "trainer now" in system_text(screen), 10, "the live reading")
            await pilot.pause(0.2)  # laid out for the pane's new height
            lines = system_text(screen).splitlines()
            assert [line.split()[0] for line in lines[:gpus]] == [f"GPU{i}" for i in range(gpus)], lines
            assert lines[gpus:] == ["machine now: CPU  50%  RAM 40%", "trainer now: CPU  99%  RSS 2048 MB"]
            side, pane = screen.query_one("#train-side"), screen.query_one("#train-system")

            def hidden() -> int:  # lines of the pane outside the side column's visible part
                return pane.region.height - pane.region.intersection(side.scrollable_content_region).height

            assert (hidden() > 0) == (gpus == 8 and size == (80, 24)), (
                pane.region,
                side.scrollable_content_region,
            )
            assert screen.query_one("#plot-loss").size.height >= 8  # the curves keep room to be read
            if hidden():  # what does not fit is reached by scrolling the side column
                side.scroll_end(animate=False)
                await pilot.pause(0.2)
                assert hidden() == 0

    asyncio.run(body())


def parse_numbers(text: str) -> tuple[int, float, float]:
    """(step, ETA seconds, tokens/s) from `step 21/200  ETA 1m30s  9.28K tok/s`."""
    found = re.search(r"step (\d+)/\d+  ETA (\S+)  (\S+) tok/s", text)
    assert found, text
    eta = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([hms])", found[2]))
    rate = found[3]
    scale = {"K": 1e3, "M": 1e6}.get(rate[-1], 1.0)
    return int(found[1]), float(eta), float(rate.rstrip("KM")) * scale


def test_tokens_per_s_and_eta_change_gradually_over_one_slow_step(tmp_path, monkeypatch):
    """One step five times slower (a checkpoint, another job) moves the ETA and tokens/s a little, not
    from 18s to 1m30s and back."""
    from mdlm_tui.watcher import RunWatcher

    class Quiet:  # the screen's own watcher stays idle: the test hands it each poll
        def __init__(self, *args, **kwargs): ...
        def start(self):
            return self

        def stop(self): ...

    monkeypatch.setattr("mdlm_tui.train.screen.RunWatcher", Quiet)
    run = tmp_path / "runs" / "live"
    run.mkdir(parents=True)
    total, metrics = 200, run / "metrics.jsonl"
    metrics.write_text("")
    watcher = RunWatcher(run, target=None)

    async def body():
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            screen, shown = app.screen, []
            for step in range(1, 41):
                seconds = 0.5 if step == 20 else 0.1
                with open(metrics, "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "event": "train",
                                "step": step,
                                "tokens": 1000 * step,
                                "loss": 5.0,
                                "masked_ce": 5.0,
                                "lr": 1e-3,
                                "tokens_per_s": 1000 / seconds,
                                "time": time.time(),
                            }
                        )
                        + "\n"
                    )
                (run / "status.json").write_text(
                    json.dumps(
                        {  # what the trainer writes: the last interval's ETA
                            "state": "running",
                            "pid": os.getpid(),
                            "host": socket.gethostname(),
                            "heartbeat": time.time(),
                            "step": step,
                            "total_steps": total,
                            "eta_s": (total - step) * seconds,
                            "mtime": step,
                        }
                    )
                )
                screen.post_message(watcher.poll())
                numbers = screen.query_one("#train-numbers")
                await wait_for(
                    pilot, lambda: f"step {step}/" in str(numbers.render()), 60, f"step {step} shown"
                )
                shown.append(parse_numbers(str(numbers.render())))
            for (step, eta, rate), (_, next_eta, next_rate) in zip(shown, shown[1:]):
                assert 0.8 <= next_eta / eta <= 1.25, (
                    f"ETA jumped from {eta:.0f}s to {next_eta:.0f}s after step {step}"
                )
                assert 0.8 <= next_rate / rate <= 1.25, (
                    f"tok/s jumped from {rate:.0f} to {next_rate:.0f} after step {step}"
                )

    asyncio.run(body())


def test_train_screen_shows_words_seen_and_the_next_milestone(tmp_path):
    """Words of training text seen, and the milestone checkpoint (train.save_at_words) due next;
    a run without milestones shows the words alone."""
    with_milestones = write_run(tmp_path / "runs" / "milestones", "finished")
    (with_milestones / "config.yaml").write_text("train:\n  save_at_words: 20K,50K\n")
    plain = write_run(tmp_path / "runs" / "plain", "finished")
    for run in (with_milestones, plain):
        status = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps({**status, "words": 31_000}))

    async def detail_of(run: Path) -> str:
        app = MdlmApp(runs_root=run.parent, watch=run)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), 60, "the Train screen")
            detail = app.screen.query_one("#train-detail")
            await wait_for(pilot, lambda: "words" in str(detail.render()), 10, "the words line")
            await pilot.pause(0.3)
            return str(detail.render())

    assert "words 31.00K  next chck_50K" in asyncio.run(detail_of(with_milestones))
    shown = asyncio.run(detail_of(plain))
    assert "words 31.00K" in shown and "next" not in shown, shown
