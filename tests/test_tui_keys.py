"""Keys across the app: Escape leaves a text field so the app's keys work again, and the Help screen
lists every key of every screen (taken from their bindings, so it cannot fall behind)."""

from __future__ import annotations

import asyncio

from textual.binding import Binding
from textual.widgets import Input

from mdlm_tui.app import MdlmApp
from mdlm_tui.configure.form import EXTRA_ID, field_id
from mdlm_tui.configure.screen import ConfigureScreen
from mdlm_tui.eval.screen import EvalScreen
from mdlm_tui.run_list.screen import RunsScreen
from mdlm_tui.samples.screen import SamplesScreen
from mdlm_tui.shell.help import HelpScreen
from mdlm_tui.train.screen import TrainScreen
from tests.helpers import wait_for


def test_escape_leaves_a_text_field_so_app_keys_work(tmp_path):
    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            for field in (f"#{field_id('schedule.power')}", f"#{EXTRA_ID}"):
                app.action_show("configure")
                await wait_for(
                    pilot,
                    lambda: isinstance(app.screen, ConfigureScreen) and app.screen.query(field),
                    60,
                    "the Configure form",
                )
                entry = app.screen.query_one(field, Input)
                entry.focus()
                await wait_for(pilot, lambda: app.focused is entry, 60, f"{field} focused")
                before = entry.value
                await pilot.press("escape")
                await pilot.press("r")  # an app key: the Runs screen
                await wait_for(
                    pilot, lambda: isinstance(app.screen, RunsScreen) or entry.value != before, 10, "r to act"
                )
                assert entry.value == before, f"r went into {field}: {entry.value!r}"
                assert isinstance(app.screen, RunsScreen)

    asyncio.run(body())


def test_help_lists_every_key_of_every_screen(tmp_path):
    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), 60, "the Help screen")
            lines = str(app.screen.query_one("#help-text").render()).splitlines()
            screens = (
                MdlmApp,
                RunsScreen,
                ConfigureScreen,
                TrainScreen,
                EvalScreen,
                SamplesScreen,
                HelpScreen,
            )
            for owner in screens:
                for binding in Binding.make_bindings(owner.BINDINGS):
                    key, description = app.get_key_display(binding), binding.description
                    assert any(key in line and description in line for line in lines), (
                        f"{owner.__name__}: {key} {description} is not on the Help screen"
                    )

    asyncio.run(body())
