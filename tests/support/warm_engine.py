"""The test suite's warm engine: engine (and CLI) processes without the interpreter start and imports.

A tiny engine run costs ~1 s of training and ~4-5 s of `import torch, timm, engine.trainer`;
the suite starts about a hundred of them, and hundreds of CLIs. So a test session (each xdist
worker) starts one server, `python -m tests.support.warm_engine SOCKET`, that imports all that
once and then only forks. The product is not changed and does not know: cifar_tui.launch still
spawns `python -m engine.train ...` in its own session with its stdout going to the run's log
(torchrun's agent spawns its ranks as `python -u -m engine.train`; a test runs `python -m
cifar_tui ...`), and that process (tests/support/warm_site/sitecustomize.py) asks the server
for a warm start. The server forks a keeper, the keeper forks the process, which takes the
spawned process's stdin/stdout/stderr, environment, working directory, sys.path and arguments,
starts a session of its own, and runs the module as __main__ (runpy, as `-m` does): the same
code, the same events, checkpoints and exit codes. cifar_tui itself is not imported by the
server (what it sets up at import, its consoles' width, is the forked process's own). The
spawned process stays as the stand-in for its launcher (Popen.wait, signals): it passes on the
signals it gets and exits as the process does; the keeper kills the process if the stand-in
dies (SIGKILL), and the process dies with its keeper.

What a warm process differs in, and why no test can tell but on purpose: its pid is not the
launcher's child's pid (the `start` event and the store have the engine's own pid, which is
what `cifar-tui stop` and the status checks use), its /proc cmdline is the server's, its
process group holds no stand-in, and resource limits or SIGSTOP given to the spawned process
do not reach it. So the tests that do such things to the spawned process, or prove the real
start-up (the CLI's `run` end to end, tmux, the browser, a DDP stop, the SIGKILL faults, the
suite's own hygiene) are marked `cold_engine` and start as in production. torchrun's agent
always starts cold (cifar_tui.launch signals the ranks it finds as its children).

A start stays cold (the stand-in just goes on as a normal interpreter) where the warm one
could differ: an environment variable that changes what an import does (IMPORT_TIME_ENV: HF_*,
OMP_* but the thread count, LD_*, the locale...), another interpreter, a sys.path that finds
another copy of a module the server imported (another checkout's `engine`), a process of a
SLURM job (SLURM_JOB_ID: it stays in its job's cgroup, under scancel), or no server. The
summary says how many started warm and why the others did not.
"""
from __future__ import annotations

import ctypes
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOCKET_ENV = "CIFAR_TUI_SUITE_WARM_ENGINE"
COLD_START = {SOCKET_ENV: ""}  # in a spawned process's environment: that one starts cold
LOG_ENV = "CIFAR_TUI_SUITE_WARM_LOG"
SITE_DIR = Path(__file__).resolve().parent / "warm_site"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What a tiny CPU engine run imports that costs time (python -X importtime -m engine.train ...); not
# albumentations (the seed recipe's augment only): its import starts native thread pools (OpenCV,
# SciPy's BLAS), and a process that forks had best hold no threads.
PRELOAD = ("numpy", "torch", "torchvision", "timm", "psutil", "engine.trainer", "engine.data",
           "engine.after.evaluate", "engine.record.provenance", "engine.ddp", "engine.lifecycle",
           "torch.utils.tensorboard", "torch.utils.flop_counter", "tensorboard.plugins.hparams.summary_v2")

# Variables that change what an import does (read by Python, the C libraries or a package as it loads):
# a start whose value differs from the server's goes cold. Every other variable is read when the
# engine asks for it (CIFAR_TUI_*, the fault hooks, proxies, PATH...), in the fork as in a new process.
IMPORT_TIME_ENV = ("PYTHON", "HF_", "HUGGINGFACE", "TIMM_", "TORCH", "PYTORCH_", "CUBLAS", "CUDNN", "NCCL_",
                   "NVIDIA_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "GOTO", "BLIS_", "NUMEXPR_", "NUMBA_",
                   "LD_", "MALLOC_", "GLIBC_", "LC_", "LANG", "TZ", "TMP", "TEMP", "HOME", "XDG_", "PROTOCOL_BUFFERS",
                   "GRPC_", "TF_", "TENSORBOARD", "MPL", "KINETO", "CUDA_")
# ... but these are read later, or the fork takes care of them:
RUNTIME_ENV = {"PYTHON",             # no interpreter's variable: scripts/gpu-check.sh's choice of one
               "PYTHONUNBUFFERED",   # the fork makes its std streams as a new interpreter would
               "PYTHONPATH",         # what counts is which modules sys.path finds (other_modules)
               "OMP_NUM_THREADS",    # torch.set_num_threads in the fork
               "TORCH_HOME",         # torch.hub reads it when it looks for weights
               "TORCHINDUCTOR_CACHE_DIR"}  # Inductor sets it (in the launcher too) and reads it when it compiles
