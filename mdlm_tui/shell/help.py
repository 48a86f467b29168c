"""The Help screen: the keys, what each screen is for, and how to watch a run on a server.

The keys of each screen are read from the screens' own bindings, so this page lists every key there is."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from mdlm_tui.common.guard import Guarded
from mdlm_tui.common.key_bar import KeyBar

HELP_TEXT = """\
mdlm-tui: train and study masked diffusion language models

SCREENS (their keys work everywhere)
  r  Runs       every run under the runs folder (a sweep's as
                sweep/run), newest first: state, step, loss, eval,
                age, and more columns on a wider terminal. Enter/o
                opens (attaches to) a run; / filters, S sorts, space
                marks, C compares the marked runs; d moves one to
                .trash once its name is typed (never a run that is
                training); `mdlm-tui restore NAME` brings it back
  c  Configure  pick a preset, change keys, start a training process
  t  Train      the open run, live: loss, masked CE, dev loss and
                learning-rate curves, progress, ETA, tokens/s, GPU,
                CPU and RAM, the trainer's log. Stop saves a
                checkpoint first
  e  Eval       score checkpoints of the open run; open any saved
                report; Ctrl+G plots a suite's history by step
  s  Samples    unmasking traces of the open run
  ?  Help       this page (Escape goes back)
  Ctrl+P        command palette: screens, runs to open, and stop,
                pause, resume, checkpoint while the open run trains
  q  Quit       closes the TUI only: a run keeps training
  Escape        in a text field, leaves it: the keys work again

{keys}

STATES
  starting, running, paused, stopping: a trainer works on the run
  stopped: ended by a request or a signal, after a checkpoint
  finished, failed (the Train screen shows the error)
  stale: says active, but the heartbeat is over 30 s old or the
         trainer's process is gone

TRAINING IS ITS OWN PROCESS
  A run is a folder (config.yaml, status.json, metrics.jsonl,
  checkpoints/ ...) written by `mdlm-tui run`. The TUI reads it and
  sends stop, pause and checkpoint requests; closing the TUI, losing
  an SSH connection or watching from several TUIs never disturbs it.

WATCHING A RUN ON A SERVER
  start it headless (train.log feeds the Train screen's log pane):
    mkdir -p runs/NAME
    mdlm-tui run --preset cosine --run-dir runs/NAME \\
        > runs/NAME/train.log 2>&1 &
  watch it over SSH:
    ssh server -t mdlm-tui watch runs/NAME
  or keep the TUI in tmux and re-attach later:
    tmux new -s watch 'mdlm-tui watch runs/NAME'
    tmux attach -t watch
  control it from a shell:
    mdlm-tui control runs/NAME stop|pause|resume|checkpoint

TERMINALS
  Works at 80x24, inside tmux and over SSH; the mouse is optional.
  With NO_COLOR set, states still read as words.
  In tmux, `set -sg escape-time 10` stops Escape lagging by 500 ms.
"""


class HelpScreen(Guarded, Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, screens: dict[str, type[Screen] | None] | None = None):
        """`screens`: name -> screen class (None when not installed), whose keys the page lists."""
        super().__init__()
        self.screens = screens or {"help": HelpScreen}

    def keys_text(self) -> str:
        sections = [("everywhere", self.app.BINDINGS)]
        sections += [(name, screen.BINDINGS) for name, screen in self.screens.items() if screen is not None]
        lines = ["KEYS ON EACH SCREEN"]
        for name, bindings in sections:
            if bindings:
                lines.append(f"  {name.capitalize()}")
                lines += [f"    {keys:<10} {description}" for keys, description in self._keys(bindings)]
        return "\n".join(lines)

    def _keys(self, bindings: list[BindingType]) -> list[tuple[str, str]]:
        """(keys shown, description), one line per action: "+ / =" for two keys of one action."""
        merged: dict[tuple[str, str], list[str]] = {}
        for binding in Binding.make_bindings(bindings):
            merged.setdefault((binding.action, binding.description), []).append(
                self.app.get_key_display(binding)
            )
        return [(" / ".join(keys), description) for (_action, description), keys in merged.items()]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(HELP_TEXT.replace("{keys}", self.keys_text()), id="help-text", markup=False)
        yield KeyBar(current="show('help')")
