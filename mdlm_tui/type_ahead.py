"""Keys typed ahead land where they would have landed typed one at a time.

Textual hands a key to the focused widget as soon as it is read, but a key bound to an action (Tab,
or c for the Configure screen) acts only once it has come back up to the app. Keys read meanwhile
(a paste, tmux send-keys, typing while the machine is busy) went to the widget focused before: text
typed right after c landed on the Runs table and was lost, and its letters switched screens. So
while a bound key is on its way, the keys after it wait; they follow once it has acted and the
screen it may have switched to has composed and taken its focus.
"""

from __future__ import annotations

from textual import events

RELEASE_ANYWAY_S = 1.0  # a widget that eats a bound key silently must not hold the keys after it for ever


class TypeAhead:
    """Mixed into the App, before `App` in its bases."""

    _held: list | None = None  # keys waiting for the key in flight; None: keys go straight on
    _in_flight: events.Key | None = None

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded:
            if self._held is not None:
                self._held.append(event)
                return
            screen = self.screen
            bound = isinstance(event, events.Key) and any(
                event.key in bindings.key_to_bindings for _node, bindings in screen._modal_binding_chain)
            await super().on_event(event)
            if bound and event.is_forwarded:  # handed to a widget: its binding acts when it comes back
                self._hold(event)
            elif self.screen is not screen:  # a priority key switched screens: wait until it is up
                self._hold(None)
                self._release_when_ready()
            return
        try:
            await super().on_event(event)
        finally:
            if event is self._in_flight:  # back at the app: its binding has acted
                self._release_when_ready()

    def _hold(self, key: events.Key | None) -> None:
        self._in_flight, self._held = key, []
        held = self._held
        self.set_timer(RELEASE_ANYWAY_S, lambda: self._release(held))

    def _release_when_ready(self) -> None:
        self._in_flight = None
        held = self._held
        # queued behind whatever the screen has to do first: a new screen composes, mounts and
        # takes its focus before the keys typed after the one that showed it
        if not self.screen.call_later(self._release, held):
            self._release(held)

    def _release(self, held: list | None) -> None:
        if held is None or held is not self._held:
            return  # released already
        self._held = self._in_flight = None
        for event in held:  # as new, in order: a bound one among them holds the rest again
            key = isinstance(event, events.Key)
            again = events.Key(event.key, event.character) if key else events.Paste(event.text)
            again.set_sender(self)  # as the driver does: a key sent by a screen would stop bubbling there
            self.post_message(again)
