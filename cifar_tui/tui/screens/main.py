"""The app's main screen (the tabs). On a narrow terminal its footer leaves out the keys that have
another way in (sorting: a click on a header; the studies: the palette), so the ones that act on
the highlighted row stay in view; `?` lists every key whatever the width."""
from __future__ import annotations

from dataclasses import replace

from textual.binding import ActiveBinding
from textual.screen import Screen

NARROW = 110                                   # a terminal narrower than this gets the narrow footer
SPARE_IN_NARROW_FOOTER = {"sort", "studies"}   # actions left out of a narrow footer (still bound, still in `?`)


class MainScreen(Screen):
    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        bindings = super().active_bindings
        if self.size.width >= NARROW or not self.size.width:
            return bindings
        return {k: b._replace(binding=replace(b.binding, show=False)) if b.binding.action in SPARE_IN_NARROW_FOOTER
                else b for k, b in bindings.items()}
