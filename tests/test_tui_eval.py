"""Eval screen, driven with Pilot at 80x24 on a tiny real run: the per-UID table fills, the macro
shows, a report is saved where `mdlm-tui eval` saves it, and earlier reports are compared."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input, Select, Static

from mdlm_tui.eval.screen import EvalScreen
from mdlm_tui.eval.table import EvalTable
from tests.helpers import wait_for

SIZE = (80, 24)
TINY_STEPS = 10
_tiny_runs: dict[str, Path] = {}


def trained_tiny_run(tmp_path_factory) -> Path:
    """A smoke run of TINY_STEPS steps, trained once per test session (the Samples tests share it)."""
    if "run" not in _tiny_runs:
        run = tmp_path_factory.mktemp("tui") / "tiny"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mdlm_tui",
                "run",
                "--preset",
                "smoke",
                "--run-dir",
                str(run),
                "--set",
                f"train.budget={TINY_STEPS} steps",
                "--set",
                "train.dev_every=0",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        _tiny_runs["run"] = run
    return _tiny_runs["run"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return trained_tiny_run(tmp_path_factory)


class EvalHost(App):
    def __init__(self, run: Path) -> None:
        super().__init__()
        self.run_path = run

    def on_mount(self) -> None:
        self.push_screen(EvalScreen(self.run_path))


def newest_report(run: Path, made: str) -> Path | None:
    """The report saved last of those named `made` and a time (builtin-step-8-pll-limit2-<time>.json)."""
    found = sorted((run / "eval").glob(f"{made}-*T*.json"), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


async def run_builtin(pilot, screen: EvalScreen, limit: str = "5") -> None:
    screen.query_one("#eval-limit", Input).value = limit
    finished = screen.evaluations_finished
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: screen.evaluations_finished > finished, 180, "the evaluation to finish")
    assert not screen.running


def test_builtin_suite_fills_the_table_uid_by_uid(tiny_run):
    async def drive():
        app = EvalHost(tiny_run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert screen.query_one("#eval-checkpoint", Select).value == str(
                tiny_run / "checkpoints" / f"step-{TINY_STEPS}"
            )
            table = screen.query_one(EvalTable)
            counts = []
            original = table.add_result
            table.add_result = lambda *args: (original(*args), counts.append(table.row_count))
            await run_builtin(pilot, screen)
            report_path = newest_report(tiny_run, f"builtin-step-{TINY_STEPS}-pll-limit5")
            status = str(screen.query_one("#eval-status", Static).render())
            assert f"done: 1 report(s) saved: eval/{report_path.name}" in status, status
            assert counts == [1, 2, 3, 4, 5, 6, 7]  # one row per UID, as each was scored
            assert table.row_count == 7
            macro = str(screen.query_one("#eval-macro", Static).render())
            saved = json.loads(report_path.read_text())
            assert f"builtin macro {100 * saved['macro']:.1f}" in macro
            assert len(saved["per_uid"]) == 7 and all(row["n"] == 5 for row in saved["per_uid"].values())
            assert saved["n"] == 35 and saved["backend"] == "pll" and saved["limit"] == 5
            assert saved["step"] == TINY_STEPS and saved["time"] > 0
            # scored UID by UID, the report still holds each item's credit, as `mdlm-tui eval` saves it
            for uid, row in saved["per_uid"].items():
                credits = saved["credits"][uid]
                assert len(credits) == 5 and sum(credits) / 5 == pytest.approx(row["accuracy"])
            shown = {uid: table.get_cell(f"builtin/{uid}", "now") for uid in saved["per_uid"]}
            assert shown == {uid: f"{100 * row['accuracy']:.1f}" for uid, row in saved["per_uid"].items()}

    asyncio.run(drive())


def test_compares_with_an_earlier_report(tiny_run):
    # an earlier evaluation of the same suite, as if written at step 5 with every pair right
    current = newest_report(tiny_run, f"builtin-step-{TINY_STEPS}-pll-limit5")
    if current is None:
        pytest.skip("needs the report of the previous test")
    earlier = json.loads(current.read_text())
    for row in earlier["per_uid"].values():
        row["accuracy"] = 1.0
    earlier["macro"] = 1.0
    earlier_path = tiny_run / "eval" / "builtin-step-5-pll-limit5.json"
    earlier_path.write_text(json.dumps(earlier))

    async def drive():
        app = EvalHost(tiny_run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await run_builtin(pilot, screen)
            table = screen.query_one(EvalTable)
            report = json.loads(newest_report(tiny_run, f"builtin-step-{TINY_STEPS}-pll-limit5").read_text())
            for uid, row in report["per_uid"].items():
                assert table.get_cell(f"builtin/{uid}", "earlier") == "100.0"
                assert table.get_cell(f"builtin/{uid}", "delta") == f"{100 * (row['accuracy'] - 1.0):+.1f}"
            macro = str(screen.query_one("#eval-macro", Static).render())
            assert "vs step-5 100.0" in macro

            # choosing "none" empties the comparison
            screen.query_one("#eval-compare", Select).value = "none"
            await pilot.pause(0.2)
            assert all(table.get_cell(f"builtin/{uid}", "earlier") == "" for uid in report["per_uid"])

    try:
        asyncio.run(drive())
    finally:
        earlier_path.unlink()


def test_dev_nelbo_as_the_cli_computes_it(tiny_run):
    async def drive():
        app = EvalHost(tiny_run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            screen.query_one("#eval-suites", Input).value = "dev"
            await run_builtin(pilot, screen)
            saved = json.loads((tiny_run / "eval" / f"dev-step-{TINY_STEPS}-nelbo.json").read_text())
            macro = str(screen.query_one("#eval-macro", Static).render())
            assert f"dev NELBO {saved['dev_nelbo_per_token']:.4f} nats/token" in macro
            assert saved["dev_seed"] == 0 and saved["dev_tokens"] > 0

    asyncio.run(drive())


def test_a_bad_suite_shows_the_sentence(tiny_run):
    async def drive():
        app = EvalHost(tiny_run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            screen.query_one("#eval-suites", Input).value = "blimp"
            screen.query_one("#eval-data-dir", Input).value = str(tiny_run / "nowhere")
            await run_builtin(pilot, screen)
            status = screen.query_one("#eval-status", Static)
            assert "Suite 'blimp' not found" in str(status.render())
            assert status.has_class("-error")

    asyncio.run(drive())


def test_a_run_without_checkpoints_says_so(tmp_path):
    shutil.copy(Path(__file__).resolve().parents[1] / "presets" / "smoke.yaml", tmp_path / "config.yaml")

    async def drive():
        app = EvalHost(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await pilot.press("ctrl+r")
            assert not screen.running
            assert "has no checkpoint yet" in str(screen.query_one("#eval-status", Static).render())

    asyncio.run(drive())


# ---------------------------------------------------------------- on a copy of the finished smoke run


def smoke_copy(finished_smoke_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared run, without the reports other tests' evaluations may have left in it."""
    run = tmp_path / "run"
    shutil.copytree(finished_smoke_run, run, ignore=shutil.ignore_patterns("eval"))
    return run


