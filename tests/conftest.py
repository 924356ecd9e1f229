"""Shared fixtures: temp workspaces, synthetic-run overrides, the installed CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Every test runs offline and leaves no process behind (tests/support/hygiene.py); the longest test files
# start first (tests/support/file_order.py); pytester runs a test session inside a test
# (tests/integration/test_suite_hygiene.py).
pytest_plugins = ["tests.support.hygiene", "tests.support.warm_engine_plugin", "tests.support.file_order", "pytester"]

# One CPU thread for each process the suite runs (engines, CLIs, the test sessions themselves), unless
# the caller chose a number: xdist workers that each run an engine with a thread per core
# oversubscribe the two cores and OpenMP's threads spin-wait for each other. Measured on the 2-core VM
# (test_tui_app, test_disk_rule, test_recipes with -n 2): 168 s and 4.8 min of user CPU with the
# default, 83 s and 1.8 min with one thread. A test that needs its own count sets it for its engine.
SUITE_THREADS_ENV = "OMP_NUM_THREADS"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(SUITE_THREADS_ENV, "1")  # before the workers start and before torch loads
    # The tests press Ctrl-C as a terminal does (SIGINT to a CLI or engine). A suite started in the
    # background of a script (`make test &`, some CI runners) inherits SIGINT ignored, and so would every
    # process it starts (an ignored signal stays ignored across exec): the CLI waiting for a slot never
    # saw its Ctrl-C. Python's own handler here makes the processes it starts begin with the default.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
CLI = [sys.executable, "-m", "cifar_tui"]

# Tiny, fast synthetic run on the CPU (a few seconds): timm's 0.4M-parameter test_resnet, a third of
# resnet18's time; a test where the model matters says model__backbone="resnet18".
TINY = ["data.source=synthetic", "data.train_limit=256", "data.test_limit=128", "train.batch_size=64",
        "train.device=cpu", "train.epochs=2", "model.backbone=test_resnet"]


def tiny_overrides(**extra: object) -> list[str]:
    out = list(TINY)
    out += [f"{k.replace('__', '.')}={v}" for k, v in extra.items()]
    return out


def set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def new_workspace(tmp_path: Path) -> dict:
    """A workspace (runs home, data root, CLI environment) under tmp_path; for module-scoped fixtures too."""
    home, data = tmp_path / "runs", tmp_path / "data"
    env = {**os.environ, "CIFAR_TUI_HOME": str(home), "CIFAR_TUI_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    env.pop("CIFAR_TUI_CONFIGS", None)
    return {"home": home, "data": data, "env": env, "tmp": tmp_path}


@pytest.fixture
def workspace(tmp_path: Path) -> dict:
    return new_workspace(tmp_path)


def cli(ws: dict, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=ws["env"], capture_output=True, text=True, timeout=timeout, cwd=ws["tmp"], **kw)
