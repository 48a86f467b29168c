"""Running the installed `mdlm-tui` command the way a user does."""

import os
import subprocess
import sys
from pathlib import Path


def command() -> list[str]:
    exe = Path(sys.executable).with_name("mdlm-tui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mdlm_tui"]


def mdlm(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """`mdlm-tui ARGS` run to its end in a process of its own: its exit code, stdout and stderr.

    The process is a fork of a server that has imported torch and the CLI once, so the suite's
    couple of hundred commands do not each pay torch's import (2 to 3 s of CPU); what runs is the
    CLI's own `main()`, with the command's arguments, folder and environment. The console script
    itself runs in `start()`, the tmux test and .ci/run."""
    import tempfile

    argv = [str(a) for a in args]
    with tempfile.TemporaryDirectory() as scratch:
        out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
        child = _forks().Process(
            target=_run_main, args=(argv, str(cwd or os.getcwd()), os.environ.copy(), out, err)
        )
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(["mdlm-tui", *argv], timeout)
        code = (
            child.exitcode if child.exitcode >= 0 else 128 - child.exitcode
        )  # killed by a signal, as a shell says
        return subprocess.CompletedProcess(
            ["mdlm-tui", *argv], code, out.read_text(errors="replace"), err.read_text(errors="replace")
        )


_FORKS = None


def _forks():
    global _FORKS
    if _FORKS is None:
        import multiprocessing

        _FORKS = multiprocessing.get_context("forkserver")
        _FORKS.set_forkserver_preload(["torch", "mdlm_tui.cli"])
    return _FORKS


def _run_main(argv: list[str], cwd: str, env: dict, out: Path, err: Path) -> None:
    """In the forked process: become `mdlm-tui ARGV` started in cwd with env, writing to out and err."""
    import io
    import threading
    import traceback

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.argv = ["mdlm-tui", *argv]
    code = 0
    try:
        from mdlm_tui.cli import main

        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    for thread in threading.enumerate():  # as the interpreter does at exit: non-daemon threads finish
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start(*args, cwd=None) -> subprocess.Popen:
    return subprocess.Popen(
        command() + [str(a) for a in args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


async def wait_for(pilot, condition, timeout: float, what: str) -> None:
    """Let a Textual app run until condition() holds, or fail saying what never happened."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.1)


async def show_weight_tab(pilot, app) -> None:
    """On Configure, Tab to the plots' tabs as a person does, then Right to the Weight tab."""
    for _ in range(40):
        if type(app.focused).__name__ == "ContentTabs":
            break
        await pilot.press("tab")
    await pilot.press("right")
    await wait_for(
        pilot, lambda: app.screen.query_one("#configure-plots").active == "tab-weight", 60, "the Weight tab"
    )


def error_line(result: subprocess.CompletedProcess, code: int = 2, alone: bool = False) -> str:
    """The one `error:` line of a command that failed cleanly with `code` (alone: nothing else on stderr)."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [
        line for line in result.stderr.splitlines() if line.strip() and (alone or line.startswith("error:"))
    ]
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
