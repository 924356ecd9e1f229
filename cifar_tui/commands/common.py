"""What every command shares: the consoles, the one-line error exit, the workspace."""
from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..workspace import Workspace

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 130

# piped output is not cut to 80 columns (tables stay one row per line)
_PIPE_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 200))
console = Console(width=_PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 1000)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # a key may look like markup
    raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


class _State:
    ws: Workspace


state = _State()


def command_line() -> str:
    """This command as typed (recorded with a study, and by the engines it starts)."""
    import shlex

    return " ".join(["cifar-tui", shlex.join(sys.argv[1:])]).strip()


def open_store():
    """The workspace's store; what opening it found (a damaged database, an unreadable run) is printed."""
    store = state.ws.store()
    for line in state.ws.take_warnings():
        warn(line)
    return store


def supervisor(**kwargs):
    """A Supervisor for this command (a CLI's queue items are its own); warnings printed."""
    from ..supervisor import Supervisor

    sup = Supervisor(state.ws, shared_queue=False, **kwargs)
    for line in state.ws.take_warnings():
        warn(line)
    return sup
