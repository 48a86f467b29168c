import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MDLM_TUI_SHARED_DATA", ROOT.parent / "shared" / "data"))


# The suite runs as many small processes side by side (pytest-xdist, one worker per core): one CPU
# thread each, so they share the cores without OpenMP threads spinning against each other, also on a
# machine busy with other work. Set before any test imports torch or starts a command.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Every test session gets its own corpus cache, so tests never read a user's cache."""
    os.environ["MDLM_TUI_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def finished_smoke_run(tmp_path_factory) -> Path:
    """A finished 8-step smoke run with checkpoints step-4 and step-8, trained once per session;
    tests that change it work on a copy."""
    from tests.helpers import mdlm

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    settings = [
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
    result = mdlm("run", "--preset", "smoke", "--run-dir", run_dir, *settings)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a folder on a fresh tmpfs, unmounted after the test. A real file system, because
    chmod does not stop root; skipped where mounting is not allowed."""
    points = []

    def mount(size: str = "64m") -> Path:
        point = tmp_path / f"tmpfs-{len(points)}"
        point.mkdir()
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if made.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip() or 'not root'})")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
