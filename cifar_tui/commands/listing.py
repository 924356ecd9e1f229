"""Long listings on the terminal: `cifar-tui runs` and `cifar-tui leaderboard`.

Rich draws a Table at about 1 ms a row, so 10,000 runs took 5 s to print (reading them from the
store takes 0.08 s). The listings show the newest (or best) `DEFAULT_LIMIT` rows by default and say
how many they leave out (`--all`, `--limit N`); past `PLAIN_OVER` rows they are printed as plain
aligned lines (widths from `len`, colour only on the status), which costs microseconds a row.
`--json`, `--format csv|markdown|json` stay complete.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.style import Style
from rich.table import Table

DEFAULT_LIMIT = 50  # rows a table shows unless --all or --limit N
PLAIN_OVER = 200    # more rows than this: plain aligned lines instead of a Rich table


@dataclass
class Column:
    label: str
    right: bool = False


def limit_option() -> Optional[int]:
    return typer.Option(None, "--limit", min=1, metavar="N",
                        help=f"Show at most N rows (default {DEFAULT_LIMIT} in a table; --json lists every one).")


def all_option() -> bool:
    return typer.Option(False, "--all", help="Show every row (long listings are printed as plain aligned lines).")


def row_limit(limit: Optional[int], show_all: bool, complete: bool = False) -> Optional[int]:
    """The rows to show: None for every row (--all, or an output that must stay complete)."""
    if show_all:
        return None
    if limit is not None:
        return limit
    return None if complete else DEFAULT_LIMIT


def print_table(console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                styles: Sequence[Optional[str]] = (), style_column: int = -1) -> None:
    """A titled table. `styles[i]`: the style of row i's `style_column` cell (its status)."""
    if len(rows) > PLAIN_OVER:
        _print_plain(console, title, columns, rows, styles, style_column)
        return
    table = Table(title=escape(title), title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col.label, justify="right" if col.right else "left", no_wrap=i == 0)
    for i, row in enumerate(rows):
        cells = [escape(str(c)) for c in row]
        style = styles[i] if i < len(styles) else None
        if style and 0 <= style_column < len(cells):
            cells[style_column] = f"[{style}]{cells[style_column]}[/]"
        table.add_row(*cells)
    console.print(table)


def _print_plain(console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                 styles: Sequence[Optional[str]], style_column: int) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(col.label)] + [len(row[i]) for row in cells]) for i, col in enumerate(columns)]
    color = console.color_system if console.is_terminal and not console.no_color else None

    def line(values: list[str], style: Optional[str] = None) -> str:
        parts = [v.rjust(w) if col.right else v.ljust(w) for v, w, col in zip(values, widths, columns)]
        if style and color and 0 <= style_column < len(parts):
            parts[style_column] = Style.parse(style).render(parts[style_column], color_system=color)
        return "  ".join(parts).rstrip()

    out = console.file if console.file is not None else sys.stdout
    header = line([col.label for col in columns])
    bold = Style(bold=True).render(header, color_system=color) if color else header
    out.write(f"{title}\n{bold}\n")
    out.write("\n".join(line(row, styles[i] if i < len(styles) else None) for i, row in enumerate(cells)) + "\n")
    out.flush()


def hidden_line(console: Console, hidden: int, what: str, first: str) -> None:
    """`… 9,950 older runs not shown: --all lists every one, --limit N the newest N` (what: `older run`)."""
    if hidden > 0:
        console.print(f"[dim]… {hidden:,} {what}{'s' if hidden != 1 else ''} not shown: --all lists every one, "
                      f"--limit N the {first} N[/]", highlight=False)
