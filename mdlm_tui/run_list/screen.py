"""The Runs screen: every run folder under the runs root (a sweep folder's runs listed as
`sweep/run`), with its state (stale heartbeats included), step, latest loss and eval, and on a wider
terminal its preset, recipe, dev loss, tokens/s and training time; refreshed every couple of seconds.

Enter opens a run on the Train screen; d moves one to the trash (<its folder>/.trash, `mdlm-tui
restore` brings it back) once its name is typed, never one a trainer is working on; E exports one as
a Hugging Face model folder. S sorts by the next column (R reverses), / filters the rows, space marks
a run and C compares the marked ones. Rows are ordered by the age shown, newest first, until sorted."""

from __future__ import annotations

import time
from pathlib import Path

from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from core.runs import TRASH_FOLDER, RunDir, trainer_alive, trash_run
from mdlm_tui.common.confirm import ConfirmScreen
from mdlm_tui.common.guard import Guarded
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.common.readout import Readout
from mdlm_tui.run_list import columns as cols
from mdlm_tui.run_list.export_dialog import ExportScreen, default_out
from mdlm_tui.run_list.summaries import RunRow, RunSummaries, find_grouped_runs, find_runs

__all__ = ["RunRow", "RunSummaries", "RunsScreen", "find_runs"]

REFRESH_EVERY_S = 2.0
FILTER = "runs-filter"


