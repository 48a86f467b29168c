"""The bottom line of every screen: the keys that work here, fitted into the terminal's width.

It replaces Textual's Footer, which mounts a widget per key and restyles them all each time a
screen comes back; that cost tens of milliseconds per screen switch on a machine busy training.
This is one widget drawing one line of text, rebuilt only when the bindings or the width change.

The screen's own keys come first, in full. The app's keys (the screens, help, quit) follow, their
key letter highlighted inside the word when the word starts with it ("Runs" for r), the current
screen's own key left out. When the line is still too wide, the palette hint goes, then the app's
keys shrink to their letters, and only then is the line cut (ending in "…"); every key is also on
the Help screen and in the command palette.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import RenderResult
from textual.widget import Widget

from mdlm_tui.common.guard import Guarded

SEPARATOR = " │ "
GAP = "  "


class KeyBar(Guarded, Widget, can_focus=False):
    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        padding: 0 1;
        background: $footer-background;
        color: $footer-foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        & > .key-bar--key { color: $footer-key-foreground; text-style: bold; }
        & > .key-bar--description { color: $footer-description-foreground; }
    }
    """

    def __init__(self, current: str | None = None, **kwargs):
        """`current`: the action of the app key that shows this screen, left out of the line."""
        super().__init__(**kwargs)
        self.current = current
        self._spans: list[tuple[int, int, str]] = []  # (start, end, key) of each item, for clicks

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, lambda _screen: self.refresh())

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    # ------------------------------------------------------------ what to show

    def _items(
        self,
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]], tuple[str, str, str] | None]:
        """(screen items, app items, palette item), each item (key, key shown, description)."""
        local, app_items, palette, seen = [], [], None, set()
        for key, (node, binding, enabled, _tip) in self.screen.active_bindings.items():
            if key == self.app.COMMAND_PALETTE_BINDING and self.app.ENABLE_COMMAND_PALETTE:
                palette = (key, self.app.get_key_display(binding), "Palette")
                continue
            if not binding.show or not enabled or binding.action in seen or binding.action == self.current:
                continue
            seen.add(binding.action)  # "+" and "=" for one action: the first is enough
            (app_items if node is self.app else local).append(
                (key, self.app.get_key_display(binding), binding.description)
            )
        return local, app_items, palette

    def _line(self, width: int) -> Text:
        local, app_items, palette = self._items()
        for with_palette, app_words in ((True, True), (False, True), (False, False)):
            line, spans = self._build_line(local, app_items, palette if with_palette else None, app_words)
            if line.cell_len <= width:
                break
        self._spans = spans
        line.truncate(width, overflow="ellipsis")
        return line

    def _build_line(
        self, local, app_items, palette, app_words: bool
    ) -> tuple[Text, list[tuple[int, int, str]]]:
        key_style = self.get_component_rich_style("key-bar--key")
        description_style = self.get_component_rich_style("key-bar--description")
        line, spans = Text(), []

        def add(
            key: str, shown: str, description: str, gap: str, merge: bool = False, words: bool = True
        ) -> None:
            if spans:
                line.append(gap)
            start = line.cell_len
            if merge and description[:1].lower() == shown.lower():
                line.append(
                    description[0] if words else shown, key_style
                )  # "Runs" with its key r highlighted
                line.append(description[1:] if words else "", description_style)
            elif description:
                line.append(shown, key_style)
                line.append(f" {description}", description_style)
            else:
                line.append(shown, key_style)
            spans.append((start, line.cell_len, key))

        for item in local:
            add(*item, gap=GAP)
        for index, item in enumerate(app_items):
            add(*item, gap=SEPARATOR if index == 0 else " ", merge=True, words=app_words)
        if palette is not None:
            add(*palette, gap=SEPARATOR)
        return line, spans

    def render(self) -> RenderResult:
        return self._line(self.content_region.width or self.size.width)

    # ------------------------------------------------------------ mouse (optional, as everywhere)

    def on_click(self, event: events.Click) -> None:
        x = event.x - self.styles.padding.left
        for start, end, key in self._spans:
            if start <= x < end:
                self.app.simulate_key(key)  # the same path as pressing it
                return
