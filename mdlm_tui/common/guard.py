"""No widget crash ends the app: `Guarded` is mixed into the app, every screen and our widgets.

Textual ends the whole app on an exception in any handler, action, timer, render or worker (one
started with exit_on_error; others fail silently), and stops the message loop of the screen or
widget whose handler raised, so that part of the screen would freeze even if the app went on. A
guarded node catches the exception where it is handled, keeps its loop running and hands the error
to the app's `show_failure` (MdlmApp: a notification naming what failed). A render that fails draws
that sentence in place of the widget, so the rest of the screen still draws; a worker that fails is
reported from its node's `Worker.StateChanged`. A compose that fails (Textual would leave the node
empty, without even a screen's toast rack) is reported too, and the node holds that sentence instead.
Under an app that is not `ShowsFailures` (a widget tested alone) errors go to Textual as before.
"""

from __future__ import annotations

import traceback

from rich.text import Text
from textual._callback import invoke
from textual.compose import compose
from textual.dom import DOMNode
from textual.visual import visualize
from textual.worker import Worker, WorkerState


def describe(node) -> str:
    """`TrainScreen`, `CurvePlot #plot-loss`: what failed, in words a user can match to the screen."""
    node_id = getattr(node, "id", None)
    return f"{type(node).__name__} #{node_id}" if node_id else type(node).__name__


def culprit(error: BaseException) -> str:
    """The innermost screen or widget whose code raised `error`, else the app: a key's action runs in
    the app's loop, yet it is the screen's action that failed."""
    from textual.app import App

    for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
        node = frame.f_locals.get("self")
        if isinstance(node, DOMNode) and not isinstance(node, App):
            return describe(node)
    return "mdlm-tui"


class ShowsFailures:
    """What an app declares to take guarded failures: `show_failure`, and `guarding`, false while it
    starts (an app that cannot start ends, as Textual ends it)."""

    guarding = False

    def show_failure(self, error: BaseException, what: str | None = None) -> None:
        raise NotImplementedError


def report(node, error: BaseException, what: str | None = None, later: bool = False) -> bool:
    """Hand `error` to the app's show_failure; False when the app takes no failures (a widget tested
    alone) or is still starting: the caller re-raises."""
    try:
        app = node.app
    except Exception:  # a node not (or no longer) attached to an app
        return False
    if not isinstance(app, ShowsFailures) or not app.guarding:
        return False
    if later:  # from a render: the notification must not change the DOM while it is being drawn
        app.call_later(app.show_failure, error, what)
    else:
        app.show_failure(error, what)
    return True


def failed_sentence(node, error: BaseException) -> str:
    return f"{describe(node)} failed: {type(error).__name__}: {error}"


class Guarded:
    _compose_failed = False

    async def _compose(self) -> None:
        """Textual's `Widget._compose`, but a compose that raises leaves the sentence saying so in the
        node, and a screen its toasts, so the failure shows and the app's keys still work."""
        try:
            widgets = [*self._pending_children, *compose(self)]
        except Exception as error:
            if not report(self, error, what=describe(self)):
                raise
            from textual.widgets import Static

            self._compose_failed = True
            sentence = Text(failed_sentence(self, error), style="bold red")
            widgets = [Static(sentence, classes="compose-failed")]
        self._pending_children.clear()
        self._extend_compose(widgets)
        await self.mount_composed_widgets(widgets)

    def _get_dispatch_methods(self, method_name, message):
        """Our handlers each report their own failure, so that one that raises never skips Textual's
        handlers after it (a screen's layout on resize). Once its compose failed, a node's own
        handlers (on_mount, on_resize...) would only fail on the widgets it lacks: only Textual's run."""
        for cls, method in super()._get_dispatch_methods(method_name, message):
            if cls.__module__.split(".")[0] == "textual":
                yield cls, method
            elif not self._compose_failed:
                yield cls, self._reporting(method)

    def _reporting(self, method):
        async def handler(message) -> None:
            try:
                await invoke(method, message)
            except Exception as error:
                if not report(self, error):
                    raise

        return handler

    async def _dispatch_message(self, message) -> None:
        try:
            await super()._dispatch_message(message)
        except Exception as error:
            if not report(self, error):
                raise

    def _render(self):
        try:
            return super()._render()
        except Exception as error:
            if not report(self, error, what=describe(self), later=True):
                raise
            return visualize(self, Text(failed_sentence(self, error), style="bold red"))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR and worker.error is not None:
            report(self, worker.error, what=f"{describe(self)}: {worker.name or 'a worker'}")
