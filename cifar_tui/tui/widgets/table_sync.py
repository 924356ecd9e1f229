"""Keeps a DataTable showing keyed rows while touching only what changed.

A row is given as a tuple of plain values, one per column, compared as they are; `render` turns
changed values into cells (Text) only for the rows that changed, and only the cells whose value
changed are updated. Reordering uses DataTable.sort (no rebuild, the cursor stays on its row).

Many new rows at once (the first showing of a table of thousands of runs) go in by chunks, a
frame apart: DataTable measures every new cell (about 0.1 ms each), so 10,000 runs would
otherwise freeze the UI for a second or more. The first chunk is shown at once.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable

CHUNK = 400                 # rows added per frame
REBUILD_OVER = 64           # more removed rows than this: clear and refill (remove_row is O(rows))
FILL_PAUSE_S = 0.01         # between chunks: keys, the table's own measuring and a repaint run


def plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


class LazyRows(dict):
    """Row values made when first asked for, then kept until dropped (`pop`): a table of
    thousands of rows adds a chunk at a time, and only those rows' values are made. `make(key)`
    raises KeyError for a key that is gone."""

    def __init__(self, make: Callable[[str], tuple]):
        super().__init__()
        self._make = make

    def __missing__(self, key: str) -> tuple:
        value = self[key] = self._make(key)
        return value


class TableSync:
    """`table` lists the keys given to `show()`, in that order. `id_column` is a column whose
    text is unique per row (DataTable.sort hands the key function cell values, not row keys)."""

    def __init__(self, table: DataTable, render: Callable[[str, tuple], Sequence[object]], id_column: str,
                 chunk: int = CHUNK):
        self.table = table
        self.render = render
        self.id_column = id_column
        self.chunk = chunk
        self.shown: dict[str, tuple] = {}      # key -> the values drawn
        self._order: list[str] = []            # keys in the order listed
        self._key_of: dict[str, str] = {}      # id column text -> key
        self._text_of: dict[str, str] = {}     # key -> id column text
        self._values: Mapping[str, tuple] = {}
        self._want: list[str] = []
        self._pending: list[str] = []
        self._filling = False

    @property
    def filling(self) -> bool:
        """Rows are still being added (a large table's first showing)."""
        return self._filling

    def cursor_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - an empty or changing table
            return None

    # ------------------------------------------------------------------ changes
    def update(self, values: Mapping[str, tuple]) -> int:
        """Redraw the changed cells of the rows already listed; returns how many rows changed."""
        columns = [c.value for c in self.table.columns]
        id_index = columns.index(self.id_column)
        changed = 0
        for key, new in values.items():
            old = self.shown.get(key)
            if old is None or old == new:
                continue
            cells = self.render(key, new)
            for i, (column, before, after) in enumerate(zip(columns, old, new)):
                if before != after:
                    self.table.update_cell(key, column, cells[i])
                    if i == id_index:
                        self._index_text(key, cells[i])
            self.shown[key] = new
            changed += 1
        return changed

    def show(self, order: list[str], values: Mapping[str, tuple]) -> None:
        """List exactly the keys of `order`, drawn from `values` (kept: rows still to be added
        are drawn from it when their turn comes)."""
        self._values, self._want = values, order
        cursor_key, cursor_row = self.cursor_key(), self.table.cursor_row
        wanted = set(order)
        removed = [k for k in self.shown if k not in wanted]
        if len(removed) > REBUILD_OVER:
            self.clear()
        elif removed:
            for key in removed:
                self.table.remove_row(key)
                del self.shown[key]
                self._key_of.pop(self._text_of.pop(key, ""), None)
            self._order = [k for k in self._order if k in self.shown]
        self.update({k: values[k] for k in self.shown})
        self._pending = [k for k in order if k not in self.shown]
        if not self._filling:
            self._add_chunk()
        if not self._filling:
            self._put_cursor(cursor_key, cursor_row)

    def clear(self) -> None:
        self.table.clear()
        self.shown.clear()
        self._order.clear()
        self._key_of.clear()
        self._text_of.clear()

    # ------------------------------------------------------------------ internals
    def _index_text(self, key: str, cell: object) -> None:
        self._key_of.pop(self._text_of.get(key, ""), None)
        text = plain(cell)
        self._text_of[key] = text
        self._key_of[text] = key

    def _add_chunk(self) -> None:
        batch, self._pending = self._pending[:self.chunk], self._pending[self.chunk:]
        id_index = [c.value for c in self.table.columns].index(self.id_column)
        for key in batch:
            if key in self.shown:
                continue
            try:
                values = self._values[key]
            except KeyError:  # gone meanwhile
                continue
            cells = self.render(key, values)
            self.table.add_row(*cells, key=key)
            self.shown[key] = values
            self._order.append(key)
            self._index_text(key, cells[id_index])
        self._filling = bool(self._pending)
        if self._filling:
            self.table.set_timer(FILL_PAUSE_S, self._add_chunk, name="fill table")
            return
        cursor_key, cursor_row = self.cursor_key(), self.table.cursor_row
        self._put_order()
        self._put_cursor(cursor_key, cursor_row)

    def _put_order(self) -> None:
        want = [k for k in self._want if k in self.shown]
        if want == self._order:
            return
        position = {k: i for i, k in enumerate(want)}
        key_of = self._key_of
        self.table.sort(self.id_column, key=lambda cell: position[key_of[plain(cell)]])
        self._order = want

    def _put_cursor(self, key: str | None, row: int) -> None:
        table = self.table
        if not table.row_count:
            return
        target = table.get_row_index(key) if key in self.shown else min(max(row, 0), table.row_count - 1)
        if target != table.cursor_row:
            table.move_cursor(row=target, animate=False)
