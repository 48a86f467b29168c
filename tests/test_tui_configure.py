"""Configure screen, driven with Pilot at 80x24: inline validation with the CLI's sentences, the
schedule and frequency previews, Start spawning a real `mdlm-tui run` that finishes, keys typed
ahead of the screen, the run name, and the warning about a run too long for this CPU."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from textual import events
from textual.app import App
from textual.keys import _character_to_key
from textual.widgets import Input, Select, Static

from core.config import load_config
from core.runs import RunDir
from mdlm_tui.app import MdlmApp
from mdlm_tui.configure.form import DEVICES_ID, EXTRA_ID, RUN_NAME_ID, field_id
from mdlm_tui.configure.plots import FrequencyRankPlot, MaskRateHistogram, WeightVsRate
from mdlm_tui.configure.screen import ConfigureScreen
from mdlm_tui.launch import parse_extra_overrides, run_command, validate_overrides
from tests.helpers import show_weight_tab, wait_for

SIZE = (80, 24)


class ConfigureHost(App):
    """A stand-in for the real app: hosts the screen and records the runs it starts."""

    def __init__(self, runs_root: Path) -> None:
        super().__init__()
        self.runs_root = runs_root
        self.current_run: Path | None = None
        self.opened: list[Path] = []

    def on_mount(self) -> None:
        self.push_screen(ConfigureScreen(self.runs_root))

    def on_configure_screen_run_started(self, message: ConfigureScreen.RunStarted) -> None:
        self.opened.append(Path(message.run_dir))
        self.current_run = Path(message.run_dir)


def verdict_text(screen) -> str:
    return str(screen.query_one("#configure-verdict", Static).render())


def cli_error(*args: str) -> str:
    """The sentence `mdlm-tui run` prints after 'error: ' for these arguments."""
    done = subprocess.run(
        [sys.executable, "-m", "mdlm_tui", "run", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    return done.stderr.strip().removeprefix("error: ")


def test_extra_overrides_accept_the_cli_spelling():
    assert parse_extra_overrides("--set train.budget=20 steps") == ["train.budget=20 steps"]
    assert parse_extra_overrides("train.lr=1e-3; model.num_layers=3 -s seed=4") == [
        "train.lr=1e-3",
        "model.num_layers=3",
        "seed=4",
    ]
    assert parse_extra_overrides("  ") == []


def test_run_command_is_the_cli(tmp_path):
    assert run_command("smoke", ["train.budget=5 steps"], tmp_path / "r") == [
        sys.executable,
        "-m",
        "mdlm_tui",
        "run",
        "--preset",
        "smoke",
        "--set",
        "train.budget=5 steps",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert run_command("smoke", [], tmp_path / "r", nproc=1) == run_command("smoke", [], tmp_path / "r")
    assert run_command("smoke", [], tmp_path / "r", nproc=4)[6:8] == ["--nproc-per-node", "4"]


def test_invalid_values_show_the_cli_sentence_and_valid_ones_draw_the_plots(tmp_path):
    power_error = cli_error(
        "--preset", "smoke", "--set", "schedule.power=-1", "--run-dir", str(tmp_path / "never")
    )
    key_error = cli_error(
        "--preset", "smoke", "--set", "train.bugdet=3 steps", "--run-dir", str(tmp_path / "never")
    )
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
            await wait_for(pilot, lambda: screen.error == power_error, 60, "the power error")
            assert power_error in verdict_text(screen)

            power.value = "0.5"
            extra = screen.query_one("#extra-overrides", Input)
            extra.value = "train.bugdet=3 steps"
            await wait_for(pilot, lambda: screen.error == key_error, 60, "the unknown-key error")
            assert "Did you mean 'train.budget'?" in verdict_text(screen)

            extra.value = "schedule.name=gaussian"
            await wait_for(pilot, lambda: screen.error is None, 60, "a valid config")
            assert "✓" in verdict_text(screen)
            rates, weights = screen.query_one(MaskRateHistogram), screen.query_one(WeightVsRate)
            await wait_for(
                pilot,
                lambda: (
                    rates.shown is not None
                    and rates.shown.name == "gaussian"
                    and weights.shown is not None
                    and weights.shown.power == 0.5
                ),
                60,
                "the schedule plots",
            )
            shown = rates.shown
            assert len(shown.rates) == len(shown.weights) >= 1000
            assert abs(shown.mean_rate - 0.3) < 0.02  # gaussian mu = 0.3 (SPEC 2)
            assert 0 < min(shown.rates) and max(shown.rates) <= 1
            await wait_for(pilot, lambda: "M parameters" in verdict_text(screen), 60, "the parameter count")

            # bimodal: the histogram shows the right mode at the start and at the end of training
            extra.value = "schedule.name=bimodal"
            await wait_for(
                pilot,
                lambda: rates.shown is not None and rates.shown.name == "bimodal",
                60,
                "the bimodal plot",
            )
            assert (
                abs(rates.shown.mean_rate - 0.232) < 0.01 and abs(rates.shown.mean_rate_end - 0.346) < 0.01
            )  # SPEC 2

    asyncio.run(drive())


def test_frequency_preview_and_start_spawn_a_real_run(tmp_path):
    runs_root = tmp_path / "runs"

    async def drive():
        app = ConfigureHost(runs_root)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            screen.query_one(
                "#extra-overrides", Input
            ).value = "--set train.budget=20 steps; train.dev_every=0"
            await wait_for(
                pilot,
                lambda: (
                    screen.overrides()[-2:] == ["train.budget=20 steps", "train.dev_every=0"]
                    and screen.error is None
                ),
                10,
                "the overrides to validate",
            )

            await pilot.press("ctrl+f")
            plot = screen.query_one(FrequencyRankPlot)
            await wait_for(pilot, lambda: plot.shown is not None, 240, "the frequency preview")
            preview = plot.shown
            assert preview.kind == "frequency" and preview.tokens > 0
            assert preview.sequences == load_config("smoke").train.micro_batch  # one micro-batch is masked
            assert all(0 <= q <= 1 for q in preview.informed + preview.uniform)
            # frequency-informed masking tilts towards rare tokens (SPEC 3): relative to its sequence's
            # rate, the rarest bucket seen is masked more than average and the most frequent less
            assert preview.relative[-1] > 1.1 and preview.relative[0] < 1.0

            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: app.opened, 60, "open_run")
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
    assert (
        validate_overrides("smoke", ["model.num_heads=3"])
        == "model.hidden_size (128) must be divisible by model.num_heads (3)."
    )


def test_the_screens_load_without_torch():
    """The app must start fast: torch is imported only inside workers."""
    code = (
        "import sys; import mdlm_tui.configure.screen, mdlm_tui.eval.screen, mdlm_tui.samples.screen, "
        "mdlm_tui.launch; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------- Weight tab, keys typed ahead, run name, long runs


def test_resizing_by_one_column_on_the_weight_tab_keeps_the_app(tmp_path, monkeypatch):
    """80x24, the Weight tab, one column wider: plotext's log axis once took the log of a log there.
    And should drawing a plot still fail, the app says so and goes on."""
    from textual.geometry import Region

    def drawn(plot) -> str:  # draws the plot at its size now
        return " ".join(" ".join(strip.text for strip in plot.render_lines(Region(0, 0, *plot.size))).split())

    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("c")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, ConfigureScreen) and app.screen.query(WeightVsRate),
                30,
                "the Configure screen",
            )
            plot = app.screen.query_one(WeightVsRate)
            await wait_for(pilot, lambda: plot.shown is not None, 120, "the schedule preview")
            await show_weight_tab(pilot, app)
            for width, height in ((81, 24), (80, 24), (41, 12), (20, 6), (80, 24)):
                await pilot.resize_terminal(width, height)
                await wait_for(pilot, lambda: app.size == (width, height), 60, f"the app at {width}x{height}")
                text = drawn(plot)
                assert app.is_running and app.return_code is None, f"the app ended at {width}x{height}"
                assert app.failures == [] and "failed" not in text, (width, height, app.failures)
            assert "weight, p = 1" in drawn(plot)

            def broken(self):
                raise ValueError("math domain error")

            monkeypatch.setattr(WeightVsRate, "render", broken)
            await pilot.resize_terminal(81, 24)
            await wait_for(
                pilot,
                lambda: any("math domain error" in failure for failure in app.failures),
                10,
                "the failure shown",
            )
            assert "WeightVsRate #configure-weight-plot failed: ValueError: math domain error" in drawn(plot)
            assert app.is_running and app.return_code is None

    asyncio.run(body())


TYPED = "train.budget=30 steps; train.log_every=1; train.dev_every=0"
TABS_TO_EXTRA = 11  # from the preset picker: the ten form fields, then the extra --set line


def type_at_once(app, *keys: str) -> None:
    """Queue keys the way a terminal hands over a burst (a paste, tmux send-keys, typing on a busy
    machine): all of them before the app has handled the first. pilot.press cannot show what happens
    then: it waits for the app to be idle after every key."""
    for key in keys:
        character = key if len(key) == 1 else None
        app.post_message(
            events.Key(_character_to_key(key) if character and not key.isalnum() else key, character)
        )


def field_value(app, selector: str) -> str | None:
    screen = app.screen
    if not isinstance(screen, ConfigureScreen) or not screen.query(selector):
        return None
    return screen.query_one(selector).value


async def wait_for_field(pilot, app, selector: str, text: str, timeout: float = 60) -> None:
    """Wait until the field holds `text`; on a timeout, say what it holds and where the focus is."""
    try:
        await wait_for(
            pilot, lambda: field_value(app, selector) == text, timeout, f"{selector} to hold {text!r}"
        )
    except AssertionError:
        raise AssertionError(
            f"{selector} holds {field_value(app, selector)!r}, not {text!r} "
            f"(screen {type(app.screen).__name__}, focus {app.focused!r})"
        ) from None


def test_keys_typed_at_once_after_c_land_in_the_extra_field(tmp_path):
    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            type_at_once(app, "c", *["tab"] * TABS_TO_EXTRA, *TYPED)
            await wait_for_field(pilot, app, f"#{EXTRA_ID}", TYPED)
            screen = app.screen
            assert screen.overrides() == parse_extra_overrides(TYPED)
            await wait_for(
                pilot,
                lambda: "30 steps" in verdict_text(screen) and "M parameters" in verdict_text(screen),
                60,
                "the verdict for the typed budget",
            )
            assert screen.error is None and app.failures == []

    asyncio.run(body())


def test_keys_read_in_bursts_with_pauses_between_keep_their_order(tmp_path):
    """Tabs then text, read in bursts with short pauses, as a busy terminal delivers them: keys read
    while held ones are being sent on must queue behind them, never overtake them (or be lost)."""
    import random

    typed = "train.budget=1000 steps; train.log_every=1; train.dev_every=0"

    async def burst(seed: int) -> str:
        rng = random.Random(seed)
        app = MdlmApp(runs_root=tmp_path / f"runs-{seed}")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("c")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, ConfigureScreen) and "parameters" in verdict_text(app.screen),
                60,
                "the Configure screen",
            )
            type_at_once(app, *["tab"] * TABS_TO_EXTRA)
            for character in typed:
                type_at_once(app, character)
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() * 0.02)
            await wait_for_field(pilot, app, f"#{EXTRA_ID}", typed)
            return app.screen.query_one(f"#{EXTRA_ID}", Input).value

    for seed in range(6):
        assert asyncio.run(burst(seed)) == typed


def test_a_typo_typed_at_once_after_c_is_named_in_the_verdict(tmp_path):
    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            type_at_once(app, "c", *["tab"] * TABS_TO_EXTRA, *"train.bugdet=3 steps")
            await wait_for_field(pilot, app, f"#{EXTRA_ID}", "train.bugdet=3 steps")
            screen = app.screen
            await wait_for(pilot, lambda: screen.error is not None, 30, "the verdict")
            assert "Unknown config key 'train.bugdet'" in verdict_text(screen), verdict_text(screen)

    asyncio.run(body())


def test_a_field_typed_in_keeps_its_text_through_late_fills_and_a_preset_change(tmp_path):
    async def body():
        app = MdlmApp(runs_root=tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("c")
            await wait_for(
                pilot, lambda: field_value(app, f"#{EXTRA_ID}") is not None, 30, "the Configure form"
            )
            screen = app.screen
            layers = f"#{field_id('model.num_layers')}"
            type_at_once(
                app, *["tab"] * 7, "3"
            )  # preset, schedule, power, masking, p_freq, curriculum, hidden, layers
            await wait_for_field(pilot, app, layers, "3")
            await wait_for(
                pilot,
                lambda: (
                    "2x128" not in verdict_text(screen)
                    and "3x128" in verdict_text(screen)
                    and "M parameters" in verdict_text(screen)
                ),
                60,
                "the verdict for 3 layers",
            )
            # a preset chosen after the edit fills the other fields and keeps the edited one
            screen.query_one("#configure-preset", Select).value = "cosine"
            await wait_for(pilot, lambda: screen.preset == "cosine", 60, "the cosine preset")
            await wait_for_field(pilot, app, f"#{field_id('model.hidden_size')}", "768")
            assert field_value(app, layers) == "3" and "model.num_layers=3" in screen.overrides()

    asyncio.run(body())


def test_a_late_schedule_preview_never_overwrites_the_verdict_of_a_newer_config(tmp_path):
    async def body():
        app = ConfigureHost(tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            screen.query_one(f"#{EXTRA_ID}", Input).value = "train.budget=30 steps"
            await wait_for(
                pilot,
                lambda: (
                    "30 steps" in verdict_text(screen)
                    and "M parameters" in verdict_text(screen)
                    and screen._revalidate_timer is None
                ),
                60,
                "the verdict for 30 steps, nothing left to check",
            )
            # the preview of the preset as it was (500 steps) arrives late, after the edit was shown
            worker = screen.compute_schedule_preview(load_config("smoke"))
            await wait_for(pilot, lambda: worker.is_finished, 60, "the late preview computed")
            handled = []
            screen.call_later(handled.append, True)  # queued behind the late preview's message
            await wait_for(pilot, lambda: handled, 60, "the late preview handled")
            assert "30 steps" in verdict_text(screen) and "500 steps" not in verdict_text(screen), (
                verdict_text(screen)
            )

    asyncio.run(body())


def test_the_run_name_names_the_folder_and_a_bad_or_taken_name_is_a_sentence(tmp_path, monkeypatch):
    runs_root = tmp_path / "runs"
    (runs_root / "taken").mkdir(parents=True)
    # a start that failed before any checkpoint: `mdlm-tui run` starts it afresh in place, so its name is free
    failed = RunDir(runs_root / "failed-start")
    failed.create("seed: 0\n")
    failed.update_status(state="failed", pid=999_999_999, step=0, error="no corpus at /nope")
    started = []
    monkeypatch.setattr(
        "mdlm_tui.configure.screen.spawn_run",
        lambda preset, overrides, run_dir, nproc=1: started.append(run_dir) or subprocess.Popen(["true"]),
    )

    async def body():
        app = ConfigureHost(runs_root)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            name = screen.query_one("#configure-run-name", Input)
            assert name.placeholder.startswith("smoke-")  # the default folder name
            await wait_for(pilot, lambda: "M parameters" in verdict_text(screen), 60, "the first verdict")
            for typed, sentence in (
                ("a/b", "not a simple folder name"),
                ("..", "not a simple folder name"),
                ("taken", "already exists"),
            ):
                name.value = typed
                await wait_for(
                    pilot, lambda: screen.error is not None and sentence in screen.error, 10, sentence
                )
                assert sentence in verdict_text(screen)
                await pilot.press("ctrl+s")
                assert started == [] and app.opened == []
            name.value = "failed-start"
            await wait_for(pilot, lambda: screen.error is None, 60, "the failed start's name accepted")
            name.value = "my-run"
            await wait_for(pilot, lambda: screen.error is None, 60, "a valid name")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: app.opened, 60, "open_run")
            assert started == [runs_root / "my-run"] == app.opened

    asyncio.run(body())


def test_a_run_that_would_take_long_on_this_cpu_is_warned_about_not_refused(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the estimate is for a CPU

    async def body():
        app = ConfigureHost(tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: "M parameters" in verdict_text(screen), 60, "the smoke verdict")
            assert "⚠" not in verdict_text(screen)  # a minute or two: nothing to say
            # a paper-size preset on the embedded corpus
            screen.query_one(f"#{EXTRA_ID}", Input).value = "data.source=auto"
            screen.query_one("#configure-preset", Select).value = "bimodal-p0"
            await wait_for(
                pilot,
                lambda: screen.preset == "bimodal-p0" and "⚠" in verdict_text(screen),
                120,
                "the long-run warning",
            )
            text = verdict_text(screen)
            assert screen.error is None and "✓ bimodal-p0" in text
            assert ("hours" in text or "days" in text) and "cpu-small" in text and "smoke" in text, text

    asyncio.run(body())


def test_devices_start_that_many_processes_and_anything_else_is_a_sentence(tmp_path, monkeypatch):
    """The devices field after the run name: 2 adds `--nproc-per-node 2` to the command Start runs,
    1 (or empty) starts an ordinary run, and a count that is not a whole number of 1 or more is refused."""
    commands = []
    monkeypatch.setattr(
        "mdlm_tui.configure.screen.spawn_run",
        lambda preset, overrides, run_dir, nproc=1: (
            commands.append(run_command(preset, overrides, run_dir, nproc)) or subprocess.Popen(["true"])
        ),
    )

    async def body():
        app = ConfigureHost(tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: "500 steps" in verdict_text(screen), 60, "the first verdict")
            screen.query_one(f"#{RUN_NAME_ID}", Input).focus()
            await pilot.press("tab")
            assert app.focused.id == DEVICES_ID  # the next field after the run name
            devices = screen.query_one(f"#{DEVICES_ID}", Input)
            for typed in ("2.5", "0", "two"):
                sentence = f"devices must be a whole number of processes, 1 or more; got '{typed}'."
                devices.value = typed
                await wait_for(pilot, lambda: screen.error == sentence, 10, f"{typed!r} refused")
                assert sentence in verdict_text(screen)
                await pilot.press("ctrl+s")
                assert commands == []
            devices.value = "2"
            await wait_for(
                pilot,
                lambda: screen.error is None and "2 processes" in verdict_text(screen),
                10,
                "the summary of a two-process run",
            )
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: len(commands) == 1, 60, "the two-process start")
            devices.value = "1"
            await wait_for(
                pilot,
                lambda: screen.error is None and "processes" not in verdict_text(screen),
                10,
                "the summary of a one-process run",
            )
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: len(commands) == 2, 60, "the one-process start")

    asyncio.run(body())
    two, one = commands
    assert two[two.index("--nproc-per-node") + 1] == "2"
    assert "--nproc-per-node" not in one
