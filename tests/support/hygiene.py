"""What keeps `make test` off the network and stops it leaving processes behind. Loaded for
every test by tests/conftest.py (`pytest_plugins`), so that a new test cannot forget it.

Network. Before any test module is imported, the environment that every test and every
process it starts inherits says "offline":
  * HF_HUB_OFFLINE=1: the Hugging Face hub client refuses at once, and so does the engine's
    pretrained-weights lookup (engine/models.py), which then never probes the network;
  * HF_HOME and TORCH_HOME point at an empty folder of this session: no weights the user
    happens to have cached, so every machine sees the same thing; so does CIFAR_TUI_CACHE (the
    run-time estimate's probe cache, cifar_tui/estimate.py), and CIFAR_TUI_ESTIMATE_PROBE=off:
    an estimate comes from the test's own history, never from a probe that trains for seconds
    (the tests of the probe turn it on);
  * http(s)_proxy and all_proxy point at a closed loopback port, with loopback in no_proxy:
    urllib (torch.hub, the data download, webhooks), requests, httpx and selenium reach
    loopback servers and nothing else.
In the pytest process itself, a socket connection or a name lookup for anything but this
machine fails at once (`NetworkBlocked`).

Processes. The pytest process is made a child subreaper (Linux prctl), so a process whose
parent died (an engine whose CLI timed out, a killed TUI's run, a double-forked tmux or web
server) is re-parented to it instead of to init, and stays findable. After every test, every
process started while the test ran (its call phase) that is still alive is killed with its
process group, pass or fail; at the end of the session, everything left. Processes that
pytest itself forks (multiprocessing, DataLoader workers) belong to in-process objects and
are left to them. The terminal summary names what had to be killed.

Under pytest-xdist each worker is such a session of its own (subreaper of what its tests start,
killing per test and at its end); the controller is a subreaper too, so what outlives a worker
comes to it, and it kills that at its end. Workers report their kills to the controller through
a file (HYGIENE_LOG_ENV), so the one summary names them all.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

CLOSED_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens there
LOOPBACK_NAMES = "localhost,127.0.0.1,::1"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
PR_SET_CHILD_SUBREAPER = 36

_offline_home: Path | None = None
_real = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex, "getaddrinfo": socket.getaddrinfo}
_killed: list[tuple[str, list[str]]] = []  # (test id or "session end", what was killed)
_CALL_KEY = pytest.StashKey[set]()
HYGIENE_LOG_ENV = "CIFAR_TUI_SUITE_HYGIENE_LOG"  # where xdist workers write what they killed
TERMINAL_SIZE_ENV = "CIFAR_TUI_SUITE_TERMINAL_SIZE"  # the controller's COLUMNS and LINES, for its workers
_log_owner: Path | None = None


# ---------------------------------------------------------------- the network


class NetworkBlocked(OSError):
    """A test tried to reach beyond this machine."""


def offline_environment(home: Path) -> dict[str, str]:
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"),
           "TORCH_HOME": str(home / "torch"), "NO_ALBUMENTATIONS_UPDATE": "1",
           "CIFAR_TUI_CACHE": str(home / "cache"), "CIFAR_TUI_ESTIMATE_PROBE": "off",
           "no_proxy": LOOPBACK_NAMES, "NO_PROXY": LOOPBACK_NAMES}
    env.update({var: CLOSED_PROXY for var in PROXY_VARS})
    return env


def _local_names() -> set[str]:
    return {"localhost", "", socket.gethostname()}


def _is_local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in _local_names() or host.endswith(".localhost")
    return address.is_loopback or address.is_unspecified


def _check(family: int, address: object) -> None:
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and not _is_local(address[0]):
        raise NetworkBlocked(errno.ENETUNREACH, f"network access blocked by the test suite: {address[0]}")


def _connect(self: socket.socket, address):  # noqa: ANN001 - socket's signature
    _check(self.family, address)
    return _real["connect"](self, address)


def _connect_ex(self: socket.socket, address):  # noqa: ANN001
    _check(self.family, address)
    return _real["connect_ex"](self, address)


def _is_address(host: object) -> bool:
    try:
        ipaddress.ip_address((host.decode() if isinstance(host, bytes) else str(host)).split("%", 1)[0])
        return True
    except ValueError:
        return False


def _getaddrinfo(host, *args, **kwargs):  # noqa: ANN001 - a numeric address needs no lookup: connect() judges it
    if not _is_address(host) and not _is_local(host):
        raise socket.gaierror(socket.EAI_NONAME, f"name lookup blocked by the test suite: {host}")
    return _real["getaddrinfo"](host, *args, **kwargs)


def block_network() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo


def unblock_network() -> None:
    socket.socket.connect = _real["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = _real["connect_ex"]  # type: ignore[method-assign]
    socket.getaddrinfo = _real["getaddrinfo"]


# ---------------------------------------------------------------- processes


def become_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _in_process_helper(proc: psutil.Process, me: psutil.Process) -> bool:
    """A process pytest forked for an in-process object (multiprocessing, a DataLoader worker)."""
    try:
        if proc.ppid() != me.pid:
            return False
        cmdline = proc.cmdline()
        return cmdline == me.cmdline() or any("multiprocessing" in part for part in cmdline)
    except psutil.Error:
        return False


def descendants() -> set[psutil.Process]:
    """Every live process below this one (orphans included: we are their subreaper), except the
    in-process helpers and their children."""
    me = psutil.Process()
    try:
        children = me.children(recursive=True)
    except psutil.Error:
        return set()
    helpers = {p for p in children if _in_process_helper(p, me)}
    skip = set(helpers)
    for helper in helpers:
        try:
            skip.update(helper.children(recursive=True))
        except psutil.Error:
            pass
    alive = set()
    for proc in children:
        if proc in skip:
            continue
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.add(proc)
        except psutil.Error:
            pass
    return alive


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def kill_with_groups(procs: set[psutil.Process]) -> list[str]:
    """SIGKILL each process's group (its own session or group), or the process alone when it
    shares ours; then reap the ones that were our children. Returns what was killed."""
    killed, own_group = [], os.getpgrp()
    for proc in sorted(procs, key=lambda p: p.pid):
        description = _describe(proc)
        try:
            group = os.getpgid(proc.pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
        except (PermissionError, psutil.AccessDenied):
            pass
        killed.append(description)
    psutil.wait_procs(list(procs), timeout=10)
    reap_zombies({p.pid for p in procs})
    return killed


def reap_zombies(pids: set[int] | None = None) -> None:
    """waitpid our zombie children (all of them, or those in `pids`)."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        if pids is not None and child.pid not in pids:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError, OSError):
            pass


