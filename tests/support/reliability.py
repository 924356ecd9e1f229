"""Helpers shared by the fault suite (tests/integration/test_faults.py, tests/integration/test_reliability_inputs.py).

The figures each test injects and checks are summed here and stored in pytest's cache
(`.pytest_cache/v/cifar_tui/reliability_figures`), so docs/RELIABILITY.md can quote
the numbers of the last run: `python -m tests.support.reliability` prints them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE_KEY = "cifar_tui/reliability_figures"
FIGURES: Counter = Counter()

# Tiny and fast: timm's 0.4M-parameter test_resnet on 256 synthetic images, on the CPU.
FAST = ["model.backbone=test_resnet", "data.source=synthetic", "data.train_limit=256", "data.test_limit=128",
        "train.batch_size=64", "train.device=cpu", "train.epochs=2"]


def fast(**extra: object) -> list[str]:
    """FAST plus overrides given as train__epochs=3 (later keys win)."""
    out = list(FAST)
    out += [f"{k.replace('__', '.')}={v}" for k, v in extra.items()]
    return out


def record(request: pytest.FixtureRequest, **counts: int) -> None:
    FIGURES.update(counts)
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        cache.set(CACHE_KEY, dict(sorted(FIGURES.items())))


class Tally(Counter):
    """The figures of one test, counted where the fault is done or the check is made, never typed
    in: `tally.kill9(proc)`, `with tally.refused(ConfigError, match=...)`, `tally.rows(n)`. A test
    ends with `tally.record(request)`, so only a test that passed adds to docs/RELIABILITY.md."""

    def kill9(self, proc: subprocess.Popen) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        self.update(faults_injected=1, sigkills=1)

    def fault(self, **kinds: int) -> None:
        """Faults just injected, by kind (`tally.fault(damaged_files=2)`)."""
        self.update(faults_injected=sum(kinds.values()), **kinds)

    def rows(self, n: int) -> int:
        """`n` store rows (or run listings) were just compared exactly."""
        self["rows_checked"] += n
        return n

    @contextmanager
    def refused(self, exc: type[BaseException] | tuple, match: str | None = None, key: str = "inputs_refused"):
        with pytest.raises(exc, match=match) as info:
            yield info
        self[key] += 1

    def record(self, request: pytest.FixtureRequest) -> None:
        record(request, **{k: v for k, v in self.items() if v})


@pytest.fixture
def tally() -> Tally:
    return Tally()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


class Processes:
    """Every process a test starts (or learns the pid of) is SIGKILLed at teardown if still alive."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen] = []
        self.pids: list[int] = []

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.popens.append(proc)
        return proc

    def add_pid(self, pid: int) -> int:
        self.pids.append(pid)
        return pid

    def cleanup(self) -> None:
        for proc in self.popens:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def procs() -> Iterable[Processes]:
    p = Processes()
    yield p
    p.cleanup()


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def case_env(base: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI call whose workspace (runs/, data/) is under base."""
    env = {**os.environ, "CIFAR_TUI_HOME": str(base / "runs"), "CIFAR_TUI_DATA": str(base / "data"),
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("CIFAR_TUI_CONFIGS", None)
    env.update(extra or {})
    return env


def drive(runs: list[tuple[Path, list[str]]], timeout: float = 120.0, parallel: int = 4,
          preload: tuple[str, ...] = (), env: dict[str, str] | None = None) -> list[dict]:
    """(folder, args) through the real CLI entry point, one process per case, forked by
    tests/support/cli_fork_driver.py (a fresh interpreter per case costs ~1 s on a loaded machine).
    Each result: code, stdout, stderr, timed_out."""
    specs = []
    for base, args in runs:
        base.mkdir(parents=True, exist_ok=True)
        specs.append({"args": list(args), "cwd": str(base), "env": case_env(base, env)})
    proc = subprocess.run([sys.executable, "-m", "tests.support.cli_fork_driver"], capture_output=True, text=True, cwd=ROOT,
                          input=json.dumps({"cases": specs, "timeout": timeout, "parallel": parallel, "preload": list(preload)}),
                          env=case_env(ROOT), timeout=timeout * 3 + 5 * len(specs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def main() -> None:  # `python -m tests.support.reliability`: the last run's figures
    path = ROOT / ".pytest_cache" / "v" / CACHE_KEY
    if not path.is_file():
        sys.exit("no figures yet: run `python -m pytest tests/integration/test_faults.py tests/integration/test_reliability_inputs.py`")
    print(json.dumps(json.loads(path.read_text()), indent=2))


if __name__ == "__main__":
    main()
