"""The key bar every screen ends with, the thinning that keeps long curves cheap to draw, and how
`mdlm-tui` ends when the app ends on an error."""

from __future__ import annotations

import asyncio
import sys

import pytest

from mdlm_tui.app import MdlmApp
from mdlm_tui.common.curves import thin
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.shell.help import HelpScreen
from tests.test_tui_runs import runs_folder, until

SCREEN_KEYS = {  # the screen's own keys, which must always be readable in full
    "runs": ("o Open/attach", "d Delete"),
    "configure": ("^s Start run", "^f Freq. preview"),
    "train": ("x Stop", "k Checkpoint", "p Pause/resume"),
    "eval": ("^r Run eval", "^b Cancel"),
    "samples": ("space Play/pause", "^n Sample now"),
    "help": ("esc Back",),
}


def key_bar_text(app: MdlmApp) -> str:
    return str(app.screen.query_one(KeyBar).render())


def test_every_screen_fits_its_keys_and_help_into_80_columns(tmp_path):
    runs = runs_folder(tmp_path)

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs", watch=runs["finished"])
        async with app.run_test(size=(80, 24)) as pilot:
            for name, keys in SCREEN_KEYS.items():
                app.action_show(name)
                await until(pilot, lambda: type(app.screen).__name__.lower().startswith(name))
                await pilot.pause(0.1)
                line = key_bar_text(app)
                assert len(line) <= 80 - 2 and not line.endswith("…"), line
                for key in keys:
                    assert key in line, (name, line)
                if name != "help":
                    assert "? Help" in line, line
            app.action_show("train")
            await until(pilot, lambda: type(app.screen).__name__ == "TrainScreen")
            await pilot.pause(0.1)
            # room for the words of the screen keys; the current screen's own key is left out
            assert key_bar_text(app).endswith("│ Runs Configure Eval Samples ? Help Quit")

    asyncio.run(body())


def test_a_wide_terminal_shows_the_palette_and_a_click_presses_the_key(tmp_path):
    runs = runs_folder(tmp_path)

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs", watch=runs["finished"])
        async with app.run_test(size=(160, 30)) as pilot:
            await pilot.pause(0.2)
            line = key_bar_text(app)
            assert line.endswith("│ ^p Palette"), line
            help_at = line.index("? Help")
            await pilot.click(KeyBar, offset=(1 + help_at + 2, 0))  # +1: the bar's left padding
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))

    asyncio.run(body())


def test_thinning_keeps_spikes_ends_and_order():
    xs = list(range(10_000))
    ys = [1.0] * 10_000
    ys[4321] = 100.0  # a loss spike
    ys[7777] = -5.0  # and a dip
    tx, ty = thin(xs, ys, buckets=80)
    assert len(tx) <= 2 * 80 + 2
    assert 100.0 in ty and -5.0 in ty
    assert tx[0] == 0 and tx[-1] == 9_999
    assert tx == sorted(tx) and len(set(tx)) == len(tx)
    short = list(range(50))
    assert thin(short, short, buckets=80) == (short, short)  # nothing to thin


def test_the_workbench_ending_on_an_error_exits_1_with_one_readable_sentence(tmp_path, monkeypatch, capsys):
    """`mdlm-tui` as typed: a stylesheet that does not parse ends the app before any screen is up."""
    from mdlm_tui import cli

    monkeypatch.setattr(MdlmApp, "CSS", "Screen { colour-of-nothing: red; }")
    run = MdlmApp.run
    monkeypatch.setattr(MdlmApp, "run", lambda self, **kwargs: run(self, headless=True, **kwargs))
    monkeypatch.setattr(sys, "argv", ["mdlm-tui", "--runs", str(tmp_path / "runs")])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: mdlm-tui stopped on an unexpected error (StylesheetParseError")
    assert " object at 0x" not in lines[0], lines[0]  # a sentence, not an object's repr
