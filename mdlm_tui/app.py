"""The Textual app: a shell of screens over run folders.

Training is always its own process writing a run folder (see DESIGN.md); the app reads folders
and sends control requests, so quitting it never stops a run. Screens are made on first use and
kept installed, the run-bound ones (train, eval, samples) per open run. torch is never imported
here: the app starts at once even on a machine where importing torch takes seconds.
"""

from __future__ import annotations

import gc
import importlib
import sys
import time
import traceback
from functools import partial
from pathlib import Path

from textual.actions import SkipAction
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.worker import WorkerFailed

from core.control import COMMANDS as CONTROL_COMMANDS  # light: json and the run folder only
from core.runs import RunDir, run_health
from mdlm_tui.common.guard import Guarded, ShowsFailures, culprit
from mdlm_tui.common.key_bar import KeyBar
from mdlm_tui.run_list.screen import RunsScreen, find_runs
from mdlm_tui.shell.help import HelpScreen
from mdlm_tui.shell.type_ahead import TypeAhead
from mdlm_tui.train.screen import TrainScreen

SCREEN_TITLES = {
    "runs": "Runs: every run, its state, open or delete",
    "configure": "Configure: choose a preset and start training",
    "train": "Train: the open run, live",
    "eval": "Eval: evaluation reports of the open run",
    "samples": "Samples: unmasking traces of the open run",
    "help": "Help: keys and watching remote runs",
}
RUN_BOUND = ("train", "eval", "samples")
REPEAT_QUIET_S = 30.0  # the same failure is notified once in this time: a render may fail on every frame


class UnavailableScreen(Guarded, Screen):
    """Stands in for a screen whose module is not part of this installation."""

    def __init__(self, title: str):
        super().__init__()
        self.title_text = title

    def compose(self) -> ComposeResult:
        yield Static(f"{self.title_text}: not available in this installation.", id="unavailable")
        yield KeyBar()


def _optional_screen(module: str, class_name: str):
    """The class, or None only when its module does not exist; a broken module still raises."""
    try:
        return getattr(importlib.import_module(f"mdlm_tui.{module}.screen"), class_name)
    except ModuleNotFoundError as e:
        # the feature's folder may be missing as a whole, or only its screen module
        if e.name in (f"mdlm_tui.{module}", f"mdlm_tui.{module}.screen"):
            return None
        raise


