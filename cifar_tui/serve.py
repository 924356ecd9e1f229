"""`cifar-tui serve`: the same Textual app in a browser, through textual-serve.

Each browser session runs its own `cifar-tui` process (same --home, --data-root, --configs) behind
a websocket; textual-serve ships its JavaScript, so this works offline. Who may connect:

- loopback (the default, 127.0.0.1): whoever can open a local port, i.e. this machine's users
  and SSH tunnels (``ssh -L 8000:127.0.0.1:8000 host``). The Host header must name a loopback
  address (a web page cannot rebind its own domain to 127.0.0.1 and drive the TUI) and a websocket
  must come from the page's own origin (no other site's page can open it).
- any other address only with --public, and then every request must carry the token printed
  at start: ``?token=…`` on the page URL (the server answers with a cookie for this port and
  a redirect that drops it from the address bar), that cookie, or ``Authorization: Bearer …``.
  Without --public the command refuses (exit 2).

The token is random per start (secrets.token_urlsafe), or CIFAR_TUI_SERVE_TOKEN when set.

Sessions (cifar_tui/serve_sessions.py): at most --max-sessions at once (a "server full" page
beyond), each ended when its browser goes away (a closed tab, or a dropped network: no answer to
the websocket heartbeat), after --idle-timeout without input, and when the server stops
(SIGTERM, SIGINT, SIGHUP; a SIGKILLed server's sessions end by themselves: web_session.py).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import secrets
import shlex
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from aiohttp.web_runner import GracefulExit
from textual_serve.server import Server, to_int

from .serve_sessions import HEARTBEAT_ENV, TERM_GRACE_S, Sessions, duration_text
from .workspace import Workspace

TOKEN_ENV = "CIFAR_TUI_SERVE_TOKEN"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)


def app_command(ws: Workspace) -> list[str]:
    """What each browser session runs: this cifar-tui on the same workspace."""
    cmd = [sys.executable, "-m", "cifar_tui", "--home", str(Path(ws.home).resolve()),
           "--data-root", str(Path(ws.data_root).resolve())]
    if ws.configs:
        cmd += ["--configs", str(Path(ws.configs).resolve())]
    return cmd


def heartbeat_s(warn) -> float:
    """Seconds between websocket pings: 15, or the test hook's value (a bad one is a warning, then 15)."""
    text = os.environ.get(HEARTBEAT_ENV)
    try:
        value = float(text) if text else 15.0
        if value > 0:
            return value
    except ValueError:
        pass
    warn(f"warning: {HEARTBEAT_ENV}={text!r} is not a number of seconds above 0; pinging every 15 s")
    return 15.0


def _host_name(host_header: str) -> str:
    """'localhost:8000' -> 'localhost'; '[::1]:8000' -> '::1'."""
    return urlsplit(f"//{host_header}").hostname or ""


