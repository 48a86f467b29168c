"""The base of the screens that show one open run (Train, Eval, Samples)."""

from __future__ import annotations

from textual.screen import Screen

from mdlm_tui.common.guard import Guarded


class RunScreen(Guarded, Screen):
    """A screen of one open run: the app calls `stop_watching` when another run opens."""

    def stop_watching(self) -> None:
        """Stop following the run's files; a screen that follows them overrides this."""
