"""Keys typed ahead land where they would have landed typed one at a time.

Textual hands a key to the focused widget as soon as it is read, but a key bound to an action (Tab,
or c for the Configure screen) acts only once it has come back up to the app. Keys read meanwhile
(a paste, tmux send-keys, typing while the machine is busy) went to the widget focused before: text
typed right after c landed on the Runs table and was lost, and its letters switched screens. So
while a bound key is on its way, the keys after it wait in a backlog, in the order they came; they
are sent on, one by one, once it has acted and the screen it may have switched to has composed and
taken its focus. A key read while the backlog is not empty joins its end, never overtakes it.
"""

from __future__ import annotations

from collections import deque

from textual import events

RELEASE_ANYWAY_S = 1.0  # a widget that eats a bound key silently must not hold the keys after it for ever
SCREEN_SWITCH = object()  # in flight: a key that switched screens, until the new one is up


class TypeAhead:
    """Mixed into the App, before `App` in its bases."""

    _in_flight: object | None = None  # the bound key on its way (or SCREEN_SWITCH); None: nothing waits
    _generation = 0  # which wait a timer or a returning key belongs to
    _backlog: deque | None = None

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded:
            if self._backlog is None:
                self._backlog = deque()
            if self._in_flight is not None or self._backlog:
                self._backlog.append(event)
            else:
                await self._send(event)
            return
        try:
            await super().on_event(event)
        finally:
            if event is self._in_flight:  # back at the app: its binding has acted
                self._acted(self._generation)

    async def _send(self, event: events.Event) -> None:
        screen = self.screen
        bound = isinstance(event, events.Key) and any(
            event.key in bindings.key_to_bindings for _node, bindings in screen._modal_binding_chain
        )
        await super().on_event(event)
        if bound and event.is_forwarded:  # handed to a widget: its binding acts when it comes back
            self._wait_for(event)
        elif self.screen is not screen:  # a priority key switched screens: wait until it is up
            self._wait_for(SCREEN_SWITCH)
            self._acted(self._generation)

    def _wait_for(self, key: object) -> None:
        self._in_flight = key
        self._generation += 1
        generation = self._generation
        self.set_timer(RELEASE_ANYWAY_S, lambda: self._acted(generation))

    def _acted(self, generation: int) -> None:
        """The key in flight has acted (or the wait ran out): send the backlog on, queued behind
        whatever the screen has to do first (a new screen composes, mounts and takes its focus)."""
        if generation != self._generation:
            return  # a wait already over
        self._generation += 1
        if not self.screen.call_later(self.call_later, self._drain, self._generation):
            self.call_later(self._drain, self._generation)

    async def _drain(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._in_flight = None
        while self._backlog and self._in_flight is None:  # a bound key among them waits again
            await self._send(self._backlog.popleft())
