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
from textual_serve.server import Server

from .workspace import Workspace

TOKEN_ENV = "CIFAR_TUI_SERVE_TOKEN"
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


def app_command(ws: Workspace) -> str:
    """The shell command each browser session runs: this cifar-tui on the same workspace."""
    cmd = [sys.executable, "-m", "cifar_tui", "--home", str(Path(ws.home).resolve()),
           "--data-root", str(Path(ws.data_root).resolve())]
    if ws.configs:
        cmd += ["--configs", str(Path(ws.configs).resolve())]
    return shlex.join(cmd)


def _host_name(host_header: str) -> str:
    """'localhost:8000' -> 'localhost'; '[::1]:8000' -> '::1'."""
    return urlsplit(f"//{host_header}").hostname or ""


class GuardedServer(Server):
    """textual_serve's Server with the checks above (an aiohttp middleware) and page URLs built from
    the address the browser used (an SSH tunnel may map the port to another one)."""

    def __init__(self, command: str, *, host: str, port: int, token: str | None, public_url: str | None = None,
                 title: str = "cifar-tui"):
        super().__init__(command, host=host, port=port, title=title, public_url=public_url)
        self.token = token
        self.fixed_public_url = public_url is not None
        self.cookie = f"cifar_tui_token_{port}"  # cookies are per host, not per port
        self.urls: list[str] = []                # printed at start

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
        if not self.fixed_public_url:  # no await before the page is built: no other request interleaves
            self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

    async def on_startup(self, app: web.Application) -> None:
        pass  # textual-serve prints its banner here, before the port is open; `listening` says it after

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
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_exit)
        web.run_app(self._make_app(), host=self.host, port=self.port, handle_signals=False, loop=loop,
                    print=self.listening)


def start_urls(host: str, port: int, token: str | None) -> list[str]:
    """What to open: the bound address, or for a wildcard address this host's name."""
    names = [host]
    if host in ("0.0.0.0", "::", ""):
        names = [socket.gethostname(), "127.0.0.1"]
    query = f"/?token={token}" if token else "/"
    return [f"http://{f'[{n}]' if ':' in n else n}:{port}{query}" for n in names]
