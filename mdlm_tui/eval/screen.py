"""Eval screen: score one of the run's checkpoints on zero-shot suites in a worker thread; the
per-UID table fills as each paradigm is scored, next to an earlier report of the same run. Any saved
report opens from the report picker, and ctrl+g swaps the table for its suite's history: macro and
per-field numbers against the step, over the reports made with the same settings.

Reports are saved under <run>/eval exactly as `mdlm-tui eval` saves them, so the CLI, the TUI and
training-time evals all compare with each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import get_current_worker

from core.eval_report import describe_dev
from core.saved_reports import SavedReport, earlier_report, history, read_reports
from mdlm_tui.common.checkpoints import current_run, fill_checkpoint_picker, list_checkpoints
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.common.run_screen import RunScreen
from mdlm_tui.eval.history import HistoryPlot
from mdlm_tui.eval.metrics import short_label
from mdlm_tui.eval.table import EvalTable, percent, signed_points, step_name

AUTO_COMPARE = "auto"  # the same suite and settings at the nearest earlier step
NO_COMPARE = "none"
FIXED_COMPARE_OPTIONS = (("auto: nearest earlier step, same settings", AUTO_COMPARE), ("none", NO_COMPARE))
RUN_POLL_S = 2.0  # how often a run that is still training is looked at for new checkpoints and reports


def break_long_paths(text: str, width: int) -> str:
    """A line break after a '/' inside any word wider than `width`: wrapping breaks only at spaces,
    so it would cut such a path anywhere, even inside a name."""

    def split(word: str) -> str:
        lines = [""]
        for part in re.findall(r"[^/]*/|[^/]+", word):
            if lines[-1] and len(lines[-1]) + len(part) > width:
                lines.append("")
            lines[-1] += part
        return "\n".join(lines)

    return re.sub(r"\S+", lambda m: split(m[0]) if len(m[0]) > width else m[0], text)


class Sentences(Static):
    """Text shown whole at any width: wrapped at spaces, and inside a long path after a '/'."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.sentences = ""

    def say(self, text: str) -> None:
        self.sentences = text
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        width = self.content_size.width
        self.update(break_long_paths(self.sentences, width) if width > 0 else self.sentences)


