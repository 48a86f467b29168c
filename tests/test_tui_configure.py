"""Configure screen, driven with Pilot at 80x24: inline validation with the CLI's sentences, the
schedule and frequency previews, and Start spawning a real `mdlm-tui run` that finishes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from textual.app import App
from textual.widgets import Input, Static

from mdlm_tui.launch import parse_extra_overrides, run_command, validate_overrides
from mdlm_tui.screens.configure import ConfigureScreen
from mdlm_tui.widgets.configure_plots import FrequencyRankPlot, MaskRateHistogram, WeightVsRate
from tests.helpers import wait_for

SIZE = (80, 24)


class ConfigureHost(App):
    """A stand-in for the real app: hosts the screen and records open_run calls."""

    def __init__(self, runs_root: Path) -> None:
        super().__init__()
        self.runs_root = runs_root
        self.current_run: Path | None = None
        self.opened: list[Path] = []

    def on_mount(self) -> None:
        self.push_screen(ConfigureScreen(self.runs_root))

    def open_run(self, path: Path) -> None:
        self.opened.append(Path(path))
        self.current_run = Path(path)


def verdict_text(screen) -> str:
    return str(screen.query_one("#configure-verdict", Static).render())


def cli_error(*args: str) -> str:
    """The sentence `mdlm-tui run` prints after 'error: ' for these arguments."""
    done = subprocess.run([sys.executable, "-m", "mdlm_tui", "run", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    return done.stderr.strip().removeprefix("error: ")


def test_extra_overrides_accept_the_cli_spelling():
    assert parse_extra_overrides("--set train.budget=20 steps") == ["train.budget=20 steps"]
    assert parse_extra_overrides("train.lr=1e-3; model.num_layers=3 -s seed=4") == ["train.lr=1e-3", "model.num_layers=3", "seed=4"]
    assert parse_extra_overrides("  ") == []


def test_run_command_is_the_cli(tmp_path):
    assert run_command("smoke", ["train.budget=5 steps"], tmp_path / "r") == [
        sys.executable, "-m", "mdlm_tui", "run", "--preset", "smoke", "--set", "train.budget=5 steps", "--run-dir", str(tmp_path / "r")]


def test_invalid_values_show_the_cli_sentence_and_valid_ones_draw_the_plots(tmp_path):
    power_error = cli_error("--preset", "smoke", "--set", "schedule.power=-1", "--run-dir", str(tmp_path / "never"))
    key_error = cli_error("--preset", "smoke", "--set", "train.bugdet=3 steps", "--run-dir", str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()

    async def drive():
        app = ConfigureHost(tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, ConfigureScreen) and screen.preset == "smoke"
            power = screen.query_one("#field-schedule-power", Input)
            assert power.value == "1.0"  # the preset's value

            power.focus()
            power.value = ""
            await pilot.press("minus", "1")  # typed, as a person would
            assert power_error == "schedule.power must be non-negative, got -1.0."
            await wait_for(pilot, lambda: screen.error == power_error, 10, "the power error")
            assert power_error in verdict_text(screen)

            power.value = "0.5"
            extra = screen.query_one("#extra-overrides", Input)
            extra.value = "train.bugdet=3 steps"
            await wait_for(pilot, lambda: screen.error == key_error, 10, "the unknown-key error")
            assert "Did you mean 'train.budget'?" in verdict_text(screen)

            extra.value = "schedule.name=gaussian"
            await wait_for(pilot, lambda: screen.error is None, 10, "a valid config")
            assert "✓" in verdict_text(screen)
            rates, weights = screen.query_one(MaskRateHistogram), screen.query_one(WeightVsRate)
            await wait_for(pilot, lambda: rates.shown is not None and rates.shown.name == "gaussian"
                           and weights.shown is not None and weights.shown.power == 0.5, 60, "the schedule plots")
            shown = rates.shown
            assert len(shown.rates) == len(shown.weights) >= 1000
            assert abs(shown.mean_rate - 0.3) < 0.02  # gaussian mu = 0.3 (SPEC 2)
            assert 0 < min(shown.rates) and max(shown.rates) <= 1
            await wait_for(pilot, lambda: "M parameters" in verdict_text(screen), 10, "the parameter count")

            # bimodal: the histogram shows the right mode at the start and at the end of training
            extra.value = "schedule.name=bimodal"
            await wait_for(pilot, lambda: rates.shown is not None and rates.shown.name == "bimodal", 60, "the bimodal plot")
            assert abs(rates.shown.mean_rate - 0.232) < 0.01 and abs(rates.shown.mean_rate_end - 0.346) < 0.01  # SPEC 2

    asyncio.run(drive())


def test_frequency_preview_and_start_spawn_a_real_run(tmp_path):
    runs_root = tmp_path / "runs"

    async def drive():
        app = ConfigureHost(runs_root)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            screen.query_one("#extra-overrides", Input).value = "--set train.budget=20 steps; train.dev_every=0"
            await wait_for(pilot, lambda: screen.overrides()[-2:] == ["train.budget=20 steps", "train.dev_every=0"]
                           and screen.error is None, 10, "the overrides to validate")

            await pilot.press("ctrl+f")
            plot = screen.query_one(FrequencyRankPlot)
            await wait_for(pilot, lambda: plot.shown is not None, 240, "the frequency preview")
            preview = plot.shown
            assert preview.kind == "frequency" and preview.sequences == 32 and preview.tokens > 0
            assert all(0 <= q <= 1 for q in preview.informed + preview.uniform)
            # frequency-informed masking tilts towards rare tokens (SPEC 3): relative to its sequence's
            # rate, the rarest bucket seen is masked more than average and the most frequent less
            assert preview.relative[-1] > 1.1 and preview.relative[0] < 1.0

            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: app.opened, 10, "open_run")
            return app.opened[0], screen.last_process

    run_dir, process = asyncio.run(drive())
    assert run_dir.parent == runs_root and run_dir.name.startswith("smoke-")
    # the TUI has exited; the run goes on by itself and finishes
    assert process.wait(timeout=240) == 0, (run_dir / "train.log").read_text()[-2000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 20
    assert "budget: 20 steps" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "train.log").stat().st_size > 0


def test_validate_overrides_matches_load_config():
    assert validate_overrides("smoke", []) is None
    assert validate_overrides("nope", []).startswith("Unknown preset 'nope'.")
    assert validate_overrides("smoke", ["model.num_heads=3"]) == "model.hidden_size (128) must be divisible by model.num_heads (3)."


def test_the_screens_load_without_torch():
    """The app must start fast: torch is imported only inside workers."""
    code = ("import sys; import mdlm_tui.screens.configure, mdlm_tui.screens.eval, mdlm_tui.screens.samples, "
            "mdlm_tui.launch; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
