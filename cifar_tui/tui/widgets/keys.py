"""Keys applied in the order they were typed, however fast they arrive (a paste, tmux send-keys,
a key held down).

Textual hands a printable key to the focused Input at once (the Input's own handler inserts it),
but resolves a bound key (backspace, end, arrows, tab, enter) only when the event has bubbled
from the focused widget up to the App, one message queue per hop. Keys that arrive together
therefore apply out of order: `End BSpace BSpace BSpace BSpace 4 0` on "200" inserts "40"
first and then deletes it, and the characters typed after a Tab land in the field it left
(Textualize/textual#6605, open in the Textual 8 we use).

`KeysInOrder`, an object the App owns and hands each event to first (`App.on_event`), applies
each key completely before the next one, in the App's own queue, with the same rules Textual
uses: priority bindings first; a key the focused widget consumes (a character in an Input, a
paste) is typed into it there and then; any other key runs the first binding of the focused
widget's chain (its own bindings, then its ancestors', up to the modal screen), as it would have
after bubbling up. A key the footer shows dimmed (it cannot act now) says why, from the widget
that holds it (`explain_disabled`). A key that moves the focus waits until the newly focused
widget has handled its Focus event (an Input selects its text on focus), so the next key edits
the new field as a person would see it. Keys nothing binds still bubble as before. This module
holds the one place where key order is decided."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from textual import events
from textual.actions import ActionError
from textual.actions import parse as parse_action
from textual.app import App
from textual.widget import Widget
from textual.widgets import Input

FOCUS_SETTLE_S = 1.0  # the longest a key waits for the widget it focused (one that closes meanwhile)


def type_into(field: Input, text: str) -> None:
    """Type `text` into the Input as its own key and paste handlers do: over the selection, else at the cursor."""
    selection = field.selection
    if selection.is_empty:
        field.insert_text_at_cursor(text)
    else:
        field.replace(text, *selection)


class KeysInOrder:
    """Keys and pastes applied in arrival order, for `app`. `check_bindings(key, priority=False)`
    runs the first binding `key` has in the focused widget's chain, True when one ran: Textual's
    `App._check_bindings`, which the App hands over (it has no public name)."""

    def __init__(self, app: App, check_bindings: Callable[..., Awaitable[bool]]):
        self.app = app
        self.check_bindings = check_bindings

    async def handled(self, event: events.Event) -> bool:
        """Apply a key or a paste now; False when Textual's own path should take the event."""
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded:
            focused = self._focused_for_keys()
            if focused is not None:
                if isinstance(event, events.Paste):
                    self._paste(focused, event)
                else:
                    await self._key(focused, event)
                return True
        return False

    def _focused_for_keys(self) -> Widget | None:
        """The focused widget, when this object decides (else Textual's own path: no focus, a
        maximised widget and its escape rule, start-up and shutdown)."""
        try:
            screen = self.app.screen
        except Exception:  # noqa: BLE001 - no screen yet, or shutting down
            return None
        if screen.maximized is not None:
            return None
        return screen.focused

    def _paste(self, focused: Widget, event: events.Paste) -> None:
        if isinstance(focused, Input):
            if event.text:
                type_into(focused, event.text.splitlines()[0])  # a one-line field keeps the first line, as Input does
        else:
            focused._forward_event(event)

    async def _key(self, focused: Widget, event: events.Key) -> None:
        app = self.app
        if not app.app_focus:  # as Textual: a key means the terminal has the focus
            app.app_focus = True
        app.screen._clear_tooltip()
        if await self.check_bindings(event.key, priority=True):
            return
        if focused.check_consume_key(event.key, event.character):
            if isinstance(focused, Input) and event.is_printable and event.character:
                type_into(focused, event.character)
            else:  # another widget that consumes characters (type-to-search): its own handler, in its queue
                focused._forward_event(event)
            return
        if await self.check_bindings(event.key):  # the focused widget's bindings first, then its ancestors'
            await self._settle_focus(focused)
            return
        if self._explain_disabled(event.key):
            return
        focused._forward_event(event)  # nothing binds it: it bubbles (key_ methods, on_key handlers)

    def _explain_disabled(self, key: str) -> bool:
        """A key shown dimmed in the footer (its binding's check_action said None) was pressed: the
        widget that holds it says why, when it can (`explain_disabled(action, parameters)`)."""
        for namespace, bindings in self.app.screen._modal_binding_chain:
            for binding in bindings.key_to_bindings.get(key, ()):
                explain = getattr(namespace, "explain_disabled", None)
                if binding.priority or explain is None:
                    continue
                try:
                    _, action, parameters = parse_action(binding.action)
                except ActionError:
                    continue
                if namespace.check_action(action, parameters) is None and (why := explain(action, parameters)):
                    self.app.notify(why, severity="warning", timeout=5)
                    return True
        return False

    async def _settle_focus(self, before: Widget) -> None:
        """A binding moved the focus: wait until the new widget has handled the messages it has
        (its Focus event: an Input selects its text), so the next key sees it as a person would."""
        try:
            now = self.app.screen.focused
        except Exception:  # noqa: BLE001 - the screen went (the form closed)
            return
        if now is None or now is before:
            return
        done = asyncio.Event()
        if now.call_later(done.set):
            try:
                await asyncio.wait_for(done.wait(), FOCUS_SETTLE_S)
            except asyncio.TimeoutError:  # it closed meanwhile
                pass
