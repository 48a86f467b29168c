"""A deleted run goes to <runs root>/.trash and `mdlm-tui restore` brings it back, byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import error_line, mdlm


def tree(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_restore_brings_a_trashed_run_back_intact(finished_smoke_run, tmp_path):
    from core.runs import trash_run
    from mdlm_tui.run_list.screen import find_runs

    root = tmp_path / "runs"
    run = root / "smoke"
    shutil.copytree(finished_smoke_run, run)
    before = tree(run)

    trashed = trash_run(run)
    assert not run.exists() and trashed.parent == root / ".trash"
    assert find_runs(root) == []

    listed = mdlm("restore", "--runs", root, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert trashed.name in listed.stdout and "smoke" in listed.stdout

    restored = mdlm("restore", "smoke", "--runs", root, timeout=120)
    assert restored.returncode == 0, restored.stderr
    assert tree(run) == before
    assert find_runs(root) == [run] and not trashed.exists()

    assert "smoke" in error_line(
        mdlm("restore", "smoke", "--runs", root, timeout=120)
    )  # nothing left to restore
    trashed = trash_run(run)
    shutil.copytree(finished_smoke_run, run)  # a new run took the name meanwhile
    assert "already" in error_line(mdlm("restore", trashed.name, "--runs", root, timeout=120))
    assert trashed.exists()
