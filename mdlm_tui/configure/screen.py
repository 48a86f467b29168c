"""Configure screen: pick a preset, change the keys that matter, see what the schedule and the
masking will do, and start the run as its own `mdlm-tui run` process.

Validation is the engine's own (`mdlm_tui.launch.validate_overrides`), so the sentence shown under
the form is the one the CLI would print. The plots, the parameter count and the warning about a run
that would take long on this CPU are computed in worker threads (they import torch); the screen
itself stays light.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Label, Select, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from core.config import load_config, preset_names
from core.registry import needs_scores
from mdlm_tui.common.guard import Guarded
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.configure.form import ConfigureForm
from mdlm_tui.configure.plots import FrequencyRankPlot, MaskRateHistogram, WeightVsRate
from mdlm_tui.launch import (
    new_run_dir,
    preset_stem,
    processes_error,
    run_name_error,
    spawn_run,
    validate_overrides,
)

DEFAULT_PRESET = "smoke"
REVALIDATE_AFTER_S = 0.15  # typing "0.25" should validate once, not four times


class ConfigureScreen(Guarded, Screen):
    """Preset picker, form, inline validation, schedule and masking previews, Start."""

    # focused as soon as the screen is composed, before any key typed after the one that showed it;
    # a focus() in on_mount acted later and took the focus back from a person already tabbing
    AUTO_FOCUS = "#configure-preset"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run", priority=True),
        Binding("ctrl+f", "frequency_preview", "Freq. preview", priority=True),
    ]

    DEFAULT_CSS = """
    ConfigureScreen #configure-body { height: 1fr; }
    ConfigureScreen #configure-form-column { width: 40; padding: 0 1; }
    ConfigureScreen #configure-right { width: 1fr; }
    /* 5: room for a warning line */
    ConfigureScreen #configure-verdict { height: auto; max-height: 5; padding: 0 1; }
    ConfigureScreen #configure-verdict.-invalid { text-style: bold; color: $error; }
    ConfigureScreen #configure-buttons { height: auto; margin-top: 1; }
    ConfigureScreen #configure-buttons Button { min-width: 10; margin-right: 1; }
    ConfigureScreen TabbedContent { height: 1fr; }
    ConfigureScreen TabPane { padding: 0; }
    ConfigureScreen #configure-preset-row { height: 1; margin-bottom: 1; }
    ConfigureScreen #configure-preset-row Label { width: 13; }
    """

    class SchedulePreviewReady(Message):
        def __init__(self, cfg, preview, parameters: int, warning: str | None) -> None:
            super().__init__()
            self.cfg, self.preview, self.parameters, self.warning = cfg, preview, parameters, warning

    class FrequencyPreviewReady(Message):
        def __init__(self, preview=None, error: str | None = None) -> None:
            super().__init__()
            self.preview, self.error = preview, error

    class RunStarted(Message):
        """A run was started from this screen: the app opens it."""

        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

    class FrequencyPreviewLog(Message):
        def __init__(self, line: str) -> None:
            super().__init__()
            self.line = line

    def __init__(self, runs_root: Path, preset: str = DEFAULT_PRESET, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs_root = Path(runs_root)
        names = preset_names()
        self.preset = preset if preset in names else names[0]
        self.error: str | None = (
            None  # why Start would refuse the form (the CLI's sentence), None when it would start
        )
        self._shown_cfg = None  # the valid config the verdict describes; a preview of another is stale
        self.last_process: subprocess.Popen | None = None  # the most recent run started from here
        self.last_run_dir: Path | None = None
        self.nproc = 1  # processes the run starts with (the devices field), once the form is valid
        self._revalidate_timer = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="configure-body"):
            with VerticalScroll(id="configure-form-column"):
                with Horizontal(id="configure-preset-row"):
                    yield Label("preset")
                    yield Select(
                        [(name, name) for name in preset_names()],
                        value=self.preset,
                        allow_blank=False,
                        compact=True,
                        id="configure-preset",
                    )
                yield ConfigureForm(id="configure-form")
                with Horizontal(id="configure-buttons"):
                    yield Button("Start ^s", id="configure-start", variant="primary", compact=True)
                    yield Button("Freq. preview ^f", id="configure-preview", compact=True)
            with Vertical(id="configure-right"):
                yield Static("", id="configure-verdict", markup=False)
                with TabbedContent(id="configure-plots"):
                    with TabPane("Mask rate", id="tab-rate"):
                        yield MaskRateHistogram(id="configure-rate-plot")
                    with TabPane("Weight", id="tab-weight"):
                        yield WeightVsRate(id="configure-weight-plot")
                    with TabPane("Frequency", id="tab-frequency"):
                        yield FrequencyRankPlot(id="configure-frequency-plot")
        yield KeyBar(current="show('configure')")

    def on_mount(self) -> None:
        self.load_preset(self.preset)

    # ------------------------------------------------------------ preset and validation

    def load_preset(self, name: str) -> None:
        self.preset = name
        form = self.query_one(ConfigureForm)
        form.show_config(load_config(name), default_run_name=f"{preset_stem(name)}-YYYYmmdd-HHMMSS")
        self.revalidate()

    def overrides(self) -> list[str]:
        return self.query_one(ConfigureForm).overrides()

    def on_select_changed(self, event: Select.Changed) -> None:
        if (
            event.select.id == "configure-preset"
            and event.value != self.preset
            and event.value is not Select.NULL
        ):
            self.load_preset(str(event.value))

    def on_configure_form_edited(self, _: ConfigureForm.Edited) -> None:
        if self._revalidate_timer is not None:
            self._revalidate_timer.stop()
        self._revalidate_timer = self.set_timer(REVALIDATE_AFTER_S, self.revalidate)

    def revalidate(self) -> str | None:
        """Check preset + overrides as the CLI would, the run name and the devices; show the sentence
        or, when valid, the summary. A valid config redraws the plots, even while a name is wrong."""
        self._revalidate_timer = None
        self._shown_cfg = None
        form = self.query_one(ConfigureForm)
        self.error = validate_overrides(self.preset, self.overrides())
        if self.error is None:
            self._shown_cfg = cfg = load_config(self.preset, self.overrides())
            self.compute_schedule_preview(cfg)
            self.error = run_name_error(self.runs_root, form.run_name()) or processes_error(form.devices())
        if self.error is None:
            self.nproc = int(form.devices() or 1)
        verdict = self.query_one("#configure-verdict", Static)
        verdict.set_class(self.error is not None, "-invalid")
        verdict.update(
            f"✗ {self.error}" if self.error is not None else f"✓ {self.preset}: {self._summary(cfg)}"
        )
        return self.error

    def _summary(self, cfg) -> str:
        m = cfg.model
        masking = cfg.masking.kind + (f" p={cfg.masking.p_freq:g}" if needs_scores(cfg.masking.kind) else "")
        processes = f", {self.nproc} processes" if self.nproc > 1 else ""
        return (
            f"{cfg.schedule.name} p={cfg.schedule.power:g}, {masking}, "
            f"{m.num_layers}x{m.hidden_size} ({m.num_heads} heads), {cfg.train.budget}{processes}"
        )

    # ------------------------------------------------------------ previews (worker threads)

    @work(thread=True, exclusive=True, group="schedule-preview", exit_on_error=False)
    def compute_schedule_preview(self, cfg) -> None:
        from mdlm_tui.configure.previews import parameter_count, run_time_warning, schedule_preview

        preview = schedule_preview(cfg.schedule)
        ready = self.SchedulePreviewReady(
            cfg, preview, parameter_count(cfg), run_time_warning(cfg, preview.mean_rate)
        )
        if not get_current_worker().is_cancelled:  # a newer edit started another preview: that one is shown
            self.post_message(ready)

    def on_configure_screen_schedule_preview_ready(self, message: SchedulePreviewReady) -> None:
        if message.cfg != self._shown_cfg:  # computed for a config edited since: a newer preview follows
            return
        self.query_one(MaskRateHistogram).show_preview(message.preview)
        self.query_one(WeightVsRate).show_preview(message.preview)
        if self.error is None:  # a wrong run name keeps its sentence
            warning = (
                f"\n{message.warning}" if message.warning else ""
            )  # a warning, not an error: Start still works
            # the summary is made here, not in the worker: the devices field may have changed since
            self.query_one("#configure-verdict", Static).update(
                f"✓ {self.preset}: {self._summary(message.cfg)}, {message.parameters / 1e6:.1f}M "
                f"parameters{warning}"
            )

    def action_frequency_preview(self) -> None:
        if self._shown_cfg is None:
            self.notify(self.error, title="Config is not valid", severity="error", markup=False)
            return
        self.query_one(TabbedContent).active = "tab-frequency"
        self.query_one(FrequencyRankPlot).show_message("preparing the data (cached corpora are quick) ...")
        self.compute_frequency_preview(self._shown_cfg)

    @work(thread=True, exclusive=True, group="frequency-preview", exit_on_error=False)
    def compute_frequency_preview(self, cfg) -> None:
        from core.errors import UserError
        from mdlm_tui.configure.previews import frequency_preview

        try:
            preview = frequency_preview(
                cfg, log=lambda line: self.post_message(self.FrequencyPreviewLog(line))
            )
        except UserError as e:
            self.post_message(self.FrequencyPreviewReady(error=str(e)))
        except Exception as e:  # shown, never fatal: a preview must not take the app down
            self.post_message(self.FrequencyPreviewReady(error=f"{type(e).__name__}: {e}"))
        else:
            self.post_message(self.FrequencyPreviewReady(preview))

    def on_configure_screen_frequency_preview_log(self, message: FrequencyPreviewLog) -> None:
        self.query_one(FrequencyRankPlot).show_message(message.line[:120])

    def on_configure_screen_frequency_preview_ready(self, message: FrequencyPreviewReady) -> None:
        plot = self.query_one(FrequencyRankPlot)
        if message.error:
            plot.show_message(message.error)
            self.notify(message.error, title="Frequency preview", severity="error", markup=False)
        else:
            plot.show_preview(message.preview)

    # ------------------------------------------------------------ start

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "configure-start":
            self.action_start()
        elif event.button.id == "configure-preview":
            self.action_frequency_preview()

    def action_start(self) -> None:
        """Spawn `mdlm-tui run` into runs_root/<run name or preset-time> and hand over to the Train screen."""
        if self._revalidate_timer is not None:  # a change still waiting to be checked
            self._revalidate_timer.stop()
        if self.revalidate() is not None:
            self.notify(self.error, title="Not started", severity="error", markup=False)
            return
        overrides = self.overrides()
        run_dir = new_run_dir(self.runs_root, self.preset, self.query_one(ConfigureForm).run_name())
        try:
            self.last_process = spawn_run(self.preset, overrides, run_dir, nproc=self.nproc)
        except OSError as e:
            self.notify(f"Could not start the run: {e}.", title="Not started", severity="error", markup=False)
            return
        self.last_run_dir = run_dir
        self.notify(f"started {run_dir} (log: {run_dir / 'train.log'})", title="Run started", markup=False)
        self.post_message(self.RunStarted(run_dir))
