"""A dialog that confirms only once a word (a run's name) is typed and Enter pressed; Escape cancels.
A single stray key can never confirm: letters go into the field, and Enter needs the whole word.
It answers through `push_screen(..., callback)` with True or False."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from mdlm_tui.common.guard import Guarded


class ConfirmScreen(Guarded, ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 60; max-width: 100%; height: auto; border: thick $error; background: $surface; padding: 1 2;
    }
    ConfirmScreen #confirm-word { margin-top: 1; }
    ConfirmScreen #confirm-hint { color: $text-muted; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmScreen Button { margin-right: 2; }
    """
    BINDINGS = [Binding("escape", "answer(False)", "Cancel")]

    def __init__(self, question: str, word: str, action: str = "Confirm"):
        super().__init__()
        self.question, self.word, self.action = question, word, action

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question", markup=False)
            yield Input(placeholder=self.word, compact=True, id="confirm-word")
            yield Static(
                f"Type {self.word} and press Enter to {self.action.lower()}; Escape cancels.",
                id="confirm-hint",
                markup=False,
            )
            with Horizontal():
                yield Button(self.action, id="yes", variant="error", compact=True)
                yield Button("Cancel", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self._confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "yes":
            self._confirm()
        else:
            self.dismiss(False)

    def _confirm(self) -> None:
        if self.query_one(Input).value.strip() == self.word:
            self.dismiss(True)
        else:
            self.query_one("#confirm-hint", Static).update(
                f"That is not {self.word}: type it exactly, then Enter; Escape cancels."
            )

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
