"""The installed `cifar-tui` in a real terminal (tmux): open, launch a run with keys, read the
screen with capture-pane, quit. Under CI=true a missing tmux is a failure, not a skip."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.store import Store, pid_alive

EXE = Path(sys.executable).parent / "cifar-tui"


def require_tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("tmux is required under CI=true (.ci/run installs it with apt-get)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    return tmux


class Tmux:
    def __init__(self, tmux: str, socket: str):
        self.base = [tmux, "-L", socket]

    def __call__(self, *args: str) -> str:
        # COLUMNS/LINES (set by some pytest plugins) would override the pane's real size
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run([*self.base, *args], check=True, capture_output=True, text=True, timeout=30,
                              env=env).stdout

    def keys(self, *keys: str, literal: bool = False, pause: float = 0.3) -> None:
        for key in keys:
            self("send-keys", "-t", "tui", *(["-l"] if literal else []), key)
            time.sleep(pause)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "tui")

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on screen after {timeout}s; screen:\n{screen}")


@pytest.mark.cold_engine  # the installed program in a terminal, start-up and its engine's included
@pytest.mark.timeout(600)
def test_installed_cifar_tui_in_tmux(tmp_path):
    tmux_bin = require_tmux()
    assert EXE.exists(), f"console script not installed at {EXE}"
    home, data = tmp_path / "runs", tmp_path / "data"
    tmux = Tmux(tmux_bin, f"cifar-tui-test-{os.getpid()}")
    command = (f"cd {shlex.quote(str(tmp_path))} && env -u COLUMNS -u LINES {shlex.quote(str(EXE))} --home {shlex.quote(str(home))} "
               f"--data-root {shlex.quote(str(data))}; echo EXITED-$?; exec sleep 600")
    tmux("new-session", "-d", "-s", "tui", "-x", "160", "-y", "45", command)
    pane_pid = int(tmux("display-message", "-p", "-t", "tui", "#{pane_pid}").strip())  # the shell, then the sleep
    try:
        # the first screen's time is `cifar-tui bench`'s figure (docs/BENCHMARKS.md), not a bound on a shared CPU
        screen = tmux.wait_for("resnet18_baseline", 60)
        assert "Experiments" in screen and "Leaderboard" in screen and str(home) in screen

        # filter, back to the list, open the launch form, set overrides, launch
        tmux.keys("/")
        tmux.keys("resnet18_baseline", literal=True)
        tmux.keys("Enter", "l")
        tmux.wait_for("Launch resnet18_baseline", 60)
        tmux.keys("Tab", "Tab", "Tab", "Tab", "Tab", "Tab")  # epochs -> batch -> lr -> device -> processes -> data -> overrides
        tmux.keys("train.epochs=1 train.batch_size=64 data.source=synthetic train.device=cpu "
                  "data.train_limit=256 data.test_limit=128", literal=True)
        tmux.keys("Enter")
        screen = tmux.wait_for("resnet18_baseline·", 60)  # the run's tab opened

        # the run view fills in and the run completes
        screen = tmux.wait_for("completed", 300)
        assert "synthetic" in screen and "epoch 1/1" in screen
        assert "train loss" in screen and "test acc" in screen  # the epoch table
        store = Store(home)
        rows = store.runs()
        store.close()
        assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["data_source"] == "synthetic"
        assert rows[0]["run_id"][-4:] in screen

        # quit: nothing is running any more, so the app exits at once
        tmux.keys("q")
        tmux.wait_for("EXITED-0", 15)
        # the engine, past its end event, still closes its files; then it exits by itself
        deadline = time.monotonic() + 30
        while pid_alive(rows[0]["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(rows[0]["pid"]), "the engine did not exit after its run completed"
    finally:
        subprocess.run([*tmux.base, "kill-server"], capture_output=True)
        deadline = time.monotonic() + 10  # the pane's process dies of the hang-up; the test leaves nothing
        while pid_alive(pane_pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def field_text(screen: str, label: str) -> str:
    """What the launch form's field on the row labelled `label` shows (between its borders)."""
    for line in screen.splitlines():
        if f" {label} " in line and "▊" in line:
            return line.split("▊", 1)[1].split("▎", 1)[0].strip()
    raise AssertionError(f"no field {label!r} on screen:\n{screen}")


FORM_FIELDS = ("Epochs", "Batch size", "Learning rate", "Processes", "Overrides")


def fields(screen: str) -> dict[str, str]:
    return {label: field_text(screen, label) for label in FORM_FIELDS}


def settled(tmux: Tmux, done, timeout: float = 20.0) -> str:
    """The screen once the app has handled the keys sent (`done(fields)`), or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        screen = tmux.screen()
        if done(fields(screen)) or time.monotonic() > deadline:
            return screen
        time.sleep(0.2)


@pytest.mark.timeout(120)
def test_keys_sent_at_once_land_in_order_in_the_installed_app(tmp_path):
    """200 keys in ONE send-keys call, over every field of the launch form, then a bracketed paste
    between keys: nothing lost, nothing out of order (Textual resolved bound keys after typed ones)."""
    from tests.unit.test_tui_keys import BURST, OVERRIDES

    tmux_bin = require_tmux()
    tmux = Tmux(tmux_bin, f"cifar-tui-keys-{os.getpid()}")
    command = (f"cd {shlex.quote(str(tmp_path))} && env -u COLUMNS -u LINES CIFAR_TUI_ESTIMATE_PROBE=off "
               f"{shlex.quote(str(EXE))} --home {shlex.quote(str(tmp_path / 'runs'))} "
               f"--data-root {shlex.quote(str(tmp_path / 'data'))}; echo EXITED-$?; exec sleep 600")
    tmux("new-session", "-d", "-s", "tui", "-x", "160", "-y", "45", command)
    pane_pid = int(tmux("display-message", "-p", "-t", "tui", "#{pane_pid}").strip())
    try:
        tmux.wait_for("resnet18_baseline", 30)
        tmux.keys("/")
        tmux.keys("resnet18_baseline", literal=True)
        tmux.keys("Enter", "l")
        tmux.wait_for("Launch resnet18_baseline", 20)
        time.sleep(0.5)  # the form has taken the focus (Epochs, its text selected)
        tmux("send-keys", "-t", "tui", *["Space" if k == " " else k for k in BURST])
        expected = {"Epochs": "40", "Batch size": "128", "Learning rate": "1.002", "Processes": "1",
                    "Overrides": OVERRIDES}
        screen = settled(tmux, lambda shown: shown["Overrides"] == OVERRIDES)
        assert fields(screen) == expected, screen
        assert field_text(screen, "Seeds / study") == "1", screen

        # back to Overrides (its text selected), a bracketed paste over it, then keys: one tmux call
        tmux("set-buffer", "-b", "paste", "train.epochs=1 model.backbone=test_resnet", ";",
             "send-keys", "-t", "tui", "BTab", "BTab", ";", "paste-buffer", "-p", "-d", "-b", "paste", "-t", "tui", ";",
             "send-keys", "-t", "tui", *["BSpace"] * 11, *"resnet18")
        screen = settled(tmux, lambda shown: shown["Overrides"].endswith("resnet18"))
        assert field_text(screen, "Overrides") == "train.epochs=1 model.backbone=resnet18", screen

        tmux.keys("Escape", "q")
        tmux.wait_for("EXITED-0", 15)
    finally:
        subprocess.run([*tmux.base, "kill-server"], capture_output=True)
        deadline = time.monotonic() + 10
        while pid_alive(pane_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