class MdlmCommands(Provider):
    """Command palette entries: the screens, the runs to open, and requests to the open run's trainer."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app: MdlmApp = self.app  # type: ignore[assignment]
        commands = [
            (f"Screen: {name}", partial(app.action_show, name), title)
            for name, title in SCREEN_TITLES.items()
        ]
        commands += [
            (f"Open run: {run.name}", partial(app.open_run, run), str(run))
            for run in find_runs(app.runs_root)
        ]
        if app.current_run is not None:
            # only a trainer at work takes requests: a finished or crashed run is offered none of them
            health = run_health(RunDir(app.current_run).read_status())
            moot = {"running": "resume", "paused": "pause"}
            if health in moot:
                commands += [
                    (
                        f"Train: {command}",
                        partial(app.action_control, command),
                        f"send '{command}' to {app.current_run.name}",
                    )
                    for command in CONTROL_COMMANDS
                    if command != moot[health]
                ]
        return commands

    async def discover(self) -> Hits:
        for text, callback, help_text in self._commands():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, text=text, help=help_text)


class MdlmApp(TypeAhead, Guarded, ShowsFailures, App):
    CSS_PATH = "app.tcss"
    TITLE = "mdlm-tui"
    COMMANDS = App.COMMANDS | {MdlmCommands}
    BINDINGS = [
        Binding("r", "show('runs')", "Runs"),
        Binding("c", "show('configure')", "Configure"),
        Binding("t", "show('train')", "Train"),
        Binding("e", "show('eval')", "Eval"),
        Binding("s", "show('samples')", "Samples"),
        Binding("question_mark", "show('help')", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_input", "Leave a text field", show=False),
    ]

    def __init__(self, runs_root: Path = Path("runs"), watch: Path | None = None):
        super().__init__()
        self.runs_root = Path(runs_root)
        self.current_run: Path | None = Path(watch) if watch is not None else None
        self._run_screens: dict[str, Screen] = {}  # name -> screen for current_run
        self.failures: list[str] = []  # every failure shown while the app ran, newest last
        self.guarding = False  # failures are shown, not fatal, once the first screen is on its way
        self._notified_at: dict[str, float] = {}

    def on_mount(self) -> None:
        self.install_screen(RunsScreen(self.runs_root), "runs")
        self.push_screen(self._screen("train") if self.current_run is not None else self._screen("runs"))
        self.call_after_refresh(self._freeze_startup_objects)
        self.guarding = True

    def _freeze_startup_objects(self) -> None:
        """The objects alive once the first screen is up (Textual's modules, the CSS, the widget
        trees) live as long as the app. Frozen, the garbage collector stops walking them: a full
        collection took 25-80 ms on a core shared with a trainer, and a key pressed meanwhile waited."""
        gc.collect()  # garbage left from starting up is freed first, not frozen with the rest
        gc.freeze()

    def on_unmount(self) -> None:
        gc.unfreeze()  # back to normal for whatever this process does after the app

    # ------------------------------------------------------------ screens

    def screen_class(self, name: str) -> type[Screen] | None:
        """The class of screen `name`; None for an optional one not in this installation."""
        fixed = {"runs": RunsScreen, "train": TrainScreen, "help": HelpScreen}
        if name in fixed:
            return fixed[name]
        return _optional_screen(name, f"{name.capitalize()}Screen")

    def _build(self, name: str) -> Screen:
        if name == "help":  # Compare too, though it opens from Runs (C) rather than by a key of its own
            names = [*SCREEN_TITLES, "compare"]
            return HelpScreen({title: self.screen_class(title) for title in names})
        args = {"configure": (self.runs_root,)}.get(name, (self.current_run,))
        screen_class = self.screen_class(name)
        return screen_class(*args) if screen_class is not None else UnavailableScreen(name.capitalize())

    def _screen(self, name: str) -> Screen:
        """The screen for `name`, made on first use and kept (run-bound ones for the current run)."""
        if name in RUN_BOUND:
            if name not in self._run_screens:
                screen = self._build(name)
                self.install_screen(screen, f"{name}:{self.current_run}")  # kept while the run stays open
                self._run_screens[name] = screen
            return self._run_screens[name]
        if not self.is_screen_installed(name):
            self.install_screen(self._build(name), name)
        return self.get_screen(name)

    def action_show(self, name: str) -> None:
        if name == "help":
            if not isinstance(self.screen, HelpScreen):
                self.push_screen(self._screen("help"))
            return
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        target = self._screen(name)
        if target is not self.screen:
            self.switch_screen(target)

    def open_run(self, path: Path) -> None:
        """Make `path` the current run and show it on the Train screen."""
        path = Path(path)
        if path != self.current_run:
            old = list(self._run_screens.values())
            showing = [screen for screen in old if screen in self.screen_stack]
            self._run_screens = {}
            self.current_run = path
            self.action_show("train")
            for screen in old:
                self._discard(screen, removed_by_switch=screen in showing)
        else:
            self.action_show("train")

    def on_configure_screen_run_started(self, message) -> None:
        self.open_run(message.run_dir)

    def on_runs_screen_run_deleted(self, message) -> None:
        self.forget_run(message.path)

    def on_runs_screen_compare_requested(self, message) -> None:
        self.open_compare(message.paths)

    def open_compare(self, paths: list[Path]) -> None:
        """The one way to compare runs (C on the Runs screen): the Compare screen on these run
        folders, in order, over the current screen; Escape goes back."""
        screen_class = self.screen_class("compare")
        if screen_class is None:
            self.push_screen(UnavailableScreen("Compare"))
            return
        self.push_screen(screen_class([Path(p) for p in paths]))

    def forget_run(self, path: Path) -> None:
        """A run was deleted: drop its screens (unless one is showing) and stop following it."""
        if Path(path) != self.current_run or any(s in self.screen_stack for s in self._run_screens.values()):
            return
        for screen in self._run_screens.values():
            self._discard(screen, removed_by_switch=False)
        self._run_screens = {}
        self.current_run = None

    def _discard(self, screen: Screen, removed_by_switch: bool) -> None:
        """Stop a screen of a run no longer open; the switch that replaced it removes it, or we do."""
        screen.stop_watching()
        self.uninstall_screen(screen)
        if not removed_by_switch and screen.is_mounted:
            screen.remove()

    # ------------------------------------------------------------ failures

    def show_failure(self, error: BaseException, what: str | None = None) -> None:
        """The one place a failure inside the app is shown: logged with its traceback and notified,
        naming what failed; the app goes on."""
        what = what or culprit(error)
        text = f"{what} failed: {type(error).__name__}: {error}"
        self.log.error(text, "".join(traceback.format_exception(error)))
        self.failures = [*self.failures[-99:], text]
        # the same error reported twice (a worker's, by its node and by Textual) is notified once
        key, now = f"{type(error).__name__}: {error}", time.monotonic()
        if now - self._notified_at.get(key, -REPEAT_QUIET_S) >= REPEAT_QUIET_S:
            self._notified_at[key] = now
            self.notify(
                f"{text}. The app goes on.",
                title="Something failed",
                severity="error",
                timeout=15,
                markup=False,
            )

    def _handle_exception(self, error: Exception) -> None:
        """Textual ends the app on any error it catches outside a guarded handler (a render, a timer,
        one of its own widgets). Once the app is up such an error is shown and the app goes on;
        before that, or when showing it fails, the app ends as Textual ends it (return code 1)."""
        if self.guarding and not self._exit:
            try:
                self.show_failure(error.error if isinstance(error, WorkerFailed) else error)
                return
            except Exception:
                pass
        super()._handle_exception(error)

    def action_leave_input(self) -> None:
        """Escape in a text field moves the focus to the screen, so r, q and the rest work again."""
        if not isinstance(self.focused, Input):
            raise SkipAction()  # Escape keeps its other uses (clearing a text selection)
        self.screen.set_focus(None)

    # ------------------------------------------------------------ control

    def action_control(self, command: str) -> None:
        """A control request to the open run's trainer, from the command palette."""
        if self.current_run is None:
            self.notify("No run open.", severity="warning")
            return
        train = self._screen("train")
        if train is not self.screen:
            self.action_show("train")
        actions = {
            "stop": train.action_stop_run,
            "checkpoint": train.action_checkpoint,
            "pause": train.action_pause,
            "resume": train.action_resume,
        }
        actions[command]()


def run_app(runs_root: Path, watch: Path | None = None) -> None:
    """Run the app; when it ended on an error (Textual printed its traceback), exit 1 saying so."""
    app = MdlmApp(runs_root=runs_root, watch=watch)
    app.run()
    if app.return_code:
        error = app._exception  # the first error; Textual keeps it for test frameworks
        text = str(error) if error is not None else ""
        # an error whose text is only an object's repr (a stylesheet's errors) is named by its type alone
        detail = f": {text}" if text and not text.startswith("<") else ""
        cause = f" ({type(error).__name__}{detail})" if error is not None else ""
        print(
            f"error: mdlm-tui stopped on an unexpected error{cause}; the details are above.", file=sys.stderr
        )
        raise SystemExit(1)
