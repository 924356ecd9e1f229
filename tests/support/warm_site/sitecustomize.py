"""The test suite's warm engine, client side (tests/support/warm_engine.py explains the whole).

This directory is on PYTHONPATH for the processes a test session starts, so Python imports this
file at the start of each of them. In every process but two kinds it does nothing: a process
started as `python -m engine.train ...` (by cifar_tui.launch, exactly as in production) or as
`python -m cifar_tui ...` (a test's CLI) while the suite's warm engine listens asks it for a warm
start. The warm engine forks a process that has torch, timm and the engine imported already,
gives it this process's stdin, stdout, stderr, environment, working directory and arguments,
and runs the module as __main__ there. This
process stays as its stand-in: it passes on every signal it gets and exits as the engine exits
(the same code, or killed by the same signal). Where the warm engine says no (an environment
that changes what imports do, another interpreter, another checkout) or is not there, this
process starts cold, as if this file did not exist.
"""
import os
import sys

SOCKET_ENV = "CIFAR_TUI_SUITE_WARM_ENGINE"
# the engine (a torchrun rank too: torchrun's agent starts it as `python -u -m engine.train`) and the CLI;
# not torchrun's agent: cifar_tui.launch signals the ranks it finds as the agent's children
WARM_MODULES = ("engine.train", "cifar_tui", "cifar_tui.gpu_check")
FLAGS = ("-u",)
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")


def _wanted() -> bool:
    argv = list(getattr(sys, "orig_argv", []))[1:]
    while argv and argv[0] in FLAGS:
        argv.pop(0)
    # a process of a SLURM job stays in its job (its cgroup, scancel's signals, its accounting): cold
    return (bool(os.environ.get(SOCKET_ENV)) and not os.environ.get("SLURM_JOB_ID") and len(argv) >= 2
            and argv[0] == "-m" and argv[1] in WARM_MODULES)


def _warm_start() -> None:
    import json
    import signal
    import socket
    import struct

    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return
    path = ([] if sys.flags.safe_path else [os.getcwd()]) + sys.path  # `-m` puts the cwd first
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(os.environ[SOCKET_ENV])
    except OSError:
        conn.close()
        return
    pending: list[int] = []
    sent = {"started": False}

    def forward(sig: int, frame: object) -> None:
        if sent["started"]:
            conn.sendall(json.dumps({"signal": sig}).encode() + b"\n")
        else:
            pending.append(sig)

    previous = {}
    for name in FORWARDED:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, forward)

    def go_cold() -> None:
        conn.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in pending:  # what arrived meanwhile, for the cold start to handle
            os.kill(os.getpid(), sig)

    request = json.dumps({"argv": list(sys.orig_argv), "env": dict(os.environ), "cwd": os.getcwd(), "path": path,
                          "executable": sys.executable}).encode()
    lines = conn.makefile("rb")
    try:
        socket.send_fds(conn, [struct.pack("!Q", len(request))], [0, 1, 2])
        conn.sendall(request)
        reply = json.loads(lines.readline() or b'{"cold": "no answer"}')
    except (OSError, ValueError):
        go_cold()
        return
    if "cold" in reply:
        go_cold()
        return
    sent["started"] = True
    for sig in pending:
        forward(sig, None)
    status: dict = {}
    try:
        for line in lines:
            status = json.loads(line)
            if "code" in status or "killed_by" in status:
                break
    except (OSError, ValueError):
        pass
    conn.settimeout(10)
    try:  # until the keeper is gone too: when this process has exited, nothing of the engine is left
        while conn.recv(4096):
            pass
    except OSError:
        pass
    if "killed_by" in status:
        sig = int(status["killed_by"])
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(int(status.get("code", 1)))  # no status: the warm engine is gone, and the engine with it


if _wanted():
    _warm_start()
