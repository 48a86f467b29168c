"""Running the installed `mdlm-tui` command the way a user does."""

import os
import subprocess
import sys
from pathlib import Path


def command() -> list[str]:
    exe = Path(sys.executable).with_name("mdlm-tui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mdlm_tui"]


def mdlm(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(command() + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def start(*args, cwd=None) -> subprocess.Popen:
    return subprocess.Popen(command() + [str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


async def wait_for(pilot, condition, timeout: float, what: str) -> None:
    """Let a Textual app run until condition() holds, or fail saying what never happened."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.1)


def error_line(result: subprocess.CompletedProcess, code: int = 2, alone: bool = False) -> str:
    """The one `error:` line of a command that failed cleanly with `code` (alone: nothing else on stderr)."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and (alone or line.startswith("error:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def run_status(run_dir: Path) -> dict:
    import json

    return json.loads((Path(run_dir) / "status.json").read_text())


def wait_until(condition, what: str, timeout: float = 300) -> None:
    """Poll until condition() holds (a state, never a fixed time), or fail saying what never happened."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
