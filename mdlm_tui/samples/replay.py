"""Replaying an unmasking trace step by step.

A masked position is drawn as a block glyph in reverse video: the glyph alone survives NO_COLOR and
monochrome terminals, the reverse style makes the holes stand out where styles are shown.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from mdlm_tui.common.guard import Guarded
from mdlm_tui.samples.traces import MASK_TEXT

MASK_GLYPH = "░"
MASK_STYLE = "reverse"
SPEEDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # steps per second


def render_masked(text: str) -> Text:
    """Trace text with every MASK_TEXT shown as one reverse-video block."""
    out = Text()
    for index, part in enumerate(text.split(MASK_TEXT)):
        if index:
            out.append(MASK_GLYPH, style=MASK_STYLE)
        out.append(part)
    return out


class ReplayView(Guarded, Static):
    """The current step of a trace: a status line, then the text. Playback is driven by the screen's
    keys (space, left, right, +, -, home, end) through the methods below."""

    DEFAULT_CSS = """
    ReplayView { height: 1fr; padding: 0 1; overflow-y: auto; }
    ReplayView:focus { background: $boost; }
    """
    can_focus = True

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.steps: list[dict] = []
        self.index = 0
        self.label = ""
        self.playing = False
        self.speed_index = SPEEDS.index(4.0)
        self.live = False  # steps are arriving from a sampler now
        self._timer = None

    def on_mount(self) -> None:
        self.redraw()

    @property
    def speed(self) -> float:
        return SPEEDS[self.speed_index]

    @property
    def current(self) -> dict | None:
        return self.steps[self.index] if self.steps else None

    def load(self, label: str, steps: list[dict], at_end: bool = False) -> None:
        self.pause()
        self.label, self.steps, self.live = label, list(steps), False
        self.index = len(self.steps) - 1 if at_end and self.steps else 0
        self.redraw()

    def start_live(self, label: str) -> None:
        self.pause()
        self.label, self.steps, self.index, self.live = label, [], 0, True
        self.redraw()

    def add_live_step(self, step: dict) -> None:
        self.steps.append(step)
        self.index = len(self.steps) - 1  # follow the sampler
        self.redraw()

    def end_live(self) -> None:
        self.live = False
        self.redraw()

    # ------------------------------------------------------------ playback

    def go_to(self, index: int) -> None:
        if self.steps:
            self.index = max(0, min(index, len(self.steps) - 1))
        self.redraw()

    def step_by(self, delta: int) -> None:
        self.go_to(self.index + delta)

    def toggle_play(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()
        self.redraw()

    def play(self) -> None:
        if not self.steps or self.live:
            return
        if self.index >= len(self.steps) - 1:
            self.index = 0  # playing a finished replay starts it again
        self.playing = True
        self._restart_timer()

    def pause(self) -> None:
        self.playing = False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def change_speed(self, delta: int) -> None:
        self.speed_index = max(0, min(self.speed_index + delta, len(SPEEDS) - 1))
        if self.playing:
            self._restart_timer()
        self.redraw()

    def _restart_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(1 / self.speed, self._tick)

    def _tick(self) -> None:
        if self.index >= len(self.steps) - 1:
            self.pause()
        else:
            self.index += 1
        self.redraw()

    # ------------------------------------------------------------ drawing

    def status_line(self) -> str:
        """Two lines: where the replay is, then how it plays (and the keys that change that)."""
        if not self.steps:
            return "no trace: choose one on the left, or sample now (ctrl+n)"
        step = self.steps[self.index]
        state = "● live" if self.live else ("▶ playing" if self.playing else "❚❚ paused")
        last = self.steps[-1].get("step", len(self.steps) - 1)
        return (
            f"{self.label}: step {step.get('step', self.index)}/{last}, {step.get('masked', '?')} masked, "
            f"t={float(step.get('t', 0.0)):.3f}\n"
            f"{state}, {self.speed:g} steps/s   keys: space ←/→ +/- home end"
        )

    def redraw(self) -> None:
        out = Text(self.status_line(), style="bold")
        if self.steps:
            out.append("\n\n")
            out.append_text(render_masked(str(self.steps[self.index].get("text", ""))))
        self.update(out)