RUNTIME_PREFIXES = ("TORCHELASTIC_", "TORCH_NCCL_")  # torchrun's, for its ranks: read as they join the group
# Search paths where only the folders that exist count: OpenCV's import adds a lib64 folder that is
# not there to LD_LIBRARY_PATH (for its subprocesses), and every later start would go cold.
PATH_LISTS = {"LD_LIBRARY_PATH"}
# Read when CUDA starts (in the engine: the server never starts it; if it did, they count)
GPU_ENV = ("CUDA_", "CUBLAS", "CUDNN", "NCCL_", "NVIDIA_", "PYTORCH_CUDA", "PYTORCH_NVML")
PR_SET_PDEATHSIG = 1


def find_spec_on(name: str, path: list[str]):
    """How a process whose sys.path is `path` finds top-level module `name`: the meta path in order,
    the path finder on `path`, the others as they are (an editable install's finder, which
    setuptools puts after the path finder: a checkout not on sys.path is still found through it)."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = PathFinder.find_spec(name, path) if finder is PathFinder else find(name, None)
        if spec is not None:
            return spec
    return None


def other_modules(path: list[str]) -> str | None:
    """A module the server imported that `path` (a process's sys.path) finds elsewhere (None: none).
    PYTHONPATH itself may differ (a checkout root given twice): what counts is what it finds."""
    for name, module in sorted(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if "." in name or name.startswith("__") or spec is None or not spec.has_location:  # frozen, built in
            continue
        if name == "tests":  # the server's own package (it runs as tests.support.warm_engine); no engine imports it
            continue
        origin = spec.origin
        spec = find_spec_on(name, path)
        found = spec.origin if spec is not None else None
        if found != origin:
            return f"module {name} from {found} (the warm engine has {origin})"
    return None


def _existing(paths: str | None) -> list[str]:
    return [p for p in (paths or "").split(os.pathsep) if p and os.path.isdir(p)]


def env_difference(client: dict[str, str], server: dict[str, str], cuda_started: bool) -> str | None:
    """Why `client`'s environment could make a warm engine differ from a cold one (None: it cannot)."""
    for key in sorted(set(client) | set(server)):
        if (client.get(key) == server.get(key) or not key.startswith(IMPORT_TIME_ENV) or key in RUNTIME_ENV
                or key.startswith(RUNTIME_PREFIXES)):
            continue
        if key in PATH_LISTS and _existing(client.get(key)) == _existing(server.get(key)):
            continue
        if key.startswith(GPU_ENV) and not cuda_started:
            continue
        return f"{key}={client.get(key)!r} (the warm engine has {server.get(key)!r})"
    threads = client.get("OMP_NUM_THREADS")
    if threads != server.get("OMP_NUM_THREADS") and not (threads or "").strip().isdigit():
        return f"OMP_NUM_THREADS={threads!r}"
    return None


# ---------------------------------------------------------------- the engine process


def _stdio(fd: int, write: bool, errors: str, unbuffered: bool) -> io.TextIOWrapper:
    """A std stream as CPython makes it at start-up (Python/pylifecycle.c create_stdio)."""
    buffered = not (unbuffered and write)
    raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    stream = (io.BufferedWriter(raw) if write else io.BufferedReader(raw)) if buffered else raw
    line_buffering = buffered and write and (raw.isatty() or fd == 2)
    return io.TextIOWrapper(stream, encoding=sys.__stdout__.encoding if sys.__stdout__ else "utf-8", errors=errors,
                            newline="\n" if write else None, line_buffering=line_buffering, write_through=not buffered)


def _reset_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        default = {signal.SIGINT: signal.default_int_handler, signal.SIGPIPE: signal.SIG_IGN,
                   signal.SIGXFSZ: signal.SIG_IGN}.get(sig, signal.SIG_DFL)
        try:
            signal.signal(sig, default)
        except (OSError, ValueError, RuntimeError):
            pass


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def run_engine(request: dict, fds: list[int]) -> None:
    """In the forked process: become the spawned process's twin and run its module (engine.train,
    cifar_tui) as __main__."""
    code = 1
    try:
        os.setsid()
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _reset_signals()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        threads = os.environ.get("OMP_NUM_THREADS", "").strip()
        if threads.isdigit() and int(threads) > 0:
            import torch

            torch.set_num_threads(int(threads))  # the server's OpenMP read its own value when it loaded
        if "numpy" in sys.modules:  # a fresh interpreter seeds it from the OS (random reseeds itself at fork)
            sys.modules["numpy"].random.seed()
        argv = request["argv"]
        at = argv.index("-m")  # [python, interpreter flags (-u), -m, module, arguments...]
        module, args = argv[at + 1], argv[at + 2:]
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED")) or "-u" in argv[1:at] or bool(sys.flags.unbuffered)
        sys.stdin = sys.__stdin__ = _stdio(0, False, "strict", unbuffered)
        sys.stdout = sys.__stdout__ = _stdio(1, True, "strict", unbuffered)
        sys.stderr = sys.__stderr__ = _stdio(2, True, "backslashreplace", unbuffered)
        sys.path[:] = request["path"]
        sys.orig_argv[:] = argv
        sys.argv[:] = ["-m", *args]
        import runpy
        import types

        sys.modules.pop(module, None)
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            runpy._run_module_as_main(module)  # what `python -m module` runs
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except KeyboardInterrupt:
            import traceback

            traceback.print_exc()
            _finish()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # as CPython: killed by the SIGINT it did not handle
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:  # noqa: BLE001 - printed as the interpreter prints an uncaught exception
            sys.excepthook(*sys.exc_info())
            code = 1
        _finish()
    finally:
        os._exit(code)


def _finish() -> None:
    """What Py_FinalizeEx does that the engine can see: join threads, run atexit, flush."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------- the server


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def _log(line: str) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _flags, _addr = socket.recv_fds(conn, 8, 3)
    if len(header) < 8 or len(fds) != 3:
        raise OSError("a short request")
    (size,) = struct.unpack("!Q", header)
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("a short request")
        data += chunk
    return json.loads(data), fds


def keeper(conn: socket.socket, server_env: dict[str, str], cuda_started: bool) -> None:
    """One warm start: check it can be warm, fork the engine, pass signals, report its exit."""
    os.setpgid(0, 0)  # a group of its own: killing it (the suite's hygiene kills groups) spares the server
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    request, fds = _receive(conn)
    reason = (env_difference(request["env"], server_env, cuda_started)
              or (None if request["executable"] == sys.executable else f"interpreter {request['executable']}")
              or other_modules(request["path"]))
    if reason:
        for fd in fds:
            os.close(fd)
        _send(conn, {"cold": reason})
        _log(f"cold {reason}")
        return
    pid = os.fork()
    if pid == 0:
        conn.close()
        run_engine(request, fds)
    for fd in fds:
        os.close(fd)
    _log(f"warm {pid}")
    _send(conn, {"pid": pid})
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ, "client")
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ, "engine")
    buffer = b""
    while True:
        for key, _ in sel.select():
            if key.data == "engine":
                _pid, status = os.waitpid(pid, 0)
                if os.WIFSIGNALED(status):
                    _send(conn, {"killed_by": os.WTERMSIG(status)})
                else:
                    _send(conn, {"code": os.waitstatus_to_exitcode(status)})
                return
            chunk = conn.recv(4096)
            if not chunk:  # the stand-in is gone (SIGKILL): so is the engine, as it would be
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                try:
                    os.kill(pid, int(json.loads(line)["signal"]))
                except (ProcessLookupError, ValueError, KeyError):
                    pass


def serve(path: str, session_pid: int | None = None) -> None:
    """Serve warm starts on `path` until SIGTERM, or until `session_pid` (the test session that
    started it) is no longer its parent: a session killed outright (a CI timeout) leaves no server."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # bound before the imports: an early engine waits for them instead of starting cold
    server_env = dict(os.environ)
    for module in PRELOAD:
        importlib.import_module(module)
    import torch

    cuda_started = torch.cuda.is_initialized()  # importing torch and timm does not start CUDA
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    listener.settimeout(0.5)
    while not stop["now"] and (session_pid is None or os.getppid() == session_pid):
        try:
            conn, _ = listener.accept()
        except (socket.timeout, InterruptedError):
            conn = None
        while True:  # reap keepers that are done
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if conn is None:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            code = 0
            try:
                listener.close()
                keeper(conn, server_env, cuda_started)
            except BaseException:  # noqa: BLE001 - the stand-in then starts cold or exits 1
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        conn.close()
    listener.close()


# ---------------------------------------------------------------- the pytest side


class WarmEngine:
    """The server of one test session (one per xdist worker)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = str(workdir / "engine.sock")
        self.errors = workdir / "server.err"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"  # as cifar_tui.launch gives its engines
        self.env = env
        with open(self.errors, "wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "tests.support.warm_engine", self.socket,
                                             str(os.getpid())],
                                            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, env=env,
                                            cwd=str(PROJECT_ROOT), start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def site_pythonpath(current: str | None) -> str:
    return os.pathsep.join(p for p in (str(SITE_DIR), current) if p)


def summarize(log: Path) -> list[str]:
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return []
    warm = sum(1 for line in lines if line.startswith("warm "))
    cold: dict[str, int] = {}
    for line in lines:
        if line.startswith("cold "):
            cold[line[5:]] = cold.get(line[5:], 0) + 1
    out = [f"{warm} engine processes started warm, {sum(cold.values())} cold on the warm engine's refusal"]
    out += [f"  the warm engine {line}" for line in lines if line.startswith("died ")]
    out += [f"  cold x{n}: {reason}" for reason, n in sorted(cold.items(), key=lambda kv: -kv[1])]
    return out


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="cifar-tui-warm-"))


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