# ---------------------------------------------------------------- pytest hooks


def _record(where: str, what: list[str]) -> None:
    _killed.append((where, what))
    log = os.environ.get(HYGIENE_LOG_ENV)
    if log and _log_owner is None:  # a worker: tell the controller
        with open(log, "a") as f:
            f.writelines(f"{where}\t{line}\n" for line in what)


def pytest_configure(config: pytest.Config) -> None:
    global _offline_home, _log_owner
    if HYGIENE_LOG_ENV not in os.environ and getattr(config.option, "numprocesses", None):
        _log_owner = Path(tempfile.mkdtemp(prefix="cifar-tui-tests-hygiene-"))  # the xdist controller
        os.environ[HYGIENE_LOG_ENV] = str(_log_owner / "killed.log")
        # xdist's workers start with COLUMNS=80 LINES=24, which every CLI a test runs would then obey
        os.environ[TERMINAL_SIZE_ENV] = json.dumps({k: os.environ.get(k) for k in ("COLUMNS", "LINES")})
    if hasattr(config, "workerinput") and TERMINAL_SIZE_ENV in os.environ:
        for key, value in json.loads(os.environ[TERMINAL_SIZE_ENV]).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _offline_home = Path(tempfile.mkdtemp(prefix="cifar-tui-tests-offline-"))
    os.environ.update(offline_environment(_offline_home))
    if "huggingface_hub" in sys.modules:  # imported before us: its constants are read at import
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    block_network()
    become_subreaper()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = descendants()
    if left:
        _record("session end", kill_with_groups(left))
    reap_zombies()


def pytest_unconfigure(config: pytest.Config) -> None:
    unblock_network()
    if _offline_home is not None:
        shutil.rmtree(_offline_home, ignore_errors=True)
    if _log_owner is not None:
        shutil.rmtree(_log_owner, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    item.stash[_CALL_KEY] = descendants()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield
    before = item.stash.get(_CALL_KEY, None)
    if before is None:  # setup failed: the call never ran
        return
    left = descendants() - before
    if left:
        _record(item.nodeid, kill_with_groups(left))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _log_owner is not None and (_log_owner / "killed.log").exists():
        for line in (_log_owner / "killed.log").read_text().splitlines():
            where, _, what = line.partition("\t")
            _killed.append((where, [what]))
    if not _killed:
        return
    terminalreporter.section("processes left running by tests, killed")
    for where, what in _killed:
        for line in what:
            terminalreporter.write_line(f"{where}: {line}")