def shown_lines(widget) -> list[str]:
    """The text rows a widget shows on the screen."""
    from textual.geometry import Region

    return [
        strip.text.rstrip()
        for strip in widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    ]


def test_compares_with_the_nearest_earlier_report_made_alike(finished_smoke_run, tmp_path):
    run = smoke_copy(finished_smoke_run, tmp_path)

    async def drive():
        app = EvalHost(run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            picker, table = screen.query_one("#eval-checkpoint", Select), screen.query_one(EvalTable)
            macro = screen.query_one("#eval-macro", Static)
            await run_builtin(pilot, screen, limit="2")  # step-8, the newest
            picker.value = str(run / "checkpoints" / "step-4")
            await run_builtin(pilot, screen, limit="2")
            earlier = {uid: table.get_cell(f"builtin/{uid}", "earlier") for _, uid in table.results}
            assert set(earlier.values()) == {""}, f"step-4 compared with a later step: {earlier}"
            assert table.columns["earlier"].label.plain == "vs none"
            assert "no earlier report with the same settings" in str(macro.render())

            # nearer than step-4 but made with another limit, or not saying how it was made: not compared
            step4 = json.loads(newest_report(run, "builtin-step-4-pll-limit2").read_text())
            perfect = {
                **step4,
                "per_uid": {uid: {**row, "accuracy": 1.0} for uid, row in step4["per_uid"].items()},
            }
            (run / "eval" / "builtin-step-6-pll-limit3.json").write_text(json.dumps({**perfect, "limit": 3}))
            old = {
                key: value
                for key, value in perfect.items()
                if key not in ("limit", "weights", "rate_value", "draws")
            }
            (run / "eval" / "builtin-step-7-pll.json").write_text(json.dumps(old))
            picker.value = str(run / "checkpoints" / "step-8")
            await run_builtin(pilot, screen, limit="2")
            assert table.columns["earlier"].label.plain == "vs step-4"
            for uid, row in step4["per_uid"].items():
                assert table.get_cell(f"builtin/{uid}", "earlier") == f"{100 * row['accuracy']:.1f}"
            assert f"vs step-4 {100 * step4['macro']:.1f}" in str(macro.render())

    asyncio.run(drive())


def test_checkpoint_picker_follows_the_run(finished_smoke_run, tmp_path):
    run = smoke_copy(finished_smoke_run, tmp_path)
    written_later = tmp_path / "written-later"
    (run / "checkpoints").rename(written_later)

    async def drive():
        app = EvalHost(run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            picker, status = (
                screen.query_one("#eval-checkpoint", Select),
                screen.query_one("#eval-status", Static),
            )
            await wait_for(
                pilot, lambda: "has no checkpoint yet" in str(status.render()), 60, "no checkpoint said"
            )
            assert picker.value == Select.NULL and picker.prompt == "no checkpoints"

            written_later.rename(run / "checkpoints")  # the trainer writes its first checkpoints
            newest = str(run / "checkpoints" / "step-8")
            await wait_for(pilot, lambda: picker.value == newest, 60, "the new checkpoints in the picker")
            assert "no checkpoint" not in picker.prompt, "the blank row still says there are none"
            assert "no checkpoint" not in str(status.render())

            picker.clear()  # the blank row chosen: the run still has checkpoints to evaluate
            await run_builtin(pilot, screen, limit="1")
            assert "done" in str(status.render()), str(status.render())

    asyncio.run(drive())


def test_messages_show_whole_at_80_columns(finished_smoke_run, tmp_path):
    run = smoke_copy(finished_smoke_run, tmp_path)
    nowhere = (
        tmp_path / ("a-folder-with-a-long-name-" * 2) / ("and-another-long-folder-name-" * 2) / "nowhere"
    )

    async def drive():
        app = EvalHost(run)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            status = screen.query_one("#eval-status", Static)
            screen.query_one("#eval-suites", Input).value = "blimp"
            screen.query_one("#eval-data-dir", Input).value = str(nowhere)
            await run_builtin(pilot, screen)
            remedy = "pass --data pointing at the BabyLM evaluation_data folder."

            def shown():
                return "".join(shown_lines(status)).replace(" ", "")

            await wait_for(
                pilot, lambda: remedy.replace(" ", "") in shown(), 60, "the remedy shown, not cut off"
            )
            lines = shown_lines(status)
            for name in nowhere.parts[1:]:  # a path wider than the screen breaks between its folders
                assert any(name in line for line in lines), f"{name} cut in two: {lines}"

            screen.query_one("#eval-suites", Input).value = "builtin"
            await run_builtin(pilot, screen, limit="2")
            saved = f"eval/{newest_report(run, 'builtin-step-8-pll-limit2').name}"
            await wait_for(
                pilot,
                lambda: any(saved in line for line in shown_lines(status)),
                10,
                f"{saved} shown whole on one line",
            )

    asyncio.run(drive())
