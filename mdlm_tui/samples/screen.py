"""Samples screen: replay the run's unmasking traces step by step, or sample from any checkpoint
with the sampler's options and watch the trace unmask live.

Keys: space play/pause, left/right step, +/- speed, home/end first/last step, ctrl+n sample now.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, OptionList, Select, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option

from core.registry import SAMPLERS
from mdlm_tui.common.checkpoints import current_run, fill_checkpoint_picker
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.common.run_screen import RunScreen
from mdlm_tui.samples.replay import ReplayView
from mdlm_tui.samples.runner import CheckpointSampler, SampleOptions
from mdlm_tui.samples.traces import TraceEntry, read_run_traces, trace_files

TRACE_POLL_S = 3.0  # how often to look for new samples from a training run
# (input id, label, SampleOptions field, parser)
NUMBER_FIELDS = (
    ("sample-length", "length", "length", int),
    ("sample-steps", "steps", "steps", int),
    ("sample-temperature", "temperature", "temperature", float),
    ("sample-top-p", "top_p", "top_p", float),
    ("sample-seed", "seed", "seed", int),
)


class SamplesScreen(RunScreen):
    """A list of traces, a replay view, and a sample-now form."""

    BINDINGS = [
        Binding("space", "toggle_play", "Play/pause"),
        Binding("left", "step(-1)", "Back"),
        Binding("right", "step(1)", "Forward"),
        Binding("plus,equals_sign", "speed(1)", "Faster"),
        Binding("minus", "speed(-1)", "Slower"),
        # priority: the trace list has home/end of its own, which would move to another trace
        Binding("home", "go_to_end(False)", "First", show=False, priority=True),
        Binding("end", "go_to_end(True)", "Last", show=False, priority=True),
        Binding("ctrl+n", "sample_now", "Sample now", priority=True),
    ]

    DEFAULT_CSS = """
    SamplesScreen #samples-list { width: 24; height: 1fr; }
    SamplesScreen #samples-replay-column { width: 1fr; }
    SamplesScreen TabbedContent { height: 1fr; }
    SamplesScreen TabPane { padding: 0; }
    SamplesScreen #samples-form { grid-size: 4; grid-columns: 12 1fr 12 1fr; grid-rows: 1; grid-gutter: 1 1;
                                  height: auto; padding: 1 1 0 1; }
    SamplesScreen #samples-prompt-row { height: 1; margin: 1 1 0 1; }
    SamplesScreen #samples-prompt-row Label { width: 12; }
    SamplesScreen #sample-go { margin: 1 1 0 13; }
    SamplesScreen #samples-status { height: auto; max-height: 3; margin: 0 1; color: $text-muted; }
    SamplesScreen #samples-status.-error { color: $error; text-style: bold; }
    """

    class LiveStep(Message):
        def __init__(self, step: dict) -> None:
            super().__init__()
            self.step = step

    class SampleFinished(Message):
        def __init__(self, path: Path | None = None, error: str | None = None) -> None:
            super().__init__()
            self.path, self.error = path, error

    class Status(Message):
        def __init__(self, line: str) -> None:
            super().__init__()
            self.line = line

    def __init__(self, run: Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run = Path(run) if run is not None else None
        self.entries: list[TraceEntry] = []
        self.sampling = False
        self.sampler = CheckpointSampler()
        self.shown_index: int | None = (
            None  # the entry in the replay view, so a repeated highlight keeps its step
        )
        self._traces_seen: tuple = ()  # sizes of samples.jsonl and the trace files at the last reading
        self.trace_problems: list[str] = []  # what the last reading skipped, shown on the status line

    def compose(self) -> ComposeResult:
        with TabbedContent(id="samples-tabs"):
            with TabPane("Replay", id="tab-replay"):
                with Horizontal():
                    yield OptionList(id="samples-list")
                    with Vertical(id="samples-replay-column"):
                        yield ReplayView(id="samples-replay")
            with TabPane("Sample now", id="tab-sample"):
                with Grid(id="samples-form"):
                    yield Label("checkpoint")
                    yield Select([], prompt="no checkpoints", compact=True, id="sample-checkpoint")
                    yield Label("sampler")
                    yield Select(
                        [(s, s) for s in SAMPLERS.names()],  # a sampler a plugin registered too
                        value=SAMPLERS.names()[0],
                        allow_blank=False,
                        compact=True,
                        id="sample-sampler",
                    )
                    for input_id, label, _, _ in NUMBER_FIELDS:
                        yield Label(label)
                        yield Input("", compact=True, id=input_id)
                with Horizontal(id="samples-prompt-row"):
                    yield Label("prompt")
                    yield Input(
                        "",
                        placeholder="a prefix, or a template with <mask>*N",
                        compact=True,
                        id="sample-prompt",
                    )
                yield Button("Sample ^n", id="sample-go", variant="primary", compact=True)
        yield Static("", id="samples-status", markup=False)
        yield KeyBar(current="show('samples')")

    def on_mount(self) -> None:
        self.refresh_run()
        self.query_one("#samples-list", OptionList).focus()
        self.set_interval(TRACE_POLL_S, self.poll_traces)

    def on_screen_resume(self) -> None:
        if not self.sampling:
            self.refresh_run()

    # ------------------------------------------------------------ the run's traces and checkpoints

    def refresh_run(self) -> None:
        self.run = current_run(self, self.run)
        if self.run is None:
            self.show_status("No run selected: open a run first.", error=True)
            return
        self._fill_form_defaults()
        checkpoints = fill_checkpoint_picker(self.query_one("#sample-checkpoint", Select), self.run)
        self.reload_traces()
        self.show_status(f"{self.run}: {len(self.entries)} trace(s), {len(checkpoints)} checkpoint(s)")

    def _fill_form_defaults(self) -> None:
        """The run's own `samples` settings, once, so sampling here matches sampling while training."""
        if any(self.query_one(f"#{input_id}", Input).value for input_id, *_ in NUMBER_FIELDS):
            return
        defaults = SampleOptions()
        try:
            from core.config import load_saved_config

            section = load_saved_config(self.run / "config.yaml").samples
            defaults = SampleOptions(**asdict(section))
        except Exception:  # no or unreadable config: the sampler's own defaults
            pass
        for input_id, _, name, _ in NUMBER_FIELDS:
            self.query_one(f"#{input_id}", Input).value = str(getattr(defaults, name))
        if defaults.sampler in SAMPLERS:
            self.query_one("#sample-sampler", Select).value = defaults.sampler
        self.query_one("#sample-prompt", Input).value = defaults.prompt or ""

    def reload_traces(self, select_source: Path | None = None) -> None:
        """Re-read the run's traces. The entry on show stays on show, at its step, unless select_source
        names another; with nothing on show the newest entry is shown."""
        shown = (
            self.entries[self.shown_index]
            if self.shown_index is not None and self.shown_index < len(self.entries)
            else None
        )
        self.trace_problems = []
        self.entries = read_run_traces(self.run, self.trace_problems)
        self._traces_seen = self._traces_signature()
        listing = self.query_one("#samples-list", OptionList)
        listing.clear_options()
        listing.add_options(
            [Option(Text(entry.label), id=str(index)) for index, entry in enumerate(self.entries)]
        )
        self.shown_index = None
        if not self.entries:
            return
        keys = [(entry.source, entry.label) for entry in self.entries]
        index = len(self.entries) - 1
        if select_source is not None:
            index = next((i for i, entry in enumerate(self.entries) if entry.source == select_source), index)
        elif shown is not None and (shown.source, shown.label) in keys:
            index = keys.index((shown.source, shown.label))
            self.shown_index = index  # already in the replay view: keep its step
        listing.highlighted = index
        self.show_entry(index)

    def _traces_signature(self) -> tuple:
        samples = self.run / "samples.jsonl"
        size = samples.stat().st_size if samples.is_file() else -1
        return size, tuple((path.name, path.stat().st_size) for path in trace_files(self.run))

    def poll_traces(self) -> None:
        """Pick up samples a training run appends while this screen is open."""
        if self.run is None or self.sampling or not self.is_current:  # coming back reloads them anyway
            return
        try:
            changed = self._traces_signature() != self._traces_seen
        except OSError:  # a file replaced between listing and stat: look again next time
            return
        if changed:
            self.reload_traces()

    def show_entry(self, index: int) -> None:
        if 0 <= index < len(self.entries) and not self.sampling and index != self.shown_index:
            self.shown_index = index
            entry = self.entries[index]
            self.query_one(ReplayView).load(entry.label, entry.steps)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_id is not None:
            self.show_entry(int(event.option_id))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter on a trace moves to the replay, where home and end reach its first and last step."""
        if event.option_id is not None:
            self.show_entry(int(event.option_id))
            self.query_one(ReplayView).focus()

    # ------------------------------------------------------------ replay keys

    def action_toggle_play(self) -> None:
        self.query_one(ReplayView).toggle_play()

    def action_step(self, delta: int) -> None:
        replay = self.query_one(ReplayView)
        replay.pause()
        replay.step_by(delta)

    def action_speed(self, delta: int) -> None:
        self.query_one(ReplayView).change_speed(delta)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "go_to_end" and isinstance(self.focused, Input):
            return False  # home/end move the cursor of a text field
        return super().check_action(action, parameters)

    def action_go_to_end(self, last: bool) -> None:
        replay = self.query_one(ReplayView)
        replay.pause()
        replay.go_to(len(replay.steps) - 1 if last else 0)

    # ------------------------------------------------------------ sample now

    def read_options(self) -> SampleOptions:
        """The form as SampleOptions; ValueError with a sentence for a field that is not a number."""
        options = SampleOptions()
        for input_id, label, name, parse in NUMBER_FIELDS:
            text = self.query_one(f"#{input_id}", Input).value.strip()
            try:
                setattr(options, name, parse(text))
            except ValueError:
                kind = "a whole number" if parse is int else "a number"
                raise ValueError(f"{label} must be {kind}, got '{text}'.") from None
        options.sampler = str(self.query_one("#sample-sampler", Select).value)
        options.prompt = self.query_one("#sample-prompt", Input).value or None
        return options

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "sample-go":
            self.action_sample_now()

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.action_sample_now()

    def action_sample_now(self) -> None:
        if self.sampling:
            self.notify("A sample is being drawn already.", markup=False)
            return
        checkpoint = self.query_one("#sample-checkpoint", Select).value
        if checkpoint is Select.NULL:
            self.show_status("Choose a checkpoint first (the run has none yet).", error=True)
            return
        try:
            options = self.read_options()
        except ValueError as e:
            self.show_status(str(e), error=True)
            return
        self.sampling = True
        self.query_one(TabbedContent).active = "tab-replay"
        replay = self.query_one(ReplayView)
        replay.start_live(f"{Path(str(checkpoint)).name} seed {options.seed}")
        replay.focus()
        self.draw_sample(Path(str(checkpoint)), options)

    @work(thread=True, exclusive=True, group="sample", exit_on_error=False)
    def draw_sample(self, checkpoint: Path, options: SampleOptions) -> None:
        from core.errors import UserError

        try:
            path = self.sampler.sample(
                checkpoint,
                options,
                on_step=lambda step: self.post_message(self.LiveStep(step)),
                status=lambda line: self.post_message(self.Status(line)),
            )
        except UserError as e:
            self.post_message(self.SampleFinished(error=str(e)))
        except Exception as e:  # shown, never fatal
            self.post_message(self.SampleFinished(error=f"{type(e).__name__}: {e}"))
        else:
            self.post_message(self.SampleFinished(path))

    def on_samples_screen_live_step(self, message: LiveStep) -> None:
        self.query_one(ReplayView).add_live_step(message.step)

    def on_samples_screen_status(self, message: Status) -> None:
        self.show_status(message.line)

    def on_samples_screen_sample_finished(self, message: SampleFinished) -> None:
        self.sampling = False
        self.query_one(ReplayView).end_live()
        if message.error:
            self.show_status(message.error, error=True)
            return
        self.reload_traces(select_source=message.path)
        self.query_one(ReplayView).go_to(len(self.query_one(ReplayView).steps) - 1)
        self.show_status(f"saved {message.path}")

    def show_status(self, line: str, error: bool = False) -> None:
        status = self.query_one("#samples-status", Static)
        status.set_class(error, "-error")
        status.update(f"{line}  ! {'; '.join(self.trace_problems)}" if self.trace_problems else line)
