"""The Compare screen on run folders written by hand (tests/test_compare.py's writers): the results
table with intervals, the sweep shown as a group, the curve, x-axis and smoothing controls, a legend
that reads without colour, and snapshots at 80x24 and 120x40."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import DataTable, Static

from mdlm_tui.compare.curves import CompareCurves, smooth
from mdlm_tui.compare.screen import CompareScreen
from tests.helpers import wait_for
from tests.test_compare import FIELDS, write_report, write_run


class CompareHost(App):
    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.paths))


def write_runs(root: Path) -> list[Path]:
    """A baseline run and a sweep of two runs, each with a falling loss, dev losses and a report with
    credits at its last step."""
    base = write_run(root / "base", [3.0, 2.6, 2.3, 2.1, 2.0, 1.9], dev={3: 2.5, 6: 2.2})
    write_report(base, "blimp", 6, {"u1": [1, 1, 0, 0] * 5, "u2": [1, 0, 0, 0] * 5}, FIELDS)
    sweep = root / "ablation"
    for name, losses, credits in (
        ("cosine", [3.0, 2.5, 2.1, 1.8, 1.6, 1.5], {"u1": [1, 1, 1, 0] * 5, "u2": [1, 1, 0, 0] * 5}),
        ("linear", [3.0, 2.7, 2.5, 2.4, 2.3, 2.2], {"u1": [1, 0, 0, 0] * 5, "u2": [0, 0, 0, 0] * 5}),
    ):
        run = write_run(sweep / name, losses, dev={3: losses[2] + 0.3, 6: losses[5] + 0.3})
        write_report(run, "blimp", 6, credits, FIELDS)
    rows = [{"name": n, "path": n, "overrides": {"schedule.name": n}} for n in ("cosine", "linear")]
    (sweep / "sweep.json").write_text(json.dumps({"runs": rows}))
    return [base, sweep]


def test_smoothing_is_a_corrected_moving_average():
    assert smooth([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    smoothed = smooth([0.0, 10.0], 0.5)
    assert smoothed == pytest.approx([0.0, 10.0 * 0.5 / 0.75])


def test_the_screen_shows_the_table_the_group_and_the_controls(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    paths = write_runs(tmp_path)

    async def drive():
        app = CompareHost(paths)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            title = screen.query_one("#compare-title", Static)
            await wait_for(pilot, lambda: "baseline" in str(title.render()), 60, "the comparison loaded")
            assert "Comparing 3 runs, 1 sweep: ablation; baseline base" in str(title.render())
            results = screen.query_one("#compare-results", DataTable)
            rows = [results.get_row_at(i) for i in range(results.row_count)]
            assert [row[0] for row in rows] == ["base (baseline)", "cosine", "linear"]
            assert [row[1] for row in rows] == ["", "ablation", "ablation"]  # the sweep is the group
            # blimp: base 37.5 (u1 0.5, u2 0.25), cosine 62.5, linear 12.5, each with its interval
            assert [row[-1].split(" [")[0] for row in rows] == ["37.5", "62.5", "12.5"]
            assert all("[" in row[-1] for row in rows)
            differences = screen.query_one("#compare-differences", DataTable)
            assert differences.row_count == 2 and str(differences.get_row_at(0)[-1]).startswith("+25.0 [")

            plot = screen.query_one(CompareCurves)
            controls = screen.query_one("#compare-controls", Static)
            assert plot.points == 18 and "curve: training loss" in str(controls.render())
            canvas = str(plot.render())
            for marker, name in (("•", "base"), ("+", "cosine"), ("x", "linear")):
                assert f"{marker} {name}" in canvas, (marker, name, canvas)  # told apart without colour

            await pilot.press("m")
            assert "smoothing: 0.6" in str(controls.render())
            await pilot.press("x")
            assert "x axis: tokens" in str(controls.render()) and plot.points == 18
            await pilot.press("v")
            assert "curve: dev loss" in str(controls.render()) and plot.points == 6
            await pilot.press("v")
            assert "curve: eval-blimp" in str(controls.render()) and "x axis: step" in str(controls.render())
            assert plot.points == 3

    asyncio.run(drive())


def test_a_folder_that_is_not_a_run_says_so(tmp_path):
    (tmp_path / "empty").mkdir()

    async def drive():
        app = CompareHost([tmp_path / "empty"])
        async with app.run_test(size=(80, 24)) as pilot:
            title = app.screen.query_one("#compare-title", Static)
            await wait_for(pilot, lambda: "Cannot compare" in str(title.render()), 60, "the refusal")

    asyncio.run(drive())


@pytest.fixture
def relative_runs(tmp_path, monkeypatch):
    """The runs under a relative folder of a fresh working directory, so no temporary path is drawn."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return [path.relative_to(tmp_path) for path in write_runs(tmp_path / "runs")]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_compare_snapshot(size, relative_runs, snap_compare):
    pytest.importorskip("pytest_textual_snapshot", reason="the snapshot tests need the test extra")

    async def loaded(pilot):
        title = pilot.app.screen.query_one("#compare-title", Static)
        await wait_for(pilot, lambda: "baseline" in str(title.render()), 60, "the comparison loaded")

    assert snap_compare(CompareHost(relative_runs), terminal_size=size, run_before=loaded)
