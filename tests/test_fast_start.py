"""`mdlm-tui --help` and the app's first screen never import torch: importing it takes seconds on a
small machine, and a person asking for help or opening the workbench should not wait for it.

Each check runs in a fresh interpreter, so nothing this test session already imported counts.
How long `--help` takes is measured by bench/tui_overhead.py, not asserted here.
"""

from __future__ import annotations

import subprocess
import sys

TORCH_MARKER = "torch imported:"


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def torch_imported(output: str) -> bool:
    line = next(line for line in output.splitlines() if line.startswith(TORCH_MARKER))
    return line.split(":", 1)[1].strip() == "True"


HELP_SNIPPET = f"""
import sys
from mdlm_tui.cli import main
sys.argv = ["mdlm-tui", "--help"]
try:
    main()
except SystemExit as e:
    code = e.code
print("exit code:", code)
print("{TORCH_MARKER}", "torch" in sys.modules)
"""


def test_help_does_not_import_torch():
    result = run_python(HELP_SNIPPET)
    assert result.returncode == 0, result.stderr
    assert "exit code: 0" in result.stdout and "Usage" in result.stdout
    assert not torch_imported(result.stdout)


def test_installed_command_help_imports_no_torch_module():
    # -X importtime lists every module the interpreter imports, one line each on stderr
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mdlm_tui", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "mdlm_tui.cli" in imported
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}


APP_SNIPPET = f"""
import asyncio, sys
from pathlib import Path
from mdlm_tui.app import MdlmApp

app = MdlmApp(runs_root=Path(sys.argv[1]))
print("{TORCH_MARKER}", "torch" in sys.modules)

async def open_first_screen():
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        print("screen:", type(app.screen).__name__)
        print("{TORCH_MARKER}", "torch" in sys.modules)

asyncio.run(open_first_screen())
"""


def test_creating_and_mounting_the_app_does_not_import_torch(tmp_path):
    result = run_python(APP_SNIPPET, str(tmp_path))
    assert result.returncode == 0, result.stderr
    created, mounted = [line for line in result.stdout.splitlines() if line.startswith(TORCH_MARKER)]
    assert not torch_imported(created), "MdlmApp() imported torch"
    assert "screen: RunsScreen" in result.stdout
    assert not torch_imported(mounted), "the Runs screen imported torch"
