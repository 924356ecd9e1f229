"""The app side of a `cifar-tui serve` session: Textual's WebDriver, made to end with its server.

`cifar-tui serve` (cifar_tui/serve_sessions.py) names this driver in TEXTUAL_DRIVER for every
browser session. Textual's own WebDriver returns from its input thread on stdin EOF and keeps
the app running with nobody to talk to; this one ends the app instead when:

- stdin reaches EOF (the server closed the pipe, or died: the kernel closes it for it);
- the server process dies, even by SIGKILL (PR_SET_PDEATHSIG, and a check that the parent
  is still the server that started this process, for a server that died before the prctl);
- SIGTERM, SIGINT or SIGHUP arrives.

Every way out arms a deadline: an app that has not exited EXIT_DEADLINE_S later (a wedged
event loop, a shutdown that waits on a dead peer) leaves with os._exit.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import threading

from textual import messages
from textual.drivers.web_driver import WebDriver

SERVER_PID_ENV = "CIFAR_TUI_SERVE_PID"
EXIT_DEADLINE_S = 5.0
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux for `sig` when the parent process dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def server_gone() -> bool:
    """Whether the server that started this session is no longer its parent."""
    expected = os.environ.get(SERVER_PID_ENV)
    return bool(expected) and str(os.getppid()) != expected


class SessionDriver(WebDriver):
    """WebDriver that ends the app when the server goes away (see the module docstring)."""

    def start_application_mode(self) -> None:
        super().start_application_mode()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.end_session, f"signal {signal.Signals(sig).name}")
        die_with_parent()
        if server_gone():  # the server died before the prctl above could ask to be told
            self.end_session("server gone")

    def run_input_thread(self) -> None:
        super().run_input_thread()
        if not self.exit_event.is_set():  # the input ended, not the app: stdin EOF or a read error
            self.end_session("stdin closed")

    def end_session(self, why: str) -> None:
        """Exit the app (from any thread), and exit the process for sure EXIT_DEADLINE_S later."""
        deadline = threading.Timer(EXIT_DEADLINE_S, os._exit, args=(1,))
        deadline.daemon = True
        deadline.name = f"exit deadline ({why})"
        deadline.start()
        self._app.post_message(messages.ExitApp())
