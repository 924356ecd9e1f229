"""`cifar-tui serve`: the real TUI in a real browser (Debian's headless Chromium through selenium),
the refusal of a non-loopback address without --public, and the token that --public requires.
Under CI=true a missing chromium/chromedriver is a failure, not a skip (.ci/run installs them)."""
from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, cli
from tests.support.reliability import procs, wait_until  # noqa: F401 - procs is a fixture
from tests.support.webhook import free_port

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900")
# textual-serve's page keeps its xterm.js terminal in a closure. This script, run before the page's
# own, catches the object that owns the terminal when it sets its `fitAddon`, so the test can read
# the screen the page shows (terminal.buffer) instead of guessing from pixels.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, 'fitAddon', {configurable: true, get() { return undefined; },
  set(value) { window.__cifar_tui_page = this;
               Object.defineProperty(this, 'fitAddon', {value, writable: true, configurable: true}); }});
"""
READ_SCREEN = """
const t = window.__cifar_tui_page && window.__cifar_tui_page.terminal;
if (!t) return null;
const lines = [];
for (let i = 0; i < t.rows; i++) { const l = t.buffer.active.getLine(i); lines.push(l ? l.translateToString(true) : ''); }
return lines.join('\\n');
"""


def require_chromium() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium and chromedriver are required under CI=true (.ci/run installs them with apt-get)")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    return chromium, driver


def _serve(workspace: dict, procs, *args: str, urls: int = 1) -> tuple[subprocess.Popen, list[str]]:
    """Start `cifar-tui serve ARGS` in a process group of its own (a test may signal the whole group); returns
    it and the URLs it printed (once it printed `urls` of them)."""
    proc = procs.add(subprocess.Popen([*CLI, "serve", *args], env={**workspace["env"], "COLUMNS": "300"},
                                      cwd=workspace["tmp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"serve exited ({proc.poll()}): {''.join(lines)}")
        lines.append(line)
        found = re.findall(r"open (http://\S+)", "".join(lines))
        if len(found) >= urls:
            return proc, found
    raise AssertionError(f"serve printed no URL: {''.join(lines)}")


def _browser(tmp: Path, page_load_strategy: str = "normal", extra_flags: tuple[str, ...] = ()):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = require_chromium()
    options = Options()
    options.binary_location = chromium
    options.page_load_strategy = page_load_strategy
    for flag in (*CHROME_FLAGS, *extra_flags):  # a later flag wins
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp / 'chromium-profile'}")
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL})
    return browser


def _screen_with(browser, predicate, what: str, timeout: float = 60) -> str:
    last = [""]

    def look():
        last[0] = browser.execute_script(READ_SCREEN) or ""
        return predicate(last[0])

    try:
        wait_until(look, timeout, what, interval=0.25)
    except AssertionError:
        raise AssertionError(f"{what} not on the page after {timeout}s; it shows:\n{last[0]}") from None
    return last[0]


@pytest.mark.timeout(300)
def test_the_tui_in_headless_chromium_lists_the_experiments_and_takes_keys(workspace, procs, tmp_path):
    require_chromium()
    server, urls = _serve(workspace, procs, "--port", str(free_port()))
    assert urls[0].startswith("http://127.0.0.1:")
    browser = _browser(tmp_path)
    try:
        browser.get(urls[0])
        screen = _screen_with(browser, lambda s: "resnet18_baseline" in s and "experiments" in s, "the experiment list")
        assert "cifar-tui" in screen and "resnet50_pretrained_arcface_224x224" in screen
        shot = tmp_path / "serve.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
        # keys typed into the page reach the app: `/` opens the filter, the list narrows to what matches
        keys = browser.find_element("css selector", ".xterm-helper-textarea")
        keys.send_keys("/")  # then wait like a person does: keys typed before the focus moves go to the list
        _screen_with(browser, lambda s: "Clear filter" in s, "the focused filter (its key hint in the footer)")
        keys.send_keys("224x224")
        narrowed = _screen_with(browser, lambda s: "224x224" in s and "resnet18_baseline " not in s, "the filtered list")
        assert "resnet18_pretrained_arcface_224x224" in narrowed and "resnet50_pretrained_arcface_224x224" in narrowed
        browser.save_screenshot(str(tmp_path / "serve-filtered.png"))
    finally:
        browser.quit()
    server.terminate()
    assert server.wait(30) in (0, -15)


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.timeout(300)
def test_a_public_address_needs_public_and_then_the_token(workspace, procs):
    res = cli(workspace, "serve", "--host", "0.0.0.0")
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "--host 0.0.0.0 is not a loopback address" in res.stderr and "ssh -L 8000:127.0.0.1:8000" in res.stderr
    assert "--public" in res.stderr

    port = free_port()
    server, urls = _serve(workspace, procs, "--host", "0.0.0.0", "--port", str(port), "--public", urls=2)
    token = re.search(r"\?token=([\w-]+)", urls[0]).group(1)
    assert len(token) >= 32 and all(f":{port}/?token={token}" in u for u in urls)
    for path, headers in (("/", {}), ("/?token=wrong", {}), ("/static/js/textual.js", {}), ("/ws", {}),
                          ("/", {"Cookie": f"cifar_tui_token_{port}=wrong"}), ("/", {"Authorization": "Bearer nope"})):
        assert _get(port, path, headers).status == 403, (path, headers)
    entry = _get(port, f"/?token={token}&fontsize=14")
    assert entry.status == 302 and entry.getheader("Location") == "/?fontsize=14"  # the token leaves the address bar
    cookie = entry.getheader("Set-Cookie")
    assert cookie.startswith(f"cifar_tui_token_{port}={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    with_cookie = {"Cookie": f"cifar_tui_token_{port}={token}"}
    assert _get(port, "/", with_cookie).status == 200
    assert _get(port, "/static/js/textual.js", with_cookie).status == 200
    assert _get(port, "/static/js/textual.js", {"Authorization": f"Bearer {token}"}).status == 200
    # the websocket: with the token but from another site's page, refused
    assert _get(port, "/ws", {**with_cookie, "Origin": "http://evil.example"}).status == 403
    server.terminate()
    server.wait(30)

    # loopback without a token: only loopback host names (no DNS rebinding), only same-origin websockets
    port = free_port()
    server, _ = _serve(workspace, procs, "--port", str(port))
    assert _get(port, "/").status == 200
    assert _get(port, "/", {"Host": f"evil.example:{port}"}).status == 403
    assert _get(port, "/ws", {"Origin": "http://evil.example"}).status == 403
    server.terminate()
    server.wait(30)
