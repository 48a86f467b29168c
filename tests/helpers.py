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