class EvalScreen(RunScreen):
    """Checkpoint, suites, limit, backend; Run; a per-UID table with the macro average."""

    BINDINGS = [
        Binding("ctrl+r", "run_eval", "Run eval", priority=True),
        Binding("ctrl+b", "cancel_eval", "Cancel", priority=True),
        # priority, as ctrl+r: it works from a text field too
        Binding("ctrl+g", "toggle_history", "History", priority=True),
    ]

    DEFAULT_CSS = """
    EvalScreen .eval-row { height: 1; margin: 0 1; }
    EvalScreen .eval-row Label { width: 11; }
    EvalScreen .eval-row Select { width: 1fr; margin-right: 1; }
    EvalScreen .eval-row Input { width: 1fr; margin-right: 1; }
    EvalScreen #eval-limit { width: 8; }
    EvalScreen #eval-backend { width: 12; }
    EvalScreen #eval-run { min-width: 10; }
    EvalScreen .eval-short { width: 8; }
    EvalScreen #eval-status { height: auto; margin: 0 1; color: $text-muted; }
    EvalScreen #eval-status.-error { color: $error; text-style: bold; }
    EvalScreen #eval-macro { height: auto; margin: 0 1; text-style: bold; }
    EvalScreen #eval-history { display: none; }
    EvalScreen.-history #eval-history { display: block; }
    EvalScreen.-history #eval-table { display: none; }
    """

    class SuiteStarted(Message):
        def __init__(self, suite: str, step: int | None, settings: dict) -> None:
            super().__init__()
            self.suite, self.step, self.settings = suite, step, settings

    class UidScored(Message):
        def __init__(self, suite: str, uid: str, result: dict) -> None:
            super().__init__()
            self.suite, self.uid, self.result = suite, uid, result

    class SuiteDone(Message):
        def __init__(self, report, path: Path) -> None:
            super().__init__()
            self.report, self.path = report, path

    class DevDone(Message):
        def __init__(self, result: dict, path: Path) -> None:
            super().__init__()
            self.result, self.path = result, path

    class Status(Message):
        def __init__(self, line: str, error: bool = False, finished: bool = False) -> None:
            super().__init__()
            self.line, self.error, self.finished = line, error, finished

    def __init__(self, run: Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run = Path(run) if run is not None else None
        self.running = False
        self.evaluations_finished = 0  # counts ended evaluations (done, failed or cancelled)
        self.saved_reports: list[Path] = []  # reports written by this screen, newest last
        self.macros: dict[str, float] = {}  # suite -> macro of the latest evaluation here
        self.metrics: dict[str, str] = {}  # suite -> what its macro is (mdlm_tui.eval.metrics.METRICS)
        self.dev_line = ""  # the dev NELBO of the latest evaluation here, when "dev" was asked for
        self.report_problems: list[str] = []  # saved reports that could not be read, shown on the status line
        self.compared: dict[
            str, tuple[int | None, dict | None]
        ] = {}  # suite shown -> (its step, its settings)
        self.seen: tuple = ()  # the checkpoints and report files last read
        self.opened: SavedReport | None = None  # the saved report the table shows, if it shows one
        self.reports: list[SavedReport] = []  # the run's saved reports, as last read

    def compose(self) -> ComposeResult:
        with Horizontal(classes="eval-row"):
            yield Label("checkpoint")
            yield Select([], prompt="no checkpoints", compact=True, id="eval-checkpoint")
            yield Label("backend", classes="eval-short")
            yield Select(
                [("pll", "pll"), ("nelbo", "nelbo")],
                value="pll",
                allow_blank=False,
                compact=True,
                id="eval-backend",
            )
        with Horizontal(classes="eval-row"):
            yield Label("suites")
            yield Input(
                "builtin",
                placeholder="builtin, blimp, ewok, entity_tracking, wug_adj, reading, babylm, all, dev",
                compact=True,
                id="eval-suites",
            )
            yield Label("limit", classes="eval-short")
            yield Input("100", placeholder="all", compact=True, id="eval-limit")
        with Horizontal(classes="eval-row"):
            yield Label("data dir")
            yield Input(
                "",
                placeholder="BabyLM evaluation_data (for blimp, supplement, ewok)",
                compact=True,
                id="eval-data-dir",
            )
            yield Button("Run ^r", id="eval-run", variant="primary", compact=True)
        with Horizontal(classes="eval-row"):
            yield Label("report")
            yield Select([], prompt="no saved reports", compact=True, id="eval-report")
        with Horizontal(classes="eval-row"):
            yield Label("compare")
            yield Select(FIXED_COMPARE_OPTIONS, allow_blank=False, compact=True, id="eval-compare")
        yield Sentences(id="eval-status")
        yield EvalTable(id="eval-table")
        yield HistoryPlot(id="eval-history")
        yield Static("", id="eval-macro", markup=False)
        yield KeyBar(current="show('eval')")

    def on_mount(self) -> None:
        self.refresh_run()
        self.query_one("#eval-checkpoint", Select).focus()
        self.set_interval(RUN_POLL_S, self.poll_run)

    def poll_run(self) -> None:
        """Follow a run that is still training: its new checkpoints and reports appear by themselves."""
        if not self.running and self.run is not None and self.is_current and self._look() != self.seen:
            self.refresh_run()

    def _look(self) -> tuple:
        return list_checkpoints(self.run), sorted(path.name for path in (self.run / "eval").glob("*.json"))

    def on_screen_resume(self) -> None:
        if not self.running:
            self.refresh_run()

    # ------------------------------------------------------------ the run's checkpoints and reports

    def refresh_run(self) -> None:
        """Re-read checkpoints and reports (a training run may have written new ones)."""
        self.run = current_run(self, self.run)
        if self.run is None:
            self.show_status("No run selected: open a run first.", error=True)
            return
        self.seen = self._look()
        checkpoints = fill_checkpoint_picker(self.query_one("#eval-checkpoint", Select), self.run)
        self._refresh_report_options()
        self._show_history()  # a report written meanwhile is a new point
        # an empty table opens on the newest saved report; results already shown keep their status line
        if not self.running and not self.query_one(EvalTable).results and not self.show_saved_report():
            self.show_status(
                f"{self.run.name}: {len(checkpoints)} checkpoint(s)"
                if checkpoints
                else self._no_checkpoint(),
                error=not checkpoints,
            )

    def _no_checkpoint(self) -> str:
        return (
            f"{self.run.name} has no checkpoint yet (nothing in its checkpoints/ folder): they appear here "
            "as training writes them."
        )

    def show_saved_report(self) -> bool:
        """Open on the run's newest saved report (and its comparison), before anything is run here."""
        if not self.reports:
            return False
        self.open_report(self.reports[0])
        return True

    def open_report(self, report: SavedReport) -> None:
        """Show a saved report in the table, compared as the compare picker says, and its history."""
        table = self.query_one(EvalTable)
        table.reset()
        self.opened = report
        self.compared = {report.suite: (report.step, report.settings)}
        table.compare_with(report.suite, self._report_for(report.suite, report.step, report.settings))
        for uid, result in report.per_uid.items():
            table.add_result(report.suite, uid, result)
        self.macros = {report.suite: report.macro}
        self.metrics = {report.suite: report.metric}
        self.dev_line = ""
        self._show_macros()
        self.query_one("#eval-report", Select).value = str(report.path)
        self._show_history()
        self.show_status(f"saved report {report.path.name}; ctrl+r evaluates the chosen checkpoint")

    def _reports(self) -> list[SavedReport]:
        self.report_problems = []
        self.reports = read_reports(self.run, self.report_problems)
        return self.reports

    def _refresh_report_options(self) -> None:
        """Every saved report in both pickers: to open one, and to compare with one."""
        reports = self._reports()
        picker = self.query_one("#eval-report", Select)
        opened = str(self.opened.path) if self.opened is not None else None
        picker.set_options([(report.label, str(report.path)) for report in reports])
        if opened in {str(report.path) for report in reports}:
            picker.value = opened
        compare = self.query_one("#eval-compare", Select)
        chosen = compare.value
        options = list(FIXED_COMPARE_OPTIONS) + [(report.label, str(report.path)) for report in reports]
        compare.set_options(options)
        compare.value = chosen if chosen in {value for _, value in options} else AUTO_COMPARE

    def _report_for(self, suite: str, step: int | None, settings: dict | None):
        choice = self.query_one("#eval-compare", Select).value
        if choice == NO_COMPARE:
            return None
        reports = self._reports()
        if choice == AUTO_COMPARE:
            return earlier_report(reports, suite, step, settings)
        return next((r for r in reports if str(r.path) == choice and r.suite == suite), None)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "eval-report":
            self._open_chosen(event.value)
        if event.select.id == "eval-compare":
            table = self.query_one(EvalTable)
            for suite, (step, settings) in self.compared.items():
                table.compare_with(suite, self._report_for(suite, step, settings))
            self._show_macros()

    def _open_chosen(self, value) -> None:
        chosen = next((r for r in self.reports if str(r.path) == value), None)
        if chosen is None or (self.opened is not None and chosen.path == self.opened.path):
            return  # the blank row, or the report shown already (the picker follows what is shown)
        if self.running:
            self.notify("An evaluation is running: open a saved report once it ends.", markup=False)
            return
        self.open_report(chosen)

    # ------------------------------------------------------------ history

    def action_toggle_history(self) -> None:
        self.toggle_class("-history")
        self._show_history()

    def _history_of(self) -> tuple[str, dict | None, str, str] | None:
        """(suite, settings, name's settings, metric) of the report shown, else of the first suite
        evaluated here."""
        if self.opened is not None:
            return self.opened.suite, self.opened.settings, self.opened.made, self.opened.metric
        for suite, (_step, settings) in self.compared.items():
            return suite, settings, "", self.metrics.get(suite, "accuracy")
        return None

    def _show_history(self) -> None:
        if not self.has_class("-history"):
            return  # drawn when shown
        plot, wanted = self.query_one(HistoryPlot), self._history_of()
        if wanted is None:
            plot.show_message("no report to plot: open a saved report or run an evaluation")
            return
        suite, settings, made, metric = wanted
        series = history(self.reports, suite, settings, made)
        if not series[0][1]:
            plot.show_message(f"{suite}: no saved report made with these settings yet")
            return
        # how they were made, as their names say ("pll-limit20")
        made = made or next(
            r.made or r.backend for r in self.reports if r.suite == suite and r.settings == settings
        )
        plot.show_history(f"{suite} {made}", series, metric)

    # ------------------------------------------------------------ running

    def _chosen_checkpoint(self) -> Path | None:
        value = self.query_one("#eval-checkpoint", Select).value
        return None if value is Select.NULL else Path(str(value))

    def _backend(self) -> str:
        return str(self.query_one("#eval-backend", Select).value)

    def _limit(self) -> int | None:
        text = self.query_one("#eval-limit", Input).value.strip()
        if not text:
            return None
        if not text.isdigit():
            raise ValueError(
                f"limit must be a whole number of items per UID (empty or 0 for all), got '{text}'."
            )
        return int(text) or None

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "eval-run":
            self.action_run_eval()

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.action_run_eval()

    def action_run_eval(self) -> None:
        if self.running:
            self.notify("An evaluation is already running (ctrl+b cancels it).", markup=False)
            return
        from mdlm_tui.eval.runner import EvalRequest

        self.run = current_run(self, self.run)
        if self.run is None:
            self.show_status("No run selected: open a run first.", error=True)
            return
        # the checkpoints as they are now: one written or rotated away since the last look counts
        fill_checkpoint_picker(self.query_one("#eval-checkpoint", Select), self.run)
        ckpt = self._chosen_checkpoint()
        if ckpt is None:
            self.show_status(self._no_checkpoint(), error=True)
            return
        try:
            limit = self._limit()
        except ValueError as e:
            self.show_status(str(e), error=True)
            return
        suites = self.query_one("#eval-suites", Input).value.strip() or "builtin"
        data_dir = self.query_one("#eval-data-dir", Input).value.strip() or None
        self.query_one(EvalTable).reset()
        self.opened = None
        self.query_one("#eval-report", Select).clear()  # the table shows no saved report now
        self.compared.clear()
        self.macros.clear()
        self.dev_line = ""
        self.query_one("#eval-macro", Static).update("")
        self.running = True
        self.evaluate(EvalRequest(ckpt, suites, data_dir, limit, self._backend()))

    def action_cancel_eval(self) -> None:
        if self.running:
            self.workers.cancel_group(self, "eval")
            self.show_status("cancelling after the current UID ...")

    @work(thread=True, exclusive=True, group="eval", exit_on_error=False)
    def evaluate(self, request) -> None:
        from core.errors import UserError
        from mdlm_tui.eval.runner import run_evaluation

        worker = get_current_worker()
        try:
            saved = run_evaluation(
                request,
                on_uid=lambda suite, uid, result: self.post_message(self.UidScored(suite, uid, result)),
                on_suite=lambda report, path: self.post_message(self.SuiteDone(report, path)),
                on_status=lambda line: self.post_message(self.Status(line)),
                cancelled=lambda: worker.is_cancelled,
                on_dev=lambda result, path: self.post_message(self.DevDone(result, path)),
                on_suite_start=lambda suite, step, settings: self.post_message(
                    self.SuiteStarted(suite, step, settings)
                ),
            )
        except UserError as e:
            self.post_message(self.Status(str(e), error=True, finished=True))
        except Exception as e:  # shown, never fatal: the screen stays usable
            self.post_message(self.Status(f"{type(e).__name__}: {e}", error=True, finished=True))
        else:
            # paths within the run folder: short enough to read whole at 80 columns
            names = ", ".join(os.path.relpath(path, request.checkpoint.parent.parent) for path in saved)
            done = "cancelled" if worker.is_cancelled else f"done: {len(saved)} report(s) saved: {names}"
            self.post_message(self.Status(done, finished=True))

    def on_eval_screen_suite_started(self, message: SuiteStarted) -> None:
        self.compared[message.suite] = (message.step, message.settings)
        self.query_one(EvalTable).compare_with(
            message.suite, self._report_for(message.suite, message.step, message.settings)
        )

    def on_eval_screen_uid_scored(self, message: UidScored) -> None:
        self.query_one(EvalTable).add_result(message.suite, message.uid, message.result)

    def on_eval_screen_suite_done(self, message: SuiteDone) -> None:
        self.saved_reports.append(message.path)
        self.macros[message.report.suite] = message.report.macro
        self.metrics[message.report.suite] = message.report.metric
        self._show_macros()

    def on_eval_screen_dev_done(self, message: DevDone) -> None:
        self.saved_reports.append(message.path)
        self.dev_line = describe_dev(message.result)
        self._show_macros()

    def on_eval_screen_status(self, message: Status) -> None:
        if message.finished:
            self.running = False
            self.evaluations_finished += 1
            self._refresh_report_options()
            self._show_history()
        self.show_status(message.line, error=message.error)

    def _show_macros(self) -> None:
        table = self.query_one(EvalTable)
        auto = self.query_one("#eval-compare", Select).value == AUTO_COMPARE
        parts = []
        for suite, macro in self.macros.items():
            earlier = table.earlier.get(suite)
            metric = self.metrics.get(suite, "accuracy")
            text = f"{suite} {'macro' if metric == 'accuracy' else short_label(metric)} {percent(macro)}"
            if earlier is not None:
                change = signed_points(macro, earlier.macro)
                text += f" (vs {step_name(earlier)} {percent(earlier.macro)}, Δ {change})"
            elif auto and self.compared.get(suite, (None, {}))[1] is None:
                text += " (a report that does not record its settings: not compared)"
            elif auto:
                text += " (no earlier report with the same settings)"
            parts.append(text)
        if self.dev_line:
            parts.append(self.dev_line)
        self.query_one("#eval-macro", Static).update("; ".join(parts))

    def show_status(self, line: str, error: bool = False) -> None:
        status = self.query_one("#eval-status", Sentences)
        status.set_class(error, "-error")
        status.say(f"{line}  ! {'; '.join(self.report_problems)}" if self.report_problems else line)
