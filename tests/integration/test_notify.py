"""Notifications from real engine processes (bare `python -m engine.train`, as a headless batch job
runs it) to a loopback webhook server this test runs: the payload on completion and on failure, a
desktop notification through notify-send, and a webhook server that hangs or refuses neither fails
the run nor holds the engine's exit longer than the delivery budget."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.record.events import read_events
from engine.notify import DELIVERY_BUDGET_S

from tests.support.reliability import fast, procs, python_env  # noqa: F401 - procs is a fixture
from tests.support.webhook import Hook, refused_url

FAKE_NOTIFY_SEND = """#!/bin/sh
# stands in for libnotify's notify-send: records its arguments
printf '%s\\n' "$@" > "$NOTIFY_RECORD"
"""


def _engine(home: Path, run_id: str, overrides: list[str], env: dict[str, str]) -> subprocess.Popen:
    args = [a for o in overrides for a in ("--set", o)]
    log = open(home.parent / f"{run_id}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "engine.train", "--config", "resnet18_baseline", *args,
                             "--run-id", run_id, "--home", str(home), "--data-root", str(home.parent / "data")],
                            env=python_env({"OMP_NUM_THREADS": "1", **env}), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _exit_delay(proc: subprocess.Popen, events: Path, timeout: float = 240) -> float:
    """Seconds between the run's `end` event and its process exit (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"engine {proc.pid} still running after {timeout}s"
        time.sleep(0.02)
    exited = time.time()
    end = [e for e in read_events(events) if e["type"] == "end"]
    assert end, f"no end event in {events}"
    return exited - end[-1]["t"]


@pytest.mark.timeout(300)
def test_the_engine_posts_its_end_and_a_bad_webhook_neither_fails_nor_holds_it(tmp_path, procs):
    hook = Hook()
    home = tmp_path / "runs"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "notify-send").write_text(FAKE_NOTIFY_SEND)
    (bin_dir / "notify-send").chmod(0o755)
    desktop = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DISPLAY": ":99",
               "NOTIFY_RECORD": str(tmp_path / "notify-send.txt")}
    one_epoch = fast(train__epochs=1, data__train_limit=128, data__test_limit=64)
    try:
        cases = {  # run id: (overrides, environment); all four at once
            "done": (one_epoch, {"CIFAR_TUI_NOTIFY_URL": hook.url("/ok"), **desktop}),
            "broke": (fast(), {"CIFAR_TUI_NOTIFY_URL": hook.url("/ok"), "CIFAR_TUI_TEST_OOM_AT_STEP": "3"}),
            "hung": (one_epoch, {"CIFAR_TUI_NOTIFY_URL": hook.url("/hang")}),
            "refused": (one_epoch, {"CIFAR_TUI_NOTIFY_URL": refused_url()}),
        }
        engines = {rid: procs.add(_engine(home, rid, o, env)) for rid, (o, env) in cases.items()}
        delays = {rid: _exit_delay(p, home / rid / "events.jsonl") for rid, p in engines.items()}
        codes = {rid: p.returncode for rid, p in engines.items()}
        assert codes == {"done": 0, "broke": 1, "hung": 0, "refused": 0}, {r: (home.parent / f"{r}.log").read_text()[-800:]
                                                                         for r in codes}
        # the payloads
        by_run = {p["body"]["run_id"]: p["body"] for p in hook.received("/ok")}
        assert sorted(by_run) == ["broke", "done"] and len(hook.received("/ok")) == 2  # one each
        done, broke = by_run["done"], by_run["broke"]
        assert (done["status"], done["config_name"], done["host"], done["event"]) == (
            "completed", "resnet18_baseline", socket.gethostname(), "run_end")
        assert isinstance(done["best_acc"], float) and done["epochs_done"] == done["epochs_total"] == 1
        assert done["data_source"] == "synthetic" and done["error"] is None
        assert broke["status"] == "failed" and broke["best_acc"] is None and "out of memory" in broke["error"]
        assert broke["text"].startswith(f"cifar-tui on {broke['host']}: resnet18_baseline failed: broke;")
        # the desktop notification (notify-send on PATH and a display)
        assert (tmp_path / "notify-send.txt").read_text().splitlines()[:4] == [
            "--app-name=cifar-tui", "--urgency=normal", "resnet18_baseline completed", f"done; best {done['best_acc']:.2f}%; epoch 1/1"]
        # a hanging or refusing server: the run completed, the engine waited no longer than the budget
        assert len(hook.received("/hang")) >= 1  # it was really tried
        # (an engine takes a few seconds to exit after its `end` event anyway: interpreter teardown
        # with torch loaded; the healthy-webhook runs measure that)
        healthy = max(delays["done"], delays["broke"])
        for rid in ("hung", "refused"):
            assert delays[rid] < healthy + DELIVERY_BUDGET_S + 1.5, (rid, delays)
            assert "warning: webhook" in (home.parent / f"{rid}.log").read_text()
    finally:
        hook.close()
