"""The Runs screen: every run folder under the runs root, with its state (stale heartbeats
included), step, latest loss and eval, refreshed every couple of seconds. Enter opens a run on
the Train screen; d moves one to the trash (<runs root>/.trash, `mdlm-tui restore` brings it back)
once its name is typed, never one a trainer is working on; E exports one as a Hugging Face model
folder. Rows are ordered by the age shown, newest first."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from core.runs import TRASH_FOLDER, RunDir, run_health, trainer_alive, trash_run, valid_metrics_record
from mdlm_tui.common import formatting as fmt
from mdlm_tui.common.confirm import ConfirmScreen
from mdlm_tui.common.guard import Guarded
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.common.readout import Readout
from mdlm_tui.common.state_label import state_text
from mdlm_tui.run_list.export_dialog import ExportScreen, default_out
from mdlm_tui.watcher import FileTail, latest_eval_report, mtime_or_zero

REFRESH_EVERY_S = 2.0
COLUMNS = ("run", "state", "step", "loss", "eval", "age")


@dataclass
class RunRow:
    path: Path
    status: dict
    health: str
    loss: float | None
    eval_label: str
    age_s: float | None
    problems: list[str]  # what could not be read (and was skipped)


class RunSummaries:
    """The latest loss and eval of each run, read incrementally so a refresh costs only new lines."""

    def __init__(self):
        self._tails: dict[Path, FileTail] = {}
        self._latest: dict[Path, dict] = {}
        self._eval_reports: dict[Path, tuple[float, dict]] = {}

    def row(self, path: Path) -> RunRow:
        run = RunDir(path)
        problems: list[str] = []
        status = run.read_status(problems)
        tail = self._tails.setdefault(path, FileTail(run.metrics_path))
        lines = tail.read_lines()
        latest = self._latest.setdefault(path, {})
        if tail.reset:
            latest.clear()
        for event in ("train", "eval"):  # parse only the newest line of each kind: a refresh stays cheap
            for line in reversed(lines):
                if f'"event": "{event}"' in line and valid_metrics_record(record := _json(line)):
                    latest[event] = record
                    break
        loss = status.get("loss", latest.get("train", {}).get("loss"))
        # the newest saved report first, as the Train screen shows it; else the trainer's own eval event
        label = fmt.eval_label(self._latest_report(run) or latest.get("eval"))
        heartbeat = status.get("heartbeat")
        # a status.json that is there but could not be read at all marks the run, rather than hiding it
        health = "unreadable" if problems and not status else run_health(status)
        age = time.time() - heartbeat if heartbeat else None
        return RunRow(path, status, health, loss, label, age, problems)

    def _latest_report(self, run: RunDir) -> dict:
        """The newest saved eval report, re-read only when the eval/ folder changes."""
        mtime = mtime_or_zero(run.eval_dir)
        cached = self._eval_reports.get(run.path)
        if cached is None or cached[0] != mtime:
            cached = self._eval_reports[run.path] = (mtime, latest_eval_report(run.eval_dir))
        return cached[1]

    def forget(self, path: Path) -> None:
        self._tails.pop(path, None)
        self._latest.pop(path, None)
        self._eval_reports.pop(path, None)


def _json(source: str | Path) -> dict:
    """A JSON object from a line or a file; {} for anything else (run folders hold what anyone wrote)."""
    try:
        found = json.loads(source.read_bytes() if isinstance(source, Path) else source)
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return {}
    return found if isinstance(found, dict) else {}


def find_runs(root: Path) -> list[Path]:
    """Run folders directly under root (a config.yaml or status.json marks one), newest first."""
    if not root.is_dir():
        return []
    runs = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name != TRASH_FOLDER
        and ((p / "config.yaml").is_file() or (p / "status.json").is_file())
    ]
    return sorted(runs, key=mtime_or_zero, reverse=True)


class RunsScreen(Guarded, Screen):
    class RunDeleted(Message):
        """A run was moved to the trash: the app stops following it."""

        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    BINDINGS = [
        Binding("enter", "open_run", "Open", show=False),
        Binding("o", "open_run", "Open/attach"),
        Binding("d", "delete_run", "Delete"),
        Binding("E", "export_run", "Export"),  # e is the Eval screen, everywhere
        Binding("f5", "refresh_runs", "Refresh", show=False),
    ]
    DEFAULT_CSS = "RunsScreen #runs-problems { max-height: 6; padding: 0 1; color: $error; display: none; }"

    def __init__(self, runs_root: Path):
        super().__init__()
        self.runs_root = Path(runs_root)
        self.summaries = RunSummaries()
        self.rows: dict[str, RunRow] = {}

    def compose(self) -> ComposeResult:
        yield Static(f"Runs in {self.runs_root}", id="runs-title")
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="runs-empty")
        yield Readout(id="runs-problems")
        yield KeyBar(current="show('runs')")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.action_refresh_runs()
        self.set_interval(REFRESH_EVERY_S, self._refresh_if_shown)
        table.focus()

    def _refresh_if_shown(self) -> None:
        if self.is_current:  # hidden, reading every run folder would only take time from a trainer
            self.action_refresh_runs()

    def on_screen_resume(self) -> None:
        self.action_refresh_runs()

    def action_refresh_runs(self) -> None:
        table = self.query_one(DataTable)
        found = {str(p): self.summaries.row(p) for p in find_runs(self.runs_root)}
        for key in list(self.rows):
            if key not in found:
                table.remove_row(key)
                self.summaries.forget(Path(key))
        for key, row in found.items():
            cells = (
                row.path.name,
                state_text(row.health),
                f"{row.status.get('step', 0)}/{row.status.get('total_steps') or '?'}",
                fmt.number(row.loss),
                row.eval_label,
                fmt.age(row.age_s),
            )
            if key in self.rows:
                for column, value in zip(COLUMNS, cells):
                    table.update_cell(key, column, value)
            else:
                table.add_row(*cells, key=key)
        self.rows = found
        self._order_by_age(table)
        problems = [f"! {row.path.name}: {problem}" for row in found.values() for problem in row.problems]
        note = self.query_one("#runs-problems", Readout)
        note.show("\n".join(problems))
        note.display = bool(problems)
        self.query_one("#runs-empty", Static).update(
            ""
            if found
            else f"No runs yet under {self.runs_root}. Press c to configure and start one, or run "
            "`mdlm-tui run --preset smoke --run-dir runs/smoke` in a shell."
        )

    def _order_by_age(self, table: DataTable) -> None:
        """Newest heartbeat first (the age column), runs without one last; the cursor stays on its run."""
        order = sorted(self.rows, key=lambda key: -(self.rows[key].status.get("heartbeat") or float("-inf")))
        if [row.key.value for row in table.ordered_rows] == order:
            return
        chosen = self.selected()
        rank = {self.rows[key].path.name: index for index, key in enumerate(order)}
        table.sort("run", key=rank.__getitem__)
        if chosen is not None:
            table.move_cursor(row=table.get_row_index(str(chosen.path)))

    def selected(self) -> RunRow | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.rows.get(key)

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
                f"Move {row.path} to the trash ({self.runs_root / TRASH_FOLDER})?\n"
                f"`mdlm-tui restore {name} --runs {self.runs_root}` brings it back.",
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
            f"Moved {path.name} to {trashed}; `mdlm-tui restore {path.name} --runs {self.runs_root}` "
            "brings it back.",
            markup=False,
        )
        self.action_refresh_runs()
