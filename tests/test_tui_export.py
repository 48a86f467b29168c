"""Exporting a run from the Runs screen: E opens the dialog on the selected run, Enter exports it in a
thread to a Hugging Face folder, and a refusal (a folder that is not empty) shows its one sentence and
writes nothing."""

from __future__ import annotations

import asyncio
import shutil

from textual.widgets import Input

from mdlm_tui.app import MdlmApp
from mdlm_tui.run_list.export_dialog import ExportScreen
from mdlm_tui.run_list.screen import RunsScreen
from tests.helpers import wait_for

EXPORT_TIMEOUT_S = 120


def result_text(app) -> str:
    return str(app.screen.query_one("#export-result").render())


async def open_dialog(app, pilot) -> ExportScreen:
    await wait_for(
        pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.rows, 60, "the run listed"
    )
    await pilot.press("E")
    await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen), 10, "the export dialog")
    return app.screen


def test_export_dialog_writes_a_model_folder(finished_smoke_run, tmp_path):
    run = tmp_path / "runs" / "smoke"
    shutil.copytree(finished_smoke_run, run)
    out = tmp_path / "exports" / "smoke"

    async def body():
        app = MdlmApp(runs_root=run.parent)
        async with app.run_test(size=(120, 40)) as pilot:
            dialog = await open_dialog(app, pilot)
            assert dialog.query_one(Input).value == str(out)  # exports/<run> beside the runs folder
            await pilot.press("enter")
            await wait_for(pilot, lambda: "Exported" in result_text(app), EXPORT_TIMEOUT_S, "the export")
            assert any(f"to {out}" in n.message for n in app._notifications)
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), 10, "the dialog closed")

    asyncio.run(body())
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def test_export_into_a_non_empty_folder_says_so_and_writes_nothing(finished_smoke_run, tmp_path):
    run = tmp_path / "runs" / "smoke"
    shutil.copytree(finished_smoke_run, run)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    async def body():
        app = MdlmApp(runs_root=run.parent)
        async with app.run_test(size=(120, 40)) as pilot:
            dialog = await open_dialog(app, pilot)
            dialog.query_one(Input).value = str(out)
            await pilot.press("enter")
            sentence = f"{out} already exists and is not empty: choose a new folder, or empty it first."
            await wait_for(pilot, lambda: sentence in result_text(app), EXPORT_TIMEOUT_S, "the refusal")
            assert any(n.message == sentence and n.severity == "error" for n in app._notifications)
            assert isinstance(app.screen, ExportScreen)  # left open to choose another folder

    asyncio.run(body())
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "exports").exists() and not list(tmp_path.glob(".taken.*"))
