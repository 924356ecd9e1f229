"""The browser sessions of `cifar-tui serve`: one app process each, and none outlives its tab or the server.

textual-serve's AppService runs `sh -c COMMAND` in the server's process group and, when the tab goes
away, sends a "quit" message and waits for the app's output to end, for ever if the app never reads
it. A `Session` instead:

- runs the app itself (no shell) in a session and process group of its own, with the driver of
  cifar_tui/tui/web_session.py, which ends the app on stdin EOF, on the server's death (even by
  SIGKILL) and on SIGTERM/SIGINT/SIGHUP;
- keeps reading the app's output after the browser is gone (an app blocked writing to a full pipe
  cannot read "quit" or handle a signal);
- ends it in steps: "quit" and stdin EOF, then SIGTERM to its process group, then SIGKILL.

`Sessions` holds the live ones: at most `limit` of them, each ended after `idle_s` without input.
Runs started from a session run in sessions of their own (cifar_tui/launch.py) and go on.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import shlex
import signal
import time
from typing import Awaitable, Callable

from textual_serve.app_service import AppService

from .tui.web_session import SERVER_PID_ENV

QUIT_GRACE_S = 2.0   # an app told to quit (and given stdin EOF) exits by itself within this
TERM_GRACE_S = 2.0   # then SIGTERM to its process group; then SIGKILL
DRIVER = "cifar_tui.tui.web_session:SessionDriver"
HEARTBEAT_ENV = "CIFAR_TUI_TEST_SERVE_HEARTBEAT"  # test-only: seconds between websocket pings (15); serve.py reads it
_reading: contextvars.ContextVar["Session | None"] = contextvars.ContextVar("cifar_tui_session", default=None)


class _NoFailureForAnEndedApp(logging.Filter):
    """textual-serve logs 'Application failed to start' for an app whose output ends before its first screen:
    not a failure when the session ended it on purpose (a tab closed while the app loaded)."""

    def filter(self, record: logging.LogRecord) -> bool:
        session = _reading.get()
        return not (session is not None and session.ending and record.getMessage() == "Application failed to start")


logging.getLogger("textual-serve").addFilter(_NoFailureForAnEndedApp())


def _guarded(send: Callable[..., Awaitable[object]], session: "Session") -> Callable[..., Awaitable[None]]:
    """A write to the browser that, once the browser is gone, does nothing instead of raising (an
    exception here ends textual-serve's reading of the app's output)."""
    async def call(*args) -> None:
        if session.browser_gone:
            return
        try:
            await send(*args)
        except (ConnectionError, RuntimeError):
            session.browser_gone = True
    return call


class Session(AppService):
    """One browser tab's app process (see the module docstring)."""

    quit_grace_s = QUIT_GRACE_S
    term_grace_s = TERM_GRACE_S

    def __init__(self, argv: list[str], number: int, *, write_bytes, write_str, close, download_manager,
                 debug: bool = False):
        self.browser_gone = False
        self.app_exited = False  # the app said it exits (the user quit it)
        self.shown = False       # the app has sent output (it started drawing its screen)
        self.ended_by = "itself"  # or what ended it: quit (and stdin EOF), SIGTERM, SIGKILL
        super().__init__(shlex.join(argv), write_bytes=_guarded(write_bytes, self), write_str=_guarded(write_str, self),
                         close=_guarded(close, self), download_manager=download_manager, debug=debug)
        self.argv = argv
        self.number = number
        self.last_input = time.monotonic()
        self._ending: asyncio.Future | None = None

    @property
    def ending(self) -> bool:
        return self._ending is not None

    async def run(self) -> None:
        _reading.set(self)  # this task's context only: the log filter above
        await super().run()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def _open_app_process(self, width: int = 80, height: int = 24):
        env = self._build_environment(width=width, height=height)
        env["TEXTUAL_DRIVER"] = DRIVER
        env[SERVER_PID_ENV] = str(os.getpid())
        env.pop(HEARTBEAT_ENV, None)  # the server's own test hook: not for the app or its runs
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        self._stdin = process.stdin
        return process

    # what the browser sends: input and resizes count as activity (pings and focus changes do not)
    async def send_bytes(self, data: bytes) -> bool:
        self.last_input = time.monotonic()
        return await super().send_bytes(data)

    async def set_terminal_size(self, width: int, height: int) -> None:
        self.last_input = time.monotonic()
        await super().set_terminal_size(width, height)

    async def on_data(self, payload: bytes) -> None:
        if not self.shown:  # the idle clock starts when the app starts drawing, not while it loads
            self.shown = True
            self.last_input = time.monotonic()
        await super().on_data(payload)

    async def on_meta(self, data: bytes) -> None:
        if json.loads(data).get("type") == "exit":
            self.app_exited = True
        await super().on_meta(data)

    async def stop(self) -> None:
        """End the app process (once, however many callers); returns when it and its group are gone."""
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._end())
        await asyncio.shield(self._ending)

    async def _end(self) -> None:
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            self._quit_and_close_stdin()
            self.ended_by = "quit"
            # an app that has not shown a screen has nothing to finish: no need to let it load first
            if not self.shown or not await self._exited(self.quit_grace_s):
                self.signal_group(signal.SIGTERM)
                self.ended_by = "SIGTERM"
                if not await self._exited(self.term_grace_s):
                    self.signal_group(signal.SIGKILL)
                    self.ended_by = "SIGKILL"
                    await self._exited(None)
        self.signal_group(signal.SIGKILL)  # anything the app left in its group
        if self._task is not None:  # its output ends with the process; a grandchild may still hold it
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            except asyncio.TimeoutError:
                self._task.cancel()

    def _quit_and_close_stdin(self) -> None:
        if self._stdin is None:
            return
        try:
            self._stdin.write(self.encode_packet(b"M", b'{"type": "quit"}'))
            self._stdin.close()  # flushes first; then the app reads EOF
        except (RuntimeError, ConnectionError, OSError):
            pass

    async def _exited(self, timeout: float | None) -> bool:
        """Whether the process exits within `timeout` (None: wait as long as it takes). Polls the
        return code: asyncio's wait() also waits for the pipes, which a grandchild may hold open."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._process.returncode is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the app's process group (its own: start_new_session)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Sessions:
    """The live sessions of one server: at most `limit`, each ended after `idle_s` without input
    (0: never)."""

    def __init__(self, limit: int, idle_s: float, log: Callable[[str], None] = print):
        self.limit = limit
        self.idle_s = idle_s
        self.log = log
        self.live: dict[Session, object] = {}  # session -> its websocket
        self.started = 0

    def full(self) -> bool:
        return len(self.live) >= self.limit

    def new(self, websocket, **kwargs) -> Session:
        """A session for `websocket`, counted at once (before any await: no two tabs take the last place)."""
        self.started += 1
        session = Session(number=self.started, **kwargs)
        self.live[session] = websocket
        return session

    async def end(self, session: Session, why: str) -> None:
        """Stop it, close its websocket, forget it."""
        try:
            await session.stop()
        finally:
            websocket = self.live.pop(session, None)
            if websocket is not None:
                self.log(f"session {session.number} ended: {why}; app ended by {session.ended_by} "
                         f"({len(self.live)} of {self.limit} in use)")
                try:
                    await websocket.close()
                except (ConnectionError, RuntimeError):
                    pass

    async def end_when_idle(self, session: Session) -> None:
        """Ends `session` once it has had no input for idle_s (a task; cancelled when the session ends)."""
        if self.idle_s <= 0:
            return
        while True:
            left = session.last_input + self.idle_s - time.monotonic()
            if left <= 0:
                await self.end(session, f"idle for {duration_text(self.idle_s)}")
                return
            await asyncio.sleep(left)

    async def end_all(self, why: str) -> None:
        await asyncio.gather(*(self.end(s, why) for s in list(self.live)), return_exceptions=True)

    def kill_all_now(self) -> None:
        """Last resort when the server exits with sessions left: SIGKILL their groups."""
        for session in list(self.live):
            session.signal_group(signal.SIGKILL)


def duration_text(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
