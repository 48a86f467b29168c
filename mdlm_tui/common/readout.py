"""Plain text that changes while a run trains (numbers, the machine's state).

Static.update lays the whole screen out again each time, which is most of what a watching TUI
costs between curve redraws. A readout redraws only when its text changed, and asks for a layout
only when the text's shape did (its line count or a line's length: what an auto width or height
depends on). No markup: an error message with brackets in it is shown as it is.
"""

from __future__ import annotations

from textual.widgets import Static

from mdlm_tui.common.guard import Guarded


def _shape(text: str) -> list[int]:
    return [len(line) for line in text.split("\n")]


class Readout(Guarded, Static):
    def __init__(self, text: str = "", **kwargs):
        super().__init__(text, markup=False, **kwargs)
        self.text = text

    def show(self, text: str) -> None:
        if text == self.text:
            return
        layout = _shape(text) != _shape(self.text)
        self.text = text
        self.update(text, layout=layout)
