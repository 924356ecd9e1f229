"""A loopback webhook receiver for the notification tests: records every POST; the path picks
the behaviour (/ok: 200; /flaky: 503 on the first POST, then 200; /gone: 404; /hang: never answers)."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hook:
    def __init__(self) -> None:
        self.posts: list[dict] = []   # {"path", "body" (parsed JSON), "t"}
        self.lock = threading.Lock()
        self.release = threading.Event()  # set at close: a hanging handler gives up
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with hook.lock:
                    hook.posts.append({"path": self.path, "body": json.loads(body or b"null"), "t": time.time(),
                                       "content_type": self.headers.get("Content-Type")})
                    seen = sum(p["path"] == self.path for p in hook.posts)
                if self.path.startswith("/hang"):
                    hook.release.wait(60)
                    return
                code = {"/gone": 404}.get(self.path, 503 if self.path.startswith("/flaky") and seen == 1 else 200)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def received(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [p for p in self.posts if path is None or p["path"] == path]

    def wait_for(self, path: str, n: int = 1, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{n} POST(s) to {path} expected within {timeout}s; got {self.posts}")

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/refused"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
