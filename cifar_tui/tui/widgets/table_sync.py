"""Keeps a DataTable showing keyed rows while touching only what changed, with the columns that fit.

A row is given as a tuple of plain values, one per column (`columns`, in that order), compared as
they are; `render` turns changed values into cells (Text) only for the rows that changed, and only
the cells whose value changed are updated. Reordering uses DataTable.sort (no rebuild, the cursor
stays on its row).

Columns: each has a priority (0: always shown; then 1, 2, ...: the larger, the sooner it goes).
`fit(width)` shows every column that fits in `width` cells, leaving out the least important first
(their widths: the widest cell drawn so far, or the header); a narrow terminal keeps the columns
that matter instead of cutting the last ones off.

Many new rows at once (the first showing of a table of thousands of runs) go in by chunks, a
frame apart: DataTable measures every new cell (about 0.1 ms each), so 10,000 runs would
otherwise freeze the UI for a second or more. The first chunk is shown at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable

CHUNK = 400                 # rows added per frame
REBUILD_OVER = 64           # more removed rows than this: clear and refill (remove_row is O(rows))
FILL_PAUSE_S = 0.01         # between chunks: keys, the table's own measuring and a repaint run
CELL_PADDING = 2            # DataTable's cell padding, both sides
SCROLLBAR = 2               # a vertical scrollbar's width, kept free
ELASTIC_MIN = 16            # an elastic column is kept while this much of it fits


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    priority: int = 0          # 0: always shown; larger: left out sooner when the table is narrow
    width: int | None = None   # a fixed width (None: sized to its cells by DataTable)
    elastic: bool = False      # a long text column (last): kept while ELASTIC_MIN cells fit, cut at the edge


def plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def fit_columns(columns: Sequence[Column], widths: Mapping[str, int], available: int) -> list[str]:
    """The keys of the columns to show in `available` cells: all, less the least important ones
    (highest priority number, then the rightmost) until the rest fit. Priority 0 always stays."""
    shown = list(columns)
    total = sum(widths.get(c.key, len(c.label)) + CELL_PADDING for c in shown)
    droppable = sorted((c for c in shown if c.priority > 0), key=lambda c: (c.priority, columns.index(c)))
    while total > available and droppable:
        gone = droppable.pop()
        shown.remove(gone)
        total -= widths.get(gone.key, len(gone.label)) + CELL_PADDING
    return [c.key for c in shown]


class SyncedTable(DataTable):
    """A DataTable whose TableSync fits the columns to its width whenever its size changes (a
    terminal resized, a pane beside it shown or hidden, a tab brought to the front)."""

    sync: "TableSync | None" = None

    def on_resize(self) -> None:
        if self.sync is not None:
            self.call_after_refresh(self.sync.fit)


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
    """`table` lists the keys given to `show()`, in that order, in the `columns` that fit.

    `header(column)`: the header text of a column (default its label; the leaderboard adds its
    sort arrow)."""

    def __init__(self, table: DataTable, render: Callable[[str, tuple], Sequence[object]],
                 columns: Sequence[Column], chunk: int = CHUNK, header: Callable[[Column], str] | None = None):
        self.table = table
        self.render = render
        self.columns = list(columns)
        self.header = header or (lambda c: c.label)
        self.chunk = chunk
        self.visible: list[str] = [c.key for c in self.columns]
        self.widths: dict[str, int] = {}       # key -> the widest cell drawn so far (or the header)
        self.shown: dict[str, tuple] = {}      # key -> the values drawn
        self._order: list[str] = []            # keys in the order listed
        self._row_of: dict[int, str] = {}      # id() of a row's first cell -> its key (the sort's handle)
        self._first_of: dict[str, int] = {}    # key -> id() of its first cell
        self._values: Mapping[str, tuple] = {}
        self._want: list[str] = []
        self._pending: list[str] = []
        self._filling = False
        self._width = 0                        # the width last fitted to (0: not yet)
        self._add_columns()
        if isinstance(table, SyncedTable):
            table.sync = self

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

    # ------------------------------------------------------------------ columns
    def _add_columns(self) -> None:
        for c in self.columns:
            if c.key in self.visible:
                self.table.add_column(self.header(c), key=c.key, width=c.width)

    def reset(self) -> None:
        """No rows, every column, widths measured afresh (a table about to list other rows)."""
        self._want, self._values = [], {}
        self.widths.clear()
        self.visible = [c.key for c in self.columns]
        self.rebuild()

    def set_columns(self, columns: Sequence[Column]) -> None:
        """New column definitions (widths measured afresh): every one shown, then fitted again."""
        self.columns = list(columns)
        self.visible = [c.key for c in self.columns]
        self.widths.clear()
        self.rebuild()
        if self._width:
            self.fit(self._width)

    def relabel(self, keys: set[str]) -> None:
        """Those columns' headers again (the sort arrow moved), resized as DataTable sizes a column
        (widest cell or header); the rows stay as they are."""
        table = self.table
        if not table.row_count:
            self.rebuild()
            return
        first = self.cursor_key() or next(iter(self.shown))
        by_key = {c.key: c for c in self.columns}
        for column in table.columns.values():
            key = column.key.value
            if key in keys and key in by_key:
                column.label = Text(self.header(by_key[key]))
                table.update_cell(first, column.key, table.get_cell(first, column.key), update_width=True)

    def fit(self, width: int | None = None) -> bool:
        """Show the columns that fit in `width` cells (default: the table's width inside its border;
        the least important go first); True when that changed what is shown (the table is rebuilt)."""
        if width is None:
            width = self.table.content_region.width
        if width <= 0:
            return False
        self._width = width
        widths = {}
        for c in self.columns:
            measured = max(self.widths.get(c.key, 0), len(self.header(c)))
            widths[c.key] = c.width if c.width is not None else min(measured, ELASTIC_MIN) if c.elastic else measured
        visible = fit_columns(self.columns, widths, width - SCROLLBAR)
        if visible == self.visible:
            return False
        self.visible = visible
        self.rebuild()
        return True

    def rebuild(self) -> None:
        """Columns and rows afresh (the cursor stays on its row)."""
        cursor_key, cursor_row = self.cursor_key(), self.table.cursor_row
        order, values = self._want, self._values
        self.clear()
        self.table.clear(columns=True)
        self._add_columns()
        self._pending = []
        self._filling = False
        self.show(order, values)
        self._put_cursor(cursor_key, cursor_row)

    # ------------------------------------------------------------------ changes
    def update(self, values: Mapping[str, tuple]) -> int:
        """Redraw the changed cells of the rows already listed; returns how many rows changed."""
        keys = [c.key for c in self.columns]
        visible = set(self.visible)
        first = self.visible[0] if self.visible else None
        changed = 0
        for key, new in values.items():
            old = self.shown.get(key)
            if old is None or old == new:
                continue
            cells = self.render(key, new)
            self._measure(cells)
            for column, before, after, cell in zip(keys, old, new, cells):
                if before != after and column in visible:
                    if column == first:
                        cell = self._handle(key, cell)
                    self.table.update_cell(key, column, cell)
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
                self._row_of.pop(self._first_of.pop(key, 0), None)
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
        self._row_of.clear()
        self._first_of.clear()

    # ------------------------------------------------------------------ internals
    def _measure(self, cells: Sequence[object]) -> None:
        widths = self.widths
        for c, cell in zip(self.columns, cells):
            n = len(plain(cell))
            if n > widths.get(c.key, 0):
                widths[c.key] = n

    def _handle(self, key: str, cell: object) -> Text:
        """A row's first visible cell, as an object of its own: DataTable.sort hands the key
        function cell values, not row keys, and this cell's identity says which row it is."""
        own = cell.copy() if isinstance(cell, Text) else Text(str(cell), no_wrap=True, end="")
        self._row_of.pop(self._first_of.get(key, 0), None)
        self._first_of[key] = id(own)
        self._row_of[id(own)] = key
        return own

    def _add_chunk(self) -> None:
        batch, self._pending = self._pending[:self.chunk], self._pending[self.chunk:]
        index = {c.key: i for i, c in enumerate(self.columns)}
        picks = [index[k] for k in self.visible]
        for key in batch:
            if key in self.shown:
                continue
            try:
                values = self._values[key]
            except KeyError:  # gone meanwhile
                continue
            cells = self.render(key, values)
            self._measure(cells)
            row = [cells[i] for i in picks]
            if row:
                row[0] = self._handle(key, row[0])
            self.table.add_row(*row, key=key)
            self.shown[key] = values
            self._order.append(key)
        self._filling = bool(self._pending)
        if self._filling:
            self.table.set_timer(FILL_PAUSE_S, self._add_chunk, name="fill table")
            return
        cursor_key, cursor_row = self.cursor_key(), self.table.cursor_row
        self._put_order()
        self._put_cursor(cursor_key, cursor_row)
        self.fit()  # the new rows may be wider than what fitted before

    def _put_order(self) -> None:
        want = [k for k in self._want if k in self.shown]
        if want == self._order or not self.visible:
            return
        position = {k: i for i, k in enumerate(want)}
        row_of = self._row_of
        self.table.sort(self.visible[0], key=lambda cell: position[row_of[id(cell)]])
        self._order = want

    def _put_cursor(self, key: str | None, row: int) -> None:
        table = self.table
        if not table.row_count:
            return
        target = table.get_row_index(key) if key in self.shown else min(max(row, 0), table.row_count - 1)
        if target != table.cursor_row:
            table.move_cursor(row=target, animate=False)
