"""The Train screen: one run, live. Curves, progress and ETA, the machine, the log tail, and the
three things a watcher may ask of a trainer (stop after a checkpoint, checkpoint now, pause/resume).

Everything shown comes from `RunUpdated` messages posted by a `RunWatcher` thread; this screen
never reads the run folder itself, and leaving it (or closing the app) never touches the trainer.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import ProgressBar, RichLog, Static

from core.config import milestone_name
from core.runs import run_health, trainer_alive
from mdlm_tui.common import formatting as fmt
from mdlm_tui.common.curves import CurvePlot
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.common.readout import Readout
from mdlm_tui.common.run_screen import RunScreen
from mdlm_tui.common.state_label import StateLabel
from mdlm_tui.train.system_pane import SystemPane
from mdlm_tui.watcher import RunUpdated, RunWatcher

# Each look at the run wakes the TUI, and a TUI waking often slows a trainer that keeps every core
# busy (its threads wait for each other when one is pre-empted): polling four times a second cost
# the trainer about 4 %, once a second under 1 % (bench/tui_overhead.py).
WATCH_EVERY_S = 1.0
REPLOT_EVERY_S = (
    2.0  # drawing the curves is the costly part of a live screen; the numbers update on every message
)


class WrappedLog(RichLog):
    """The log tail with long lines wrapped to the width: a trainer line runs past 150 columns, and a
    cut one would hide its end (the ETA). The lines are kept, so a resize wraps them anew."""

    def __init__(self, max_lines: int, **kwargs):
        # strips, not lines: room for each kept line to wrap a few times
        super().__init__(max_lines=4 * max_lines, min_width=1, wrap=True, auto_scroll=True, **kwargs)
        self.kept: deque[str] = deque(maxlen=max_lines)
        self._wrapped_at = 0

    @property
    def line_count(self) -> int:
        return len(self.kept)

    def write_lines(self, lines: list[str]) -> None:
        self.kept.extend(lines)
        if self._wrapped_at:  # before the first resize the width is unknown: on_resize writes them
            for line in lines:
                self.write(Text(line))  # Text: brackets in a line are not markup

    def clear(self) -> "WrappedLog":
        self.kept.clear()
        return super().clear()

    def on_resize(self, event: events.Resize) -> None:  # RichLog's own handler runs too
        if event.size.width != self._wrapped_at:
            self._wrapped_at = event.size.width
            super().clear()
            for line in self.kept:
                self.write(Text(line))


class TrainScreen(RunScreen):
    # The log, as before the side column could scroll: its keys (up, down, end) follow the training.
    AUTO_FOCUS = "#train-log"
    # Toasts at the top: at the bottom right they would cover the newest log lines.
    DEFAULT_CSS = """
    TrainScreen ToastRack { dock: top; align: right top; margin-bottom: 0; margin-top: 2; }
    """

    BINDINGS = [
        Binding("x", "stop_run", "Stop"),
        Binding("k", "checkpoint", "Checkpoint"),
        Binding("p", "pause_resume", "Pause/resume"),
    ]

    def __init__(self, run: Path | None):
        super().__init__()
        self.run_dir = Path(run) if run is not None else None
        self.watcher: RunWatcher | None = None
        self.status: dict = {}
        self.latest_train: dict = {}
        self.health = "unknown"
        self._last_plot = 0.0
        self._pending_history: dict | None = None

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        if self.run_dir is None:
            yield Static(
                "No run open. Press r for the Runs screen and Enter on a run, or c to start one.", id="no-run"
            )
            yield KeyBar(current="show('train')")
            return
        with Horizontal(id="train-head"):
            yield StateLabel(id="train-state")
            yield Static(self.run_dir.name, id="train-name")
            yield Readout(id="train-numbers")
        yield ProgressBar(total=None, show_eta=False, id="train-progress")
        with Grid(id="train-curves"):
            yield CurvePlot("loss / masked CE", id="plot-loss")
            yield CurvePlot("dev loss", id="plot-dev")
            yield CurvePlot("learning rate", id="plot-lr")
        with Horizontal(id="train-bottom"):
            with VerticalScroll(id="train-side"):
                yield Readout(id="train-detail")
                yield SystemPane(id="train-system")
            yield WrappedLog(max_lines=400, id="train-log")
        yield KeyBar(current="show('train')")

    def on_mount(self) -> None:
        if self.run_dir is not None:
            self.watcher = RunWatcher(self.run_dir, self, interval=WATCH_EVERY_S).start()
            self.set_interval(REPLOT_EVERY_S, self._replot_if_pending)

    def on_unmount(self) -> None:
        self.stop_watching()

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    # ------------------------------------------------------------ updates

    def on_run_updated(self, message: RunUpdated) -> None:
        self.status = message.status
        self.health = run_health(message.status)
        if message.latest_train:
            self.latest_train = message.latest_train
        self.query_one("#train-state", StateLabel).show(self.health)
        self._show_numbers(message)
        system = self.query_one("#train-system", SystemPane)
        system.follow(message.status, trainer_alive(message.status))
        system.show_stats(self.latest_train.get("sys"))
        log = self.query_one("#train-log", WrappedLog)
        if message.log_reset:
            log.clear()
        if message.log_lines:
            log.write_lines(message.log_lines)
        if message.metrics_changed:
            self._pending_history = message.history
        if time.monotonic() - self._last_plot >= REPLOT_EVERY_S:
            self._replot_if_pending()

    def _show_numbers(self, message: RunUpdated) -> None:
        status, train = message.status, self.latest_train
        step, total = status.get("step", train.get("step", 0)) or 0, status.get("total_steps")
        bar = self.query_one("#train-progress", ProgressBar)
        bar.update(total=total or None, progress=step)
        # tokens/s counts every worker of a multi-process run together: say how many (older runs: one)
        workers = status.get("world_size", train.get("world_size"))
        together = f" ({workers} workers)" if isinstance(workers, int) and workers > 1 else ""
        if self.health == "running":  # smoothed, and falling back on the trainer's own ETA
            eta = message.eta_s if message.eta_s is not None else status.get("eta_s")
            rate = message.tokens_per_s or train.get("tokens_per_s")
            pace = f"ETA {fmt.duration(eta)}  {fmt.count(rate)} tok/s{together}"
        else:  # no trainer stepping: the numbers are history, and say so
            pace = f"last record: {fmt.count(train.get('tokens_per_s'))} tok/s{together}" if train else ""
        self.query_one("#train-numbers", Readout).show(f"step {step}/{total or '?'}  {pace}".rstrip())
        dev = message.latest_dev
        lines = [
            f"epoch {fmt.number(train.get('epoch'), 2)}  tokens "
            f"{fmt.count(status.get('tokens', train.get('tokens')))}",
            f"loss {fmt.number(status.get('loss', train.get('loss')))}  CE "
            f"{fmt.number(train.get('masked_ce'))}",
            f"dev {fmt.number(dev.get('dev_loss', status.get('dev_loss')))}  lr "
            f"{fmt.scientific(train.get('lr'))}",
            # a saved report (every evaluation writes one, the trainer's and `mdlm-tui eval`'s), as on the
            # Runs row
            f"eval {fmt.eval_label(message.latest_report or message.latest_eval)}",
            f"ckpt {status.get('checkpoint') or '--'}  beat "
            f"{fmt.age(time.time() - status['heartbeat']) if status.get('heartbeat') else '--'}",
        ]
        words = status.get("words", train.get("words"))
        upcoming = [m for m in message.milestones if m > (words or 0)]  # the trainer saves on reaching one
        if words is not None or upcoming:  # runs from before words were counted show neither
            lines.insert(
                1, f"words {fmt.count(words)}" + (f"  next {milestone_name(upcoming[0])}" if upcoming else "")
            )
        if status.get("error"):
            lines.append(f"error: {status['error']}")
        lines += [f"! {problem}" for problem in message.problems]  # skipped, so the rest still shows
        self.query_one("#train-detail", Readout).show("\n".join(lines))

    def _replot_if_pending(self) -> None:
        history, self._pending_history = self._pending_history, None
        if history is None:
            return
        self._last_plot = time.monotonic()
        self.query_one("#plot-loss", CurvePlot).draw(
            [("loss", *history["loss"]), ("masked CE", *history["masked_ce"])]
        )
        self.query_one("#plot-dev", CurvePlot).draw(
            [("dev loss", *history["dev_loss"]), ("dev CE", *history["dev_masked_ce"])]
        )
        self.query_one("#plot-lr", CurvePlot).draw([("lr", *history["lr"])])

    # ------------------------------------------------------------ control (through core.control)

    def _send(self, command: str, done: str) -> bool:
        if self.run_dir is None:
            self.notify("No run open.", severity="warning")
            return False
        from core.control import send  # light: json and the run folder only
        from core.runs import RunDir, run_health, trainer_alive

        status = RunDir(self.run_dir).read_status()  # fresh: the last message may be a moment old
        if not trainer_alive(status):
            self.notify(f"No trainer is working on this run ({run_health(status)}).", severity="warning")
            return False
        send(self.run_dir, command)
        self.notify(done)
        return True

    def action_stop_run(self) -> None:
        self._send("stop", "Stop sent: the trainer saves a checkpoint, then stops.")

    def action_checkpoint(self) -> None:
        self._send("checkpoint", "Checkpoint requested.")

    def action_pause(self) -> None:
        self._send("pause", "Pause sent.")

    def action_resume(self) -> None:
        self._send("resume", "Resume sent.")

    def action_pause_resume(self) -> None:
        """One key for both, decided by the state the trainer reports."""
        if self.run_dir is not None:
            from core.runs import RunDir

            state = RunDir(self.run_dir).read_status().get("state")
            (self.action_resume if state == "paused" else self.action_pause)()
