"""Snapshots of every main screen at 80x24 and 120x40 on the fixture runs of tests/snapshot_runs.py.

A layout change shows up here as a failed comparison with an SVG diff report; after checking the
new look, accept it with `python -m pytest tests/test_tui_snapshots.py --snapshot-update`.
The fixture is written under a relative `runs` folder in a fresh working directory and the clock the
screens read is frozen, so nothing that changes between runs (ages, temporary paths) reaches an image.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "pytest_textual_snapshot", reason="the snapshot tests need the test extra: pip install '.[test]'"
)

from tests.snapshot_runs import (  # noqa: E402
    SCREENS,
    frozen_clock,
    make_app,
    show_runs,
    until,
    write_fixture_runs,
)

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.fixture
def fixture_runs(tmp_path, monkeypatch):
    """The fixture set in a fresh working directory, with colour on and the clock frozen."""
    monkeypatch.chdir(tmp_path)
    # the app reads NO_COLOR when it is made: the snapshots are taken in colour whatever the shell says
    monkeypatch.delenv("NO_COLOR", raising=False)
    write_fixture_runs(Path("runs"))
    with frozen_clock():
        yield


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_screen_snapshot(screen, size, fixture_runs, snap_compare):
    _, bring_up = SCREENS[screen]
    assert snap_compare(make_app(screen), terminal_size=SIZES[size], run_before=bring_up)


async def show_runs_marked(pilot) -> None:
    """The Runs screen with its second run marked (space), as before comparing runs."""
    await show_runs(pilot)
    await pilot.press("down", "space")
    await until(pilot, lambda: len(pilot.app.screen.marks) == 1, "the mark")


def test_runs_snapshot_wide_with_a_mark(fixture_runs, snap_compare):
    """Wide enough for every column: preset, parameters, dev loss, tokens/s and duration too."""
    assert snap_compare(make_app("runs"), terminal_size=(160, 40), run_before=show_runs_marked)
