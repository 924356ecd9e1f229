"""`make test` leaves no process behind (tests/support/hygiene.py), shown on a test session run
inside this test: its one test starts a real engine through the CLI and an orphaned daemon,
then fails on purpose. When that session ends, none of them is running."""
from __future__ import annotations

import json
import textwrap
import time

import psutil
import pytest

from tests.support.hygiene import HYGIENE_LOG_ENV
from tests.support.reliability import python_env

INNER = textwrap.dedent('''
    import json, os, subprocess, sys, time
    from pathlib import Path

    def test_starts_an_engine_and_a_daemon_then_fails(tmp_path):
        home = tmp_path / "runs"
        env = {**os.environ, "CIFAR_TUI_HOME": str(home), "CIFAR_TUI_DATA": str(tmp_path / "data"),
               "OMP_NUM_THREADS": "1"}
        # a long run; the CLI starts its engine in a session of its own
        cli = subprocess.Popen([sys.executable, "-m", "cifar_tui", "run", "resnet18_baseline", "--data", "synthetic",
                                "--device", "cpu", "--epochs", "1000", "--set", "model.backbone=test_resnet",
                                "--set", "data.train_limit=64", "--set", "data.test_limit=64"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        engine = None
        while engine is None and time.monotonic() < deadline:
            for events in home.glob("*/events.jsonl"):
                for line in events.read_text().splitlines():
                    if '"start"' in line:
                        engine = json.loads(line)["pid"]
            time.sleep(0.1)
        # a daemon: its parent exits at once, so it is nobody's child any more (but ours, the subreaper's)
        daemon = subprocess.run([sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen("
                                 "[sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True, "
                                 "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
                                capture_output=True, text=True, check=True)
        Path(os.environ["HYGIENE_PIDS"]).write_text(json.dumps(
            {"cli": cli.pid, "engine": engine, "daemon": int(daemon.stdout)}))
        assert engine is not None, "the engine did not start"
        assert False, "fails on purpose, with its processes running"
''')


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.cold_engine  # the inner session's engine is its own child, as in any session
def test_a_failing_test_leaves_no_engine_cli_or_daemon_running(pytester, tmp_path, monkeypatch):
    monkeypatch.delenv(HYGIENE_LOG_ENV, raising=False)  # the inner session is no xdist worker of ours
    pids_file = tmp_path / "pids.json"
    pytester.makepyfile(test_inner=INNER)
    env = python_env({"HYGIENE_PIDS": str(pids_file)})
    for key, value in env.items():
        pytester._monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "tests.support.hygiene", "-p", "no:cacheprovider", "-q",
                                           timeout=420)
    result.assert_outcomes(failed=1)
    pids = json.loads(pids_file.read_text())
    assert all(isinstance(pid, int) for pid in pids.values()), pids
    time.sleep(0.2)
    assert {name: pid for name, pid in pids.items() if _running(pid)} == {}, result.stdout.str()[-3000:]
    summary = result.stdout.str()
    assert "processes left running by tests, killed" in summary
    for name in ("engine", "daemon"):
        assert f"pid {pids[name]}:" in summary, summary[-3000:]
