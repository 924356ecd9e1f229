"""Session.stop (cifar_tui/serve_sessions.py) ends any app process, with real processes standing in for the app:
one that exits when told to quit (leaving a child behind), one that ignores quit, stdin EOF and SIGTERM (and has a child that does too),
and one that never showed a screen. The browser side is a list; no server runs."""
from __future__ import annotations

import asyncio
import sys
import time

import psutil
import pytest
from textual_serve.download_manager import DownloadManager

from cifar_tui.serve_sessions import Session

# the prelude textual-serve waits for, then one data packet (the pids), as Textual's WebDriver writes them
SHOW = """
import os, sys
def show(text):
    data = text.encode()
    sys.stdout.buffer.write(b"__GANGLION__\\n" + b"D" + len(data).to_bytes(4, "big") + data)
    sys.stdout.flush()
"""
CHILD = """
import signal, subprocess
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
"""
POLITE = SHOW + CHILD + """
show(f"{os.getpid()} {child.pid}")
sys.stdin.buffer.read()  # until EOF: the quit message, then the end (leaving its child behind)
"""
STUBBORN = SHOW + CHILD + """
import time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
show(f"{os.getpid()} {child.pid}")
while True:
    time.sleep(1)
"""
LOADING = "import time; time.sleep(600)"  # never shows a screen


def _end(code: str, quit_grace: float = 0.5) -> tuple[Session, list[int]]:
    async def scenario():
        shown: list[bytes] = []

        async def to_browser(data: bytes) -> None:
            shown.append(data)

        async def nothing(*_args) -> None:
            pass

        session = Session([sys.executable, "-c", code], 1, write_bytes=to_browser, write_str=nothing, close=nothing,
                          download_manager=DownloadManager())
        session.quit_grace_s, session.term_grace_s = quit_grace, 0.5
        await session.start(80, 24)
        pids = [session.pid]
        if code != LOADING:
            for _ in range(600):
                if shown:
                    break
                await asyncio.sleep(0.05)
            pids = [int(p) for p in b"".join(shown).split()]
        await session.stop()
        return session, pids

    return asyncio.run(scenario())


def _gone(pid: int) -> bool:
    """Dead (a zombie counts: the test process is the subreaper of orphans), within 10 s of the kill."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(60)
def test_an_app_that_quits_when_told_ends_with_the_quit_and_what_it_left_in_its_group_is_killed():
    session, pids = _end(POLITE, quit_grace=30)
    assert len(pids) == 2
    assert session.ended_by == "quit" and all(map(_gone, pids))


@pytest.mark.timeout(60)
def test_an_app_that_ignores_quit_eof_and_sigterm_is_killed_with_its_process_group():
    session, pids = _end(STUBBORN)
    assert len(pids) == 2  # the app and its child, both ignoring SIGTERM
    assert session.ended_by == "SIGKILL" and all(map(_gone, pids))


@pytest.mark.timeout(60)
def test_an_app_that_never_showed_a_screen_gets_sigterm_at_once():
    session, pids = _end(LOADING, quit_grace=600)  # a quit grace longer than the test's timeout
    assert session.ended_by == "SIGTERM" and all(map(_gone, pids))
