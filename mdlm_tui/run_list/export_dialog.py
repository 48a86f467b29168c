"""A dialog that exports a run as a Hugging Face model folder (`mdlm-tui export` from the Runs screen):
the output folder, EMA or raw weights, and whether the chck_* milestone checkpoints go too. The export
runs in a thread (it loads the model with torch), and its result or its one-sentence error shows in
the dialog and in a notification. Escape closes the dialog; an export under way still finishes."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Select, Static

from mdlm_tui.common.guard import Guarded


def default_out(runs_root: Path, run: Path) -> Path:
    """exports/<run> beside the runs folder: outside it, so an export is never listed as a run."""
    return Path(runs_root).parent / "exports" / Path(run).name


class ExportScreen(Guarded, ModalScreen[None]):
    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical {
        width: 76; max-width: 100%; height: auto; border: thick $primary; background: $surface; padding: 1 2;
    }
    ExportScreen Input, ExportScreen Select, ExportScreen Checkbox { margin-top: 1; }
    ExportScreen #export-result { margin-top: 1; }
    ExportScreen #export-result.error { color: $error; }
    ExportScreen Horizontal { height: auto; margin-top: 1; }
    ExportScreen Button { margin-right: 2; }
    """
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, run: Path, out: Path):
        super().__init__()
        self.run, self.out = Path(run), Path(out)
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Export {self.run.name} (its latest checkpoint) as a Hugging Face model folder to:",
                markup=False,
            )
            yield Input(str(self.out), compact=True, id="export-out")
            yield Select(
                [("EMA weights", "ema"), ("raw weights", "raw")],
                value="ema",
                allow_blank=False,
                compact=True,
                id="export-weights",
            )
            yield Checkbox(
                "milestones too: main/ and one folder per checkpoints/chck_*",
                compact=True,
                id="export-milestones",
            )
            yield Static("Enter exports; Escape closes.", markup=False, id="export-result")
            with Horizontal():
                yield Button("Export", id="export-go", variant="primary", compact=True)
                yield Button("Close", id="export-close", compact=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.start_export()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-go":
            self.start_export()
        else:
            self.action_close()

    def action_close(self) -> None:
        self.dismiss(None)

    def start_export(self) -> None:
        if self.busy:  # one export at a time: a second would race the first for the same folder
            return
        out = self.query_one(Input).value.strip()
        if not out:
            self._show("Give a folder to export to.", error=True)
            return
        self.busy = True
        self.query_one("#export-go", Button).disabled = True
        self._show(f"Exporting to {out} ...", error=False)
        self.export(Path(out), self.query_one(Select).value, self.query_one(Checkbox).value)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def export(self, out: Path, weights: str, milestones: bool) -> None:
        from core.errors import UserError
        from core.export import export  # torch: only once an export is asked for

        try:
            folders = export(
                str(self.run), out, weights=weights, milestones=milestones, log=lambda line: None
            )
        except UserError as e:
            self.app.call_from_thread(self._finished, str(e), True)
            return
        except Exception as e:  # noqa: BLE001 - a failed export must still say so, and free the dialog
            self.app.call_from_thread(self._finished, f"Export failed: {type(e).__name__}: {e}", True)
            return
        count = f" ({len(folders)} model folders)" if len(folders) > 1 else ""
        self.app.call_from_thread(
            self._finished, f"Exported {self.run.name} ({weights} weights) to {out}{count}.", False
        )

    def _finished(self, message: str, error: bool) -> None:
        self.busy = False
        self.app.notify(message, severity="error" if error else "information", markup=False)
        try:  # the dialog may have been closed meanwhile; the notification still tells
            self.query_one("#export-go", Button).disabled = False
            self._show(message, error)
        except NoMatches:
            pass

    def _show(self, message: str, error: bool) -> None:
        result = self.query_one("#export-result", Static)
        result.update(message)
        result.set_class(error, "error")
