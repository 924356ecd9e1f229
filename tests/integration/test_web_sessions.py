"""`cifar-tui serve`: no session's app process outlives its tab or the server.

A session ends with its tab (closed while the page loads, after the first screen, in the middle
of typing; a dropped network: a client that stops answering the websocket heartbeat), after
--idle-timeout, and with the server: SIGTERM, SIGINT or SIGHUP to the server's whole process
group, or a SIGKILL, after which the apps end by themselves. --max-sessions turns the next tab
away with a page that says why. An idle session does not spin. Each test counts the app
processes itself: one left over is a failure here, not just a cleanup for tests/support/hygiene.py.

`Tab` is a tab reduced to its websocket (what textual-serve's page sends and reads): cheaper than
a browser where the browser is not the point; the soak test opens real tabs in headless Chromium.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.test_web import CHROME_FLAGS, _browser, _screen_with, _serve, require_chromium
from tests.support.reliability import procs, wait_until  # noqa: F401 - procs is a fixture
from tests.support.webhook import free_port

FIRST_SCREEN = b"resnet18_baseline"  # on the Experiments tab, the first thing the app shows


def app_processes(home: Path) -> list[psutil.Process]:
    """The live app processes of the sessions on `home`, wherever they were re-parented."""
    home_arg = str(Path(home).resolve())
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if "cifar_tui" in cmd and home_arg in cmd and "serve" not in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def wait_for_no_app(home: Path, timeout: float = 60, server: "Server | None" = None) -> None:
    last: list = []

    def none_left():
        last[:] = [f"pid {p.pid} ({p.status()}, ppid {p.ppid()})" for p in app_processes(home) if p.is_running()]
        return not last
    try:
        wait_until(none_left, timeout, "every session's app process to end", interval=0.1)
    except AssertionError:
        log = "" if server is None else "; the server's log:\n" + "\n".join(server.lines)
        raise AssertionError(f"app processes still running after {timeout:.0f}s: {last}{log}") from None


class Tab:
    """A browser tab's websocket to `cifar-tui serve`, read by a thread as a page reads it (answering the
    server's pings): resize and keys in, the screen's bytes out. `active` sends a resize every second
    (a person at work); `drop_network` stops reading and answering, the connection left open."""

    def __init__(self, port: int, width: int = 120, height: int = 36, active: bool = False):
        import websocket

        self.size = {"width": width, "height": height}
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?width={width}&height={height}", timeout=60)
        self.ws.send(json.dumps(["resize", self.size]))
        self.screen = bytearray()
        self.changed = threading.Condition()
        self.closed_at: float | None = None
        self.active = active
        self.frozen = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        import websocket

        self.ws.settimeout(1.0)
        last_resize = time.monotonic()
        while not self.frozen.is_set():
            try:
                # control frames too: recv_data would answer pings inside, not back here to see `frozen`
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                opcode, data = None, b""
            except (websocket.WebSocketException, ConnectionError, OSError):
                opcode = websocket.ABNF.OPCODE_CLOSE
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                with self.changed:
                    self.closed_at = time.monotonic()
                    self.changed.notify_all()
                return
            if opcode == websocket.ABNF.OPCODE_BINARY:
                with self.changed:
                    self.screen += data
                    self.changed.notify_all()
            if self.active and time.monotonic() - last_resize >= 1.0 and not self.frozen.is_set():
                self.resize()
                last_resize = time.monotonic()

    def _wait(self, done, what: str, timeout: float) -> None:
        with self.changed:
            if not self.changed.wait_for(done, timeout):
                raise AssertionError(f"{what}: not after {timeout:.0f}s")

    def wait_for(self, needle: bytes, timeout: float = 90) -> float:
        """Wait until `needle` is on the screen; returns when that was seen."""
        self._wait(lambda: needle in self.screen or self.closed_at is not None, f"{needle!r} on the screen", timeout)
        assert needle in self.screen, f"the server closed the session before {needle!r} appeared"
        return time.monotonic()

    def wait_closed(self, timeout: float = 60) -> float:
        """Wait until the server closed the websocket; returns when."""
        self._wait(lambda: self.closed_at is not None, "the server closing the session", timeout)
        return self.closed_at

    def resize(self) -> float:
        self.ws.send(json.dumps(["resize", self.size]))
        return time.monotonic()

    def drop_network(self) -> None:
        self.frozen.set()

    def drop(self) -> None:
        """Gone without a goodbye (a killed browser): the TCP connection just closes."""
        self.frozen.set()
        self.ws.shutdown()


def _get(port: int, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


class Server:
    """A `cifar-tui serve` started by _serve, its output read by a thread (its log of sessions)."""

    def __init__(self, workspace: dict, procs, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        ws = {**workspace, "env": {**workspace["env"], **(env or {})}}
        self.proc, _ = _serve(ws, procs, "--port", str(self.port), *args)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_line(self, pattern: str, timeout: float = 60) -> re.Match:
        """The first line of the log that matches `pattern` (waiting for it)."""
        def find():
            return next((m for m in map(re.compile(pattern).search, self.lines) if m), None)
        with self.changed:
            found = self.changed.wait_for(find, timeout)
        assert found, f"no line matching {pattern!r} in the server's log after {timeout:.0f}s:\n" + "\n".join(self.lines)
        return found

    def session_pid(self, number: int) -> int:
        return int(self.wait_line(rf"^session {number} started: pid (\d+)").group(1))


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def assert_idles(pid: int, procs) -> None:
    """The app `pid` (on its first screen) takes a small fraction of the CPU that a busy loop gets over the same
    2 s (a spinning app gets as much; an idle one about 0.2% of a core: docs/BENCHMARKS.md). The second after the
    first screen is left out: the app's last start-up work."""
    time.sleep(1.0)
    app = psutil.Process(pid)
    spinner = procs.add(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    spin = psutil.Process(spinner.pid)
    app_before, spin_before = cpu_seconds(app), cpu_seconds(spin)
    time.sleep(2.0)
    app_used, spin_used = cpu_seconds(app) - app_before, cpu_seconds(spin) - spin_before
    spinner.kill()
    spinner.wait(30)
    assert app_used < 0.2 * spin_used, f"an idle session used {app_used:.2f} CPU s while a busy loop used {spin_used:.2f}"


# ---------------------------------------------------------------- the server stops


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_stopping_the_server_ends_every_session(workspace, procs, sig):
    """The signal goes to the server's whole process group (a terminal's Ctrl+C or hang-up, `kill -TERM -PGID`);
    one session is on its first screen, one still loading. SIGKILL leaves the apps to end by themselves.
    (SIGTERM's case first checks that the session on its first screen idles.)"""
    server = Server(workspace, procs)
    shown = Tab(server.port)
    shown.wait_for(FIRST_SCREEN)
    if sig == signal.SIGTERM:
        assert_idles(server.session_pid(1), procs)
    loading = Tab(server.port)
    server.session_pid(2)
    os.killpg(server.proc.pid, sig)
    code = server.proc.wait(60)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    wait_for_no_app(workspace["home"])
    if sig != signal.SIGKILL:
        shown.wait_closed()
        loading.wait_closed()


# ---------------------------------------------------------------- limits: sessions, idle time, a dropped network


IDLE_S = 4.0


@pytest.mark.timeout(180)
def test_max_sessions_the_idle_timeout_and_a_dropped_network(workspace, procs):
    """Two places. A third tab gets the 'server full' page (its websocket: closed, no process). A session ends
    IDLE_S after its last input; one whose network drops (no answer to the heartbeat) ends with it."""
    from cifar_tui.serve import HEARTBEAT_ENV

    home = workspace["home"]
    server = Server(workspace, procs, "--max-sessions", "2", "--idle-timeout", f"{IDLE_S:g}s",
                    env={HEARTBEAT_ENV: "0.5"})
    idle = Tab(server.port, active=True)  # busy until its first screen (a loaded machine may take a while)
    busy = Tab(server.port, active=True)  # a person at work: input every second
    idle_pid, busy_pid = server.session_pid(1), server.session_pid(2)

    status, page = _get(server.port)
    assert status == 503 and "this server is full" in page and "at most 2 browser tabs" in page
    assert "--max-sessions N" in page
    assert f"no input for {IDLE_S:g}s ends by itself" in page
    third = Tab(server.port)
    third.wait_closed()
    assert psutil.pid_exists(idle_pid) and psutil.pid_exists(busy_pid)  # and none for the third: see the end

    idle.wait_for(FIRST_SCREEN)
    idle.active = False
    last_input = idle.resize()  # the last input: from here, no more
    busy.wait_for(FIRST_SCREEN)
    busy.drop_network()
    server.wait_line(r"^session 2 ended: browser went away; .* \(1 of 2 in use\)")
    ended = idle.wait_closed(timeout=60)
    assert ended - last_input >= IDLE_S
    server.wait_line(rf"^session 1 ended: idle for {IDLE_S:g}s")
    wait_for_no_app(home)
    assert _get(server.port)[0] == 200  # room again
    os.killpg(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(60) == 0
    assert not any(line.startswith("session 3") for line in server.lines)


# ---------------------------------------------------------------- soak: real tabs in headless Chromium


TABS = 30
AT_ONCE = 3
MOMENTS = ("loading", "first screen", "typing")
# a smaller window, no WebGL (software GL in a headless browser) and one renderer for all tabs: about half the CPU
# per tab, which the apps need more (the machine has 2 cores)
SOAK_FLAGS = ("--window-size=800,600", "--disable-webgl", "--renderer-process-limit=1")


def _load(browser, url: str, new_tab: bool) -> str:
    """The page in a new tab, or again in the current one (page_load_strategy "none": returns as it starts to load)."""
    from tests.integration.test_web import CATCH_TERMINAL

    if new_tab:
        browser.switch_to.new_window("tab")
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL})
    browser.get(url)
    return browser.current_window_handle


