"""A schedule, a masking kind, a sampler and a suite from a user's module (tests/plugin_example.py,
named by MDLM_TUI_PLUGINS) work through `mdlm-tui run`, `eval` and `sample` and show in the TUI's
lists (Configure, Samples), with no file of the package touched."""

import importlib
import json

import pytest
import yaml

from core.registry import MASKING_KINDS, SAMPLERS, SCHEDULES
from core.suites import SUITES
from tests.helpers import mdlm

PLUGIN = "tests.plugin_example"
NAMES = {
    SCHEDULES: "plugin-power",
    MASKING_KINDS: "plugin-positional",
    SAMPLERS: "plugin-left-to-right",
    SUITES: "plugin-pairs",
}


@pytest.fixture
def plugins(monkeypatch):
    monkeypatch.setenv("MDLM_TUI_PLUGINS", PLUGIN)


@pytest.fixture
def registered_here():
    """The plugin imported into this process too (for the Configure screen), then taken out again."""
    importlib.import_module(PLUGIN)
    yield
    for registry, name in NAMES.items():
        registry.unregister(name)
    import sys

    sys.modules.pop(PLUGIN, None)


@pytest.mark.slow
def test_a_plugin_trains_evaluates_and_samples_through_the_commands(tmp_path, plugins):
    run_dir = tmp_path / "run"
    result = mdlm(
        "run",
        "--preset",
        "smoke",
        "--device",
        "cpu",
        "--run-dir",
        run_dir,
        "--set",
        "schedule.name=plugin-power",
        "--set",
        "schedule.exponent=3",
        "--set",
        "masking.kind=plugin-positional",
        "--set",
        "train.budget=6 steps",
        "--set",
        "train.checkpoint_every=6",
        "--set",
        "train.dev_every=0",
    )
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["schedule"]["name"] == "plugin-power" and saved["schedule"]["exponent"] == 3
    assert saved["masking"]["kind"] == "plugin-positional"

    evaluated = mdlm("eval", run_dir, "--suite", "plugin-pairs", "--json", tmp_path / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert "plugin-pairs" in json.dumps(report)

    sampled = mdlm(
        "sample",
        run_dir,
        "--sampler",
        "plugin-left-to-right",
        "--length",
        8,
        "--steps",
        4,
        "--trace",
        tmp_path / "trace.jsonl",
    )
    assert sampled.returncode == 0, sampled.stderr
    rows = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    masked = [row["masked"] for row in rows if "masked" in row]
    assert masked[:2] == [7, 6]  # one position a step, from the left


def test_a_plugin_that_cannot_be_imported_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("MDLM_TUI_PLUGINS", "no_such_plugin_module")
    result = mdlm("presets")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MDLM_TUI_PLUGINS names no_such_plugin_module, which could not be imported" in result.stderr


def test_configure_lists_the_plugins_schedule_and_masking_kind(tmp_path, registered_here):
    import asyncio

    from textual.widgets import Select

    from mdlm_tui.configure.form import field_id
    from tests.test_tui_configure import ConfigureHost

    async def options() -> dict:
        app = ConfigureHost(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            return {
                key: [value for _, value in app.screen.query_one(f"#{field_id(key)}", Select)._options]
                for key in ("schedule.name", "masking.kind")
            }

    listed = asyncio.run(options())
    assert "plugin-power" in listed["schedule.name"] and "cosine" in listed["schedule.name"]
    assert "plugin-positional" in listed["masking.kind"]


def test_the_samples_screen_offers_the_plugins_sampler(tmp_path, registered_here):
    import asyncio

    from textual.widgets import Select

    from tests.test_tui_samples import SamplesHost

    run = tmp_path / "run"
    run.mkdir()

    async def options() -> list:
        app = SamplesHost(run)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            return [value for _, value in app.screen.query_one("#sample-sampler", Select)._options]

    listed = asyncio.run(options())
    assert "plugin-left-to-right" in listed and "ancestral" in listed


def test_help_lists_the_plugins_names(plugins):
    assert "plugin-left-to-right" in mdlm("sample", "--help").stdout
    assert "plugin-power" in mdlm("schedule", "--help").stdout
    assert "plugin-pairs" in mdlm("eval", "--help").stdout