class GuardedServer(Server):
    """textual_serve's Server with the checks above (an aiohttp middleware) and page URLs built from
    the address the browser used (an SSH tunnel may map the port to another one)."""

    def __init__(self, argv: list[str], *, host: str, port: int, token: str | None, public_url: str | None = None,
                 max_sessions: int, idle_s: float, title: str = "cifar-tui"):
        super().__init__(shlex.join(argv), host=host, port=port, title=title, public_url=public_url)
        self.argv = argv
        self.token = token
        self.fixed_public_url = public_url is not None
        self.cookie = f"cifar_tui_token_{port}"  # cookies are per host, not per port
        self.urls: list[str] = []                # printed at start
        self.sessions = Sessions(max_sessions, idle_s, log=self.say)
        self.heartbeat = heartbeat_s(self.say)
        self.stopping = False

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    def _presented_token(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.query.get("token") or request.cookies.get(self.cookie)

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if self.token is None and not is_loopback(_host_name(request.host)):
            return web.Response(status=403, text="cifar-tui serve: this server answers loopback host names only "
                                                 "(localhost, 127.0.0.1)\n")
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin and urlsplit(origin).netloc != request.host:
            return web.Response(status=403, text="cifar-tui serve: websocket from another origin refused\n")
        if self.token is not None:
            presented = self._presented_token(request)
            if not presented or not hmac.compare_digest(presented.encode(), self.token.encode()):
                return web.Response(status=403, text="cifar-tui serve: this page needs its token: open the URL that "
                                                     "`cifar-tui serve` printed when it started (…/?token=…)\n")
            if request.path == "/" and "token" in request.query:  # keep it out of the address bar and history
                rest = {k: v for k, v in request.query.items() if k != "token"}
                response = web.Response(status=302, headers={"Location": "/" + (f"?{urlencode(rest)}" if rest else "")})
                response.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict", path="/",
                                    secure=request.scheme == "https")
                return response
        return await handler(request)

    async def handle_index(self, request: web.Request):
        if self.sessions.full():
            return full_page(self.sessions.limit, self.sessions.idle_s)
        if not self.fixed_public_url:  # no await before the page is built: no other request interleaves
            self.public_url = f"{request.scheme}://{request.host}"
        response = await super().handle_index(request)
        # no-store keeps the page out of the back/forward cache, where a page left for another keeps its
        # websocket (and its session) open
        response.headers["Cache-Control"] = "no-store"
        return response

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's handler, with the limit, the idle timeout and an end that always comes."""
        websocket = web.WebSocketResponse(heartbeat=self.heartbeat)  # no pong: a dropped network, the end
        if self.sessions.full() or self.stopping:  # a tab that raced another one to the last place
            await websocket.prepare(request)
            await websocket.close(code=1013, message=b"server full")  # 1013: try again later
            return websocket
        session = self.sessions.new(websocket, argv=self.argv, write_bytes=websocket.send_bytes,
                                    write_str=websocket.send_str, close=websocket.close,
                                    download_manager=self.download_manager, debug=self.debug)
        why = "browser went away"
        idle = None
        try:
            await websocket.prepare(request)
            await session.start(to_int(request.query.get("width", "80"), 80),
                                to_int(request.query.get("height", "24"), 24))
            self.say(f"session {session.number} started: pid {session.pid} "
                     f"({len(self.sessions.live)} of {self.sessions.limit} in use)")
            idle = asyncio.create_task(self.sessions.end_when_idle(session))
            await self._process_messages(websocket, session)
            if session.app_exited:
                why = "the app exited"
        except asyncio.CancelledError:
            why = "server stopping"
        except Exception as exc:  # noqa: BLE001 - one session's failure must not stop the server
            why = f"error: {exc!r}"
        finally:
            if idle is not None:
                idle.cancel()
            await asyncio.shield(self.sessions.end(session, why))
        return websocket

    async def on_startup(self, app: web.Application) -> None:
        pass  # textual-serve prints its banner here, before the port is open; `listening` says it after

    async def on_shutdown(self, app: web.Application) -> None:
        self.stopping = True
        await self.sessions.end_all("server stopping")

    def request_exit(self, sig: signal.Signals | None = None) -> None:
        if self.stopping:  # a second Ctrl+C while the sessions end: they are ending already
            return
        self.stopping = True
        live = len(self.sessions.live)
        self.say(f"{sig.name if sig else 'stop'}: ending {live} session{'' if live == 1 else 's'}, then exiting")
        raise GracefulExit()

    def listening(self, *_args) -> None:
        self.console.print("[bold]cifar-tui in a browser[/] (Ctrl+C stops the server; runs go on)")
        for url in self.urls:
            self.console.print(f"  open {url}", highlight=False, soft_wrap=True)

    def serve(self, debug: bool = False) -> None:
        """textual_serve's serve(), telling the URLs once the port listens (aiohttp's print hook)."""
        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request_exit, sig)
        try:
            web.run_app(self._make_app(), host=self.host, port=self.port, handle_signals=False, loop=loop,
                        print=self.listening, shutdown_timeout=TERM_GRACE_S)
        finally:
            self.sessions.kill_all_now()


def full_page(limit: int, idle_s: float) -> web.Response:
    """What a browser gets while all sessions are taken (503: try again later)."""
    idle = (f"<p>A session with no input for {duration_text(idle_s)} ends by itself.</p>" if idle_s > 0 else "")
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cifar-tui: server full</title>
<style>
body {{ background: #0c181f; color: rgba(255,255,255,.92); font: 18px/1.5 menlo, "DejaVu Sans Mono", monospace;
       display: flex; align-items: center; justify-content: center; min-height: 90vh; margin: 0; }}
main {{ background: #12232d; padding: 32px 48px; max-width: 720px; border-left: 4px solid #ac5af4; }}
h1 {{ font-size: 24px; margin: 0 0 16px; }}
button {{ padding: 12px 28px; background: #5e0ba7; color: #fff; border: none; font: inherit; cursor: pointer; }}
button:hover {{ background: #ac5af4; }}
</style></head>
<body><main>
<h1>cifar-tui: this server is full</h1>
<p>It serves at most {limit} browser tab{"s" if limit != 1 else ""} at a time, one cifar-tui each, and {limit}
{"are" if limit != 1 else "is"} open now. Close one (here or on another computer), then reload this page.</p>
{idle}
<p>Runs go on either way. Whoever started the server can allow more with
<code>cifar-tui serve --max-sessions N</code>.</p>
<button type="button" onclick="location.reload()">Reload</button>
</main></body></html>
"""
    return web.Response(status=503, text=body, content_type="text/html", headers={"Retry-After": "10"})


def start_urls(host: str, port: int, token: str | None) -> list[str]:
    """What to open: the bound address, or for a wildcard address this host's name."""
    names = [host]
    if host in ("0.0.0.0", "::", ""):
        names = [socket.gethostname(), "127.0.0.1"]
    query = f"/?token={token}" if token else "/"
    return [f"http://{f'[{n}]' if ':' in n else n}:{port}{query}" for n in names]
