"""A run's state as a word with a marker, coloured by CSS class: the word alone carries the
meaning, so it reads the same with NO_COLOR or on a monochrome terminal."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from mdlm_tui.common.guard import Guarded

MARKERS = {
    "starting": "◌",
    "running": "●",
    "paused": "‖",
    "stopping": "◐",
    "stopped": "■",
    "finished": "✓",
    "failed": "✗",
    "stale": "?",
    "unknown": "·",
    "unreadable": "!",
}
STYLES = {
    "starting": "yellow",
    "running": "green",
    "paused": "yellow",
    "stopping": "yellow",
    "stopped": "blue",
    "finished": "cyan",
    "failed": "bold red",
    "stale": "magenta",
    "unknown": "dim",
    "unreadable": "bold red",
}


def state_text(health: str) -> Text:
    """`● running`, `? stale`: a Rich Text for tables, styled where colour is available."""
    health = health if health in MARKERS else "unknown"
    return Text(f"{MARKERS[health]} {health}", style=STYLES[health])


class StateLabel(Guarded, Static):
    DEFAULT_CSS = """
    StateLabel { width: auto; text-style: bold; }
    """

    def __init__(self, health: str = "unknown", **kwargs):
        super().__init__(**kwargs)
        self.health = ""
        self.show(health)

    def show(self, health: str) -> None:
        if health == self.health:
            return
        self.health = health
        self.update(state_text(health))
