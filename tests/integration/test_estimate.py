"""The estimate's probe for real, from the launch form: a child process trains a few steps of the
config (test_resnet on the CPU) while the form stays responsive, its rate is cached per machine,
and the next estimate reads the cache without measuring."""
from __future__ import annotations

import pytest

from cifar_tui.estimate import PROBE, Estimator, ProbeCache, speed_key
from engine.config import load_config


@pytest.mark.timeout(120)
def test_the_launch_form_measures_without_blocking_and_kills_a_probe_it_no_longer_needs(tmp_path, monkeypatch):
    """No earlier run here: the form starts a probe (a child process) and stays responsive; another
    model asked meanwhile kills the first probe and measures the new one; the result is shown;
    closing the form kills a probe still running."""
    import asyncio

    from textual.widgets import Input, Static

    from cifar_tui.workspace import Workspace
    from cifar_tui.tui.app import CifarTUI
    from cifar_tui.tui.messages import LaunchRequested
    from cifar_tui.tui.screens import LaunchScreen
    from engine.record.status import pid_alive
    from tests.support.tui import ROOT, until_loaded

    monkeypatch.setenv("CIFAR_TUI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "on")  # the suite turns it off (tests/support/hygiene.py)
    monkeypatch.setenv("CIFAR_TUI_GPUS", "")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data", configs=ROOT / "configs")

    def line(form) -> str:
        return " ".join(str(form.query_one("#estimate", Static).render()).split())

    async def scenario():
        app = CifarTUI(ws)
        async with app.run_test(size=(160, 45)) as pilot:
            await until_loaded(pilot, app)
            app.post_message(LaunchRequested(["resnet18_baseline"]))
            for _ in range(100):
                await pilot.pause(0.05)
                if isinstance(app.screen, LaunchScreen) and line(app.screen).startswith("Time: measuring"):
                    break
            form = app.screen
            assert "a short probe of resnet18 at 32x32 on cpu" in line(form)
            first = form.query_one("#estimate").probe.process
            form.query_one("#f-set", Input).value = "model.backbone=test_resnet"
            for _ in range(600):  # the event loop turns meanwhile: the probe is another process
                await pilot.pause(0.1)
                if "measured" in line(form):
                    break
            assert first.poll() is not None  # killed: its model is no longer asked for
            assert line(form).startswith("Time: about ") and \
                "(measured: a short probe of test_resnet at 32x32 on cpu)" in line(form), line(form)
            tiny = load_config("resnet18_baseline", ["model.backbone=test_resnet", "train.device=cpu"])
            assert ProbeCache().get(speed_key(tiny, "cpu")) > 0  # cached for this machine
            again = Estimator(app.store, gpus=[])
            assert not again.needs_probe(tiny) and again.estimate(tiny).basis == PROBE
            form.query_one("#f-set", Input).value = "model.backbone=test_resnet data.image_size=48"
            for _ in range(50):
                await pilot.pause(0.05)
                if form.query_one("#estimate").probe is not None:
                    break
            running = form.query_one("#estimate").probe.process
            await pilot.press("escape")
            await pilot.pause(0.3)
            running.wait(timeout=10)
            assert not pid_alive(running.pid)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_cifar_tui_run_says_the_time_of_a_run_over_an_hour_before_it_starts(tmp_path):
    """`cifar-tui run` of a run that earlier runs here say takes hours prints the estimate first.
    The run waits for a (simulated) GPU that this test holds, and Ctrl-C cancels it: nothing trains."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from engine.record.leases import Leases
    from engine.record.store import Store
    from tests.support.tui import ROOT

    home = tmp_path / "runs"
    store = Store(home)
    try:
        # an earlier test_resnet run on this machine's CPU: 64 images an epoch in 600 s (a slow machine)
        slow = load_config("resnet18_baseline", ["model.backbone=test_resnet", "data.train_limit=64",
                                                 "data.test_limit=0", "eval.every=1000"], ROOT / "configs")
        store.run_started("resnet18_baseline-20260101T000000Z-aaaa", config=slow.to_dict(), device="cpu", pid=1,
                          run_dir=str(home / "x"), epochs_total=2, params=None, flops=None)
        for n in (1, 2):
            store.epoch_done("resnet18_baseline-20260101T000000Z-aaaa", {"epoch": n, "epoch_s": 600.0}, 600.0 * n)
        Leases(store.conn).acquire("holder-20260101T000000Z-0000", gpus=["0"], n=1, max_parallel=None,
                                   pid=os.getpid())
    finally:
        store.close()
    # PYTHONFAULTHANDLER: a CLI that does not exit after Ctrl-C is aborted and says where it was
    env = dict(os.environ, CIFAR_TUI_GPUS="0", COLUMNS="200", PYTHONFAULTHANDLER="1")
    cli = subprocess.Popen([str(Path(sys.executable).parent / "cifar-tui"), "--home", str(home), "--data-root",
                            str(tmp_path / "data"), "run", "resnet18_baseline", "--set", "model.backbone=test_resnet",
                            "--set", "data.train_limit=640", "--data", "synthetic", "--device", "cpu",
                            "--epochs", "10"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                           start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = cli.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("waiting for a slot"):
                break
        # 10 epochs x (640 train + 10,000 / 3 test) images at 600 s / 64 images: 372,500 s
        assert lines[0] == ("estimate: resnet18_baseline takes about 4 d 7 h on cpu (from 1 earlier run of test_resnet "
                            "at 32x32 on cpu here)"), lines
        assert lines[1].startswith("waiting for a slot: needs 1 GPU, 0 free"), lines
    finally:
        os.killpg(cli.pid, signal.SIGINT)
        try:
            cli.wait(timeout=30)
        except subprocess.TimeoutExpired:
            signals = [line for line in Path(f"/proc/{cli.pid}/status").read_text().splitlines() if line.startswith("Sig")]
            cli.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            rest = cli.communicate(timeout=10)[0]
            pytest.fail(f"the CLI waiting for a slot did not exit within 30 s of Ctrl-C ({signals}); it was at:\n{rest}")
    assert cli.returncode == 130
