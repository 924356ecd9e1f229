"""How much CPU an idle `cifar-tui serve` session costs (the figure in docs/BENCHMARKS.md).

Starts `cifar-tui serve` on a fresh workspace, opens SESSIONS websockets the way textual-serve's page does
(answering the server's pings), waits for each first screen and SETTLE seconds more, then reads the CPU time
of every app process and of the server over WINDOW seconds. Stops the server with SIGTERM and checks that
no app process is left. Needs websocket-client (installed with selenium, the `test` extra).

    python scripts/serve-idle-cpu.py [--sessions 2] [--window 60] [--settle 5]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import websocket

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hold(port: int, shown: threading.Event, stop: threading.Event) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?width=160&height=45", timeout=60)
    ws.send(json.dumps(["resize", {"width": 160, "height": 45}]))
    ws.settimeout(0.5)
    screen = b""
    while not stop.is_set():
        try:
            _, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            continue
        if not shown.is_set() and isinstance(data, bytes):
            screen += data
            if b"resnet18_baseline" in screen:
                shown.set()
    ws.close()


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-idle-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
           "COLUMNS": "300"}
    server = subprocess.Popen([sys.executable, "-m", "cifar_tui", "--home", str(tmp / "runs"), "--data-root",
                               str(tmp / "data"), "serve", "--port", str(port),
                               "--max-sessions", str(max(args.sessions, 1))],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(server.stdout), daemon=True).start()
    while not any("open http" in line for line in log):
        time.sleep(0.1)
    stop = threading.Event()
    shown = [threading.Event() for _ in range(args.sessions)]
    for event in shown:
        threading.Thread(target=hold, args=(port, event, stop), daemon=True).start()
    for event in shown:
        event.wait(120)
    time.sleep(args.settle)
    pids = [int(m.group(1)) for m in map(re.compile(r"session \d+ started: pid (\d+)").search, list(log)) if m]
    procs = {"server": psutil.Process(server.pid), **{f"session {i + 1}": psutil.Process(p) for i, p in enumerate(pids)}}
    before = {name: cpu(p) for name, p in procs.items()}
    start = time.monotonic()
    time.sleep(args.window)
    elapsed = time.monotonic() - start
    for name, p in procs.items():
        print(f"{name}: {100 * (cpu(p) - before[name]) / elapsed:.2f}% of a core over {elapsed:.0f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    stop.set()
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(60)
    time.sleep(1)
    left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    print("app processes left after SIGTERM:", left or "none")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