class RunsScreen(Guarded, Screen):
    class RunDeleted(Message):
        """A run was moved to the trash: the app stops following it."""

        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    class CompareRequested(Message):
        """C: the marked runs (or the one under the cursor), in the order shown, to compare."""

        def __init__(self, paths: list[Path]) -> None:
            super().__init__()
            self.paths = paths

    BINDINGS = [
        Binding("enter", "open_run", "Open", show=False),
        Binding("o", "open_run", "Open/attach"),
        Binding("d", "delete_run", "Delete"),
        Binding("E", "export_run", "Export"),  # e is the Eval screen, everywhere
        Binding("space", "toggle_mark", "Mark"),
        Binding("C", "compare", "Compare"),
        # 80 columns have room for no more keys in the key bar: the rest are on the Help screen
        Binding("slash", "open_filter", "Filter", key_display="/", show=False),
        Binding("S", "next_sort", "Sort by the next column", show=False),  # s is the Samples screen
        Binding("R", "reverse_sort", "Reverse the order", show=False),
        Binding("a", "mark_shown", "Mark every run shown", show=False),
        Binding("A", "clear_marks", "Clear the marks", show=False),
        Binding("escape", "close_filter", "Clear the filter", show=False),
        Binding("f5", "refresh_runs", "Refresh", show=False),
    ]
    DEFAULT_CSS = """
    RunsScreen #runs-problems { max-height: 6; padding: 0 1; color: $error; display: none; }
    RunsScreen #runs-filter { height: 1; border: none; padding: 0 1; display: none; }
    RunsScreen #runs-filter:focus { border: none; }
    """

    def __init__(self, runs_root: Path):
        super().__init__()
        self.runs_root = Path(runs_root)
        self.summaries = RunSummaries()
        self.rows: dict[str, RunRow] = {}  # every run found, shown or filtered out
        self.marks: set[str] = set()
        self.sort, self.reverse = cols.DEFAULT_SORT, False
        self.filter_words = ""
        self.columns: list[cols.Column] = []
        self._cells: dict[str, tuple] = {}  # each shown row's cells: a refresh updates what changed

    def compose(self) -> ComposeResult:
        yield Static(f"Runs in {self.runs_root}", id="runs-title")
        yield Input(placeholder="filter: words of a run's name, preset, parameters or state", id=FILTER)
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-empty")
        yield Readout(id="runs-problems")
        yield KeyBar(current="show('runs')")

    def on_mount(self) -> None:
        self.action_refresh_runs()
        self.set_interval(REFRESH_EVERY_S, self._refresh_if_shown)
        self.query_one(DataTable).focus()

    def on_resize(self, event: events.Resize) -> None:
        self._show()  # a wider terminal has room for more columns, a narrower one for fewer

    def _fit_columns(self, table: DataTable) -> None:
        """The columns this width has room for; when they change, the table starts afresh."""
        wanted = cols.fitting(list(self.rows.values()), self.size.width or self.app.size.width)
        if wanted == self.columns:
            return
        table.clear(columns=True)
        for column in wanted:
            table.add_column("" if column.key == "mark" else column.key, key=column.key)
        self.columns, self._cells = wanted, {}

    def _refresh_if_shown(self) -> None:
        if self.is_current:  # hidden, reading every run folder would only take time from a trainer
            self.action_refresh_runs()

    def on_screen_resume(self) -> None:
        self.action_refresh_runs()

    def action_refresh_runs(self) -> None:
        now = time.time()
        found = {
            str(path): self.summaries.row(path, now, group)
            for path, group in find_grouped_runs(self.runs_root)
        }
        for key in self.rows.keys() - found.keys():
            self.summaries.forget(Path(key))
        self.rows = found
        self.marks &= found.keys()  # a deleted run loses its mark
        self._show()
        problems = [f"! {row.name}: {problem}" for row in found.values() for problem in row.problems]
        note = self.query_one("#runs-problems", Readout)
        note.show("\n".join(problems))
        note.display = bool(problems)
        self.query_one("#runs-empty", Static).update(
            ""
            if found
            else f"No runs yet under {self.runs_root}. Press c to configure and start one, or run "
            "`mdlm-tui run --preset smoke --run-dir runs/smoke` in a shell."
        )

    # ------------------------------------------------------------ what is shown

    def _shown_keys(self) -> list[str]:
        order = cols.ordered(self.rows, self.sort, self.reverse)
        return [key for key in order if cols.matches(self.rows[key], self.filter_words)]

    def _show(self) -> None:
        """The rows that pass the filter, in the chosen order, with the cursor on the run it was on."""
        table = self.query_one(DataTable)
        chosen, index = self._cursor_key(), table.cursor_row
        self._fit_columns(table)
        shown = self._shown_keys()
        cells = {key: cols.cells(self.rows[key], self.columns, key in self.marks) for key in shown}
        if [row.key.value for row in table.ordered_rows] == shown:
            for key, values in cells.items():  # the same rows in the same order: change only what changed
                for column, value, before in zip(self.columns, values, self._cells.get(key, ())):
                    if value != before:
                        table.update_cell(key, column.key, value)
        else:
            table.clear()
            for key, values in cells.items():
                table.add_row(*values, key=key)
            if shown:
                table.move_cursor(row=shown.index(chosen) if chosen in shown else min(index, len(shown) - 1))
        self._cells = cells
        self._show_title(len(shown))

    def _show_title(self, shown: int) -> None:
        parts = [f"Runs in {self.runs_root}"]
        if self.filter_words.strip():
            parts.append(f"{shown} of {len(self.rows)} runs")
        if self.marks:
            parts.append(f"{len(self.marks)} marked")
        if (self.sort, self.reverse) != (cols.DEFAULT_SORT, False):
            parts.append(cols.sort_words(self.sort, self.reverse))
        self.query_one("#runs-title", Static).update(" · ".join(parts))

    def _cursor_key(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    # ------------------------------------------------------------ sorting, filtering, marks

    def action_next_sort(self) -> None:
        self.sort, self.reverse = cols.next_sort(self.sort, self.columns), False
        self._show()

    def action_reverse_sort(self) -> None:
        self.reverse = not self.reverse
        self._show()

    def action_open_filter(self) -> None:
        field = self.query_one(f"#{FILTER}", Input)
        field.display = True
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == FILTER:
            self.filter_words = event.value
            self._show()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == FILTER:  # Enter keeps the filter and goes back to the rows
            self.query_one(DataTable).focus()

    def action_close_filter(self) -> None:
        field = self.query_one(f"#{FILTER}", Input)
        if not field.display:
            raise SkipAction()  # Escape keeps its other uses
        field.value, field.display, self.filter_words = "", False, ""
        self.query_one(DataTable).focus()
        self._show()

    def action_toggle_mark(self) -> None:
        key = self._cursor_key()
        if key is not None:
            self.marks ^= {key}
            self._show()

    def action_mark_shown(self) -> None:
        self.marks |= set(self._shown_keys())
        self._show()

    def action_clear_marks(self) -> None:
        self.marks.clear()
        self._show()

    def action_compare(self) -> None:
        """The marked runs in the table's order (those filtered out too); else the run under the cursor."""
        marked = [key for key in cols.ordered(self.rows, self.sort, self.reverse) if key in self.marks]
        if not marked:
            row = self.selected()
            if row is None:
                self.notify("There is no run to compare.", severity="warning")
                return
            marked = [str(row.path)]
            self.notify("Mark runs with space (a marks every run shown) to compare several.", markup=False)
        self.post_message(self.CompareRequested([self.rows[key].path for key in marked]))

    # ------------------------------------------------------------ one run

    def selected(self) -> RunRow | None:
        key = self._cursor_key()
        return self.rows.get(key) if key is not None else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        row = self.rows.get(event.row_key.value)
        if row is not None:
            self.app.open_run(row.path)

    def action_open_run(self) -> None:
        row = self.selected()
        if row is not None:
            self.app.open_run(row.path)

    def action_export_run(self) -> None:
        row = self.selected()
        if row is not None:
            self.app.push_screen(ExportScreen(row.path, default_out(self.runs_root, row.path)))

    def action_delete_run(self) -> None:
        row = self.selected()
        if row is None:
            return
        if self._trainer_works_on(row.path):
            return
        name = row.path.name

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete_run(row.path)

        self.app.push_screen(
            ConfirmScreen(
                f"Move {row.path} to the trash ({row.path.parent / TRASH_FOLDER})?\n"
                f"`mdlm-tui restore {name} --runs {row.path.parent}` brings it back.",
                word=name,
                action="Delete",
            ),
            answered,
        )

    def _trainer_works_on(self, path: Path) -> bool:
        """True, saying so, when a trainer works on the run: read afresh, not the table's copy."""
        # is_live holds whenever core's RunDir.live_pid finds the trainer, and also for one on another host
        if not trainer_alive(RunDir(path).read_status()):
            return False
        self.notify(
            f"{path.name} is being trained now, so it was not deleted; stop it first (t, then x).",
            severity="error",
            markup=False,
        )
        return True

    def delete_run(self, path: Path) -> None:
        if self._trainer_works_on(path):  # it may have been resumed while the dialog was open
            return
        try:
            trashed = trash_run(path)
        except OSError as e:
            self.notify(
                f"{path.name} could not be moved to the trash: {e.strerror or e}.",
                severity="error",
                markup=False,
            )
            return
        self.post_message(self.RunDeleted(path))
        self.notify(
            # a sweep's run goes to its sweep folder's trash, whence restore brings it back
            f"Moved {path.name} to {trashed}; `mdlm-tui restore {path.name} --runs {path.parent}` "
            "brings it back.",
            markup=False,
        )
        self.action_refresh_runs()
