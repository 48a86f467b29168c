"""The installed `mdlm-tui` in a real terminal (tmux): start a run from the Configure screen, watch
it, quit; the run goes on without the TUI, and `mdlm-tui watch` attaches to it again.

Each test gets its own tmux server (`tmux -L <name>`), so a user's tmux sessions are never touched
and killing the server at the end removes everything the test started in it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from core.runs import RunDir
from tests.helpers import command

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

WIDTH, HEIGHT = 100, 30
BUDGET_STEPS = 1000  # far more than the test needs: it stops the run itself, so the run never finishes first
STEP_ON_SCREEN = re.compile(r"step (\d+)/(\d+)")


class Tmux:
    """A private tmux server: sessions of a fixed size whose panes stay readable after their program exits."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.socket = f"mdlm-e2e-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.config = workdir / "tmux.conf"
        # remain-on-exit keeps a pane whose program ended, so the test can ask whether it ended
        self.config.write_text("set -g status off\nset -g remain-on-exit on\n")

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if result.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def start(self, session: str, argv: list[str], cwd: Path) -> None:
        env_args = [arg for key, value in self.env.items() for arg in ("-e", f"{key}={value}")]
        self(
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            str(WIDTH),
            "-y",
            str(HEIGHT),
            "-c",
            str(cwd),
            *env_args,
            shlex.join(argv),
        )

    def keys(self, session: str, *keys: str) -> None:
        self("send-keys", "-t", session, *keys)

    def type(self, session: str, text: str) -> None:
        self("send-keys", "-t", session, "-l", text)

    def screen(self, session: str) -> str:
        return self("capture-pane", "-p", "-t", session)

    def pane_dead(self, session: str) -> bool:
        return self("display-message", "-p", "-t", session, "#{pane_dead}").strip() == "1"

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


def wait_for(condition, timeout: float, what: str, interval: float = 0.25, screen=None):
    """Poll until condition() returns something truthy; fail with `what` after `timeout` seconds,
    and with what `screen()` shows then, where given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    shown = f"; the screen:\n{screen()}" if screen is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{shown}")


def steps_on_screen(text: str) -> int | None:
    match = STEP_ON_SCREEN.search(text)
    return int(match.group(1)) if match and match.group(2) == str(BUDGET_STEPS) else None


def wait_for_rising_steps(tmux: Tmux, session: str, timeout: float) -> tuple[int, int]:
    """Two step counts on the Train screen, the second higher: the screen follows a live run."""
    first = wait_for(lambda: steps_on_screen(tmux.screen(session)), timeout, f"a step count on {session}")
    later = wait_for(
        lambda: (n := steps_on_screen(tmux.screen(session))) and n > first and n,
        timeout,
        f"the step count on {session} to rise past {first}",
    )
    return first, later


def status_step(run_dir: Path) -> int:
    return int(RunDir(run_dir).read_status().get("step") or 0)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def tmux(tmp_path):
    env = {"TERM": "xterm-256color", "MDLM_TUI_CACHE": os.environ["MDLM_TUI_CACHE"]}
    server = Tmux(tmp_path, env)
    yield server
    server.kill_server()


def test_start_watch_quit_and_reattach(tmux, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    trainer_pid: int | None = None
    try:
        # 1. The workbench on an empty runs folder; c opens Configure with the smoke preset chosen.
        tmux.start("tui", command() + ["--runs", str(runs)], cwd=tmp_path)
        wait_for(lambda: "Runs in" in tmux.screen("tui"), 30, "the Runs screen")
        # 2. At once, without waiting for the screen: Configure opens with focus on the preset picker,
        # and eleven tabs pass the ten form fields to the extra --set line; keys typed ahead of the
        # screen wait for it, in order.
        tmux.keys("tui", "c", *["Tab"] * 11)
        tmux.type("tui", f"train.budget={BUDGET_STEPS} steps; train.log_every=1; train.dev_every=0")
        # the verdict ("... (4 heads), 1000 steps, 1.1M parameters") may wrap anywhere: compare it unwrapped
        wait_for(
            lambda: f"heads), {BUDGET_STEPS} steps" in " ".join(tmux.screen("tui").split()),
            30,
            "the verdict to take the new budget",
            screen=lambda: tmux.screen("tui"),
        )
        tmux.keys("tui", "C-s")

        # 3. The Train screen follows the run the TUI spawned.
        run_dir = wait_for(lambda: next(iter(runs.glob("smoke-*")), None), 30, "a run folder under runs/")
        first, later = wait_for_rising_steps(tmux, "tui", timeout=90)
        trainer_pid = RunDir(run_dir).read_status().get("pid")
        assert trainer_pid and process_alive(trainer_pid)

        # 4. Quit: the TUI ends, the trainer goes on.
        tmux.keys("tui", "q")
        wait_for(lambda: tmux.pane_dead("tui"), 15, "the TUI to exit after q")
        step_at_quit = status_step(run_dir)
        wait_for(
            lambda: status_step(run_dir) > step_at_quit, 30, "status.json to advance after the TUI exited"
        )
        assert process_alive(trainer_pid)
        assert RunDir(run_dir).read_status()["state"] == "running"

        # 5. `mdlm-tui watch` attaches to the same run and sees it advance.
        tmux.start("watch", command() + ["watch", str(run_dir)], cwd=tmp_path)
        wait_for(lambda: run_dir.name in tmux.screen("watch"), 30, "the run's name in `mdlm-tui watch`")
        reattached, rising = wait_for_rising_steps(tmux, "watch", timeout=60)
        assert reattached > first

        # 6. x on the Train screen stops the run after a checkpoint; the watcher shows it.
        tmux.keys("watch", "x")
        wait_for(lambda: RunDir(run_dir).read_status().get("state") == "stopped", 60, "status 'stopped'")
        wait_for(lambda: not process_alive(trainer_pid), 30, "the trainer process to end")
        wait_for(lambda: "stopped" in tmux.screen("watch"), 15, "'stopped' on the watching screen")
        assert (run_dir / "checkpoints" / "latest").exists()
        tmux.keys("watch", "q")
        wait_for(lambda: tmux.pane_dead("watch"), 15, "`mdlm-tui watch` to exit after q")
    finally:
        tmux.kill_server()
        pid = trainer_pid or RunDir(next(iter(runs.glob("smoke-*")), runs)).read_status().get("pid")
        if pid and process_alive(pid):
            os.kill(pid, signal.SIGKILL)  # only a trainer this test started, found through its own run folder
