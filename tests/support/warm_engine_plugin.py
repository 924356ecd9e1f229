"""Gives a test session the warm engine (tests/support/warm_engine.py): loaded by tests/conftest.py.

Each session that runs tests (the only one, or each xdist worker) starts its server before the
first test; every engine process spawned from then on starts warm unless its test is marked
`cold_engine` (or the session runs with --cold-engines). The terminal summary counts the starts.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .warm_engine import LOG_ENV, SOCKET_ENV, WarmEngine, site_pythonpath, summarize, temp_dir

_engine: WarmEngine | None = None
_log_owner: Path | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cold-engines", action="store_true", default=False,
                     help="start every engine process cold (no warm engine, tests/support/warm_engine.py)")


def _runs_tests(config: pytest.Config) -> bool:
    """False in the xdist controller (its workers run the tests)."""
    return hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)


@pytest.hookimpl(trylast=True)  # after tests/support/hygiene.py made the environment offline: the server has it
def pytest_configure(config: pytest.Config) -> None:
    global _engine, _log_owner
    if config.getoption("--cold-engines") or config.option.collectonly:
        return
    if LOG_ENV not in os.environ:  # the controller's (or the only session's): workers inherit it
        _log_owner = temp_dir()
        os.environ[LOG_ENV] = str(_log_owner / "starts.log")
    if not _runs_tests(config):
        return
    os.environ["PYTHONPATH"] = site_pythonpath(os.environ.get("PYTHONPATH"))
    workdir = temp_dir()
    os.environ[SOCKET_ENV] = str(workdir / "engine.sock")
    _engine = WarmEngine(workdir)


# Whole files that stay cold without a marker of their own (their owners edit them): the browser tests.
COLD_FILES = ("test_web",)


def starts_cold(item: pytest.Item) -> bool:
    return bool(item.get_closest_marker("cold_engine")) or item.path.name.startswith(COLD_FILES)


@pytest.fixture(autouse=True)
def _cold_engine_marker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if starts_cold(request.node):
        monkeypatch.delenv(SOCKET_ENV, raising=False)


@pytest.hookimpl(tryfirst=True)  # before tests/support/hygiene.py kills what is left
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _engine
    if _engine is not None:
        if _engine.process.poll() is not None:  # it died: every start since was cold
            with open(os.environ[LOG_ENV], "a") as log:
                tail = _engine.errors.read_text(errors="replace").strip().splitlines()[-1:]
                log.write(f"died exit {_engine.process.returncode}: {' '.join(tail)}\n")
        _engine.stop()
        shutil.rmtree(_engine.workdir, ignore_errors=True)
        _engine = None
    os.environ.pop(SOCKET_ENV, None)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _log_owner is None:
        return
    lines = summarize(_log_owner / "starts.log")
    if lines:
        terminalreporter.section("warm engine (tests/support/warm_engine.py)")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _log_owner is not None:
        shutil.rmtree(_log_owner, ignore_errors=True)