def _shown(browser, handle: str) -> None:
    browser.switch_to.window(handle)
    _screen_with(browser, lambda s: "resnet18_baseline" in s, "the first screen")


def _leave(browser, handle: str, how: str, home_window: str) -> None:
    """The page goes away: its tab is closed, or it navigates elsewhere."""
    browser.switch_to.window(handle)
    if how == "close":
        browser.close()
        browser.switch_to.window(home_window)
    else:
        browser.get("about:blank")


@pytest.mark.timeout(300)
def test_soak_30_tabs_dropped_at_random_moments_then_the_server_stops(workspace, procs, tmp_path):
    """The issue's tab first (a headless screenshot: the browser leaves about 2 s in, while the app loads). Then
    30 pages, AT_ONCE at a time, each left at a moment drawn from a fixed seed (while the page or the app loads,
    on the first screen, right after keys were typed) by closing its tab or navigating away. After each round no
    app process is left; the server's pipes and memory stay flat; then SIGTERM to the server with tabs open
    leaves nothing."""
    chromium, _ = require_chromium()
    home, rng = workspace["home"], random.Random(19)
    server = Server(workspace, procs)
    me = psutil.Process(server.proc.pid)
    pipes = _pipes(me)  # before any session: its own output (stdout and stderr)
    url = f"http://127.0.0.1:{server.port}/"
    shot = subprocess.run([chromium, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'shot-profile'}",
                           f"--screenshot={tmp_path / 'shot.png'}", "--virtual-time-budget=8000", url],
                          capture_output=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    server.wait_line(r"^session 1 ended: browser went away")
    wait_for_no_app(home)

    browser = _browser(tmp_path, page_load_strategy="none", extra_flags=SOAK_FLAGS)
    home_window = browser.current_window_handle
    plans = [(rng.choices(MOMENTS, weights=(5, 3, 2))[0], rng.choice(("close", "navigate"))) for _ in range(TABS)]
    slots: list[str | None] = [None] * AT_ONCE  # a tab left on about:blank, to load the next page in
    try:
        for round_start in range(0, TABS, AT_ONCE):
            shown_later = []
            # the pages to be shown first, so that their apps load while the others come and go
            for slot, (moment, how) in sorted(enumerate(plans[round_start:round_start + AT_ONCE]),
                                              key=lambda item: item[1][0] == "loading"):
                if slots[slot] is not None:
                    browser.switch_to.window(slots[slot])
                handle = _load(browser, url, new_tab=slots[slot] is None)
                slots[slot] = None if how == "close" else handle
                if moment == "loading":
                    time.sleep(rng.uniform(0, 1.0))
                    _leave(browser, handle, how, home_window)
                else:
                    shown_later.append((handle, moment, how))
            for handle, moment, how in shown_later:
                _shown(browser, handle)
                if moment == "typing":
                    browser.find_element("css selector", ".xterm-helper-textarea").send_keys(
                        "/" + "resnet"[:rng.randint(1, 6)])
                else:
                    time.sleep(rng.uniform(0, 0.5))
                _leave(browser, handle, how, home_window)
            wait_for_no_app(home, server=server)
            if round_start == 0:  # the server has served every kind of page once: from here on, flat
                memory = me.memory_info().rss
        # a session's pipes close a moment after its process ends: wait for it (a leak never comes back)
        wait_until(lambda: _pipes(me) == pipes, 30, f"the server to hold only its own {pipes} pipes again")
        growth = me.memory_info().rss - memory
        assert growth < 20 * 2**20, f"the server's memory grew by {growth / 2**20:.1f} MiB over {TABS} pages"
        assert {moment for moment, _ in plans} == set(MOMENTS) and {how for _, how in plans} == {"close", "navigate"}

        # the server stops with two tabs open: one on its first screen, one loading
        browser.switch_to.window(home_window)
        _shown(browser, _load(browser, url, new_tab=True))
        _load(browser, url, new_tab=True)
        wait_until(lambda: len(app_processes(home)) == 2, 60, "the second open tab's process")
        os.killpg(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(60) == 0
        wait_for_no_app(home)
    finally:
        browser.quit()
    # every session that started ended, once (a tab gone before its app was started ends without starting)
    started = [m.group(1) for m in map(re.compile(r"^session (\d+) started").match, server.lines) if m]
    ended = [m.group(1) for m in map(re.compile(r"^session (\d+) ended").match, server.lines) if m]
    assert set(started) <= set(ended) and len(ended) == len(set(ended)) and len(started) > TABS // 2, server.lines


def _pipes(proc: psutil.Process) -> int:
    """How many pipes `proc` holds open (three per live session: its app's stdin, stdout and stderr)."""
    count = 0
    for fd in os.listdir(f"/proc/{proc.pid}/fd"):
        try:
            count += os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return count
