"""The launch form's starting values and its time line (Pilot, in process): the data choice is
remembered (the last one made in the app, else the newest run's), synthetic with a word why
when CIFAR-100 is not on disk, and the run's time from earlier runs here (or unknown)."""
from __future__ import annotations

import asyncio
import os

from textual.widgets import Select, Static

from cifar_tui.workspace import Workspace
from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.messages import LaunchRequested
from cifar_tui.tui.screens import LaunchScreen
from engine.config import load_config
from engine.record.leases import Leases
from engine.record.store import Store

from tests.support.tui import ROOT, fake_workspace, until_form, until_loaded

CONFIGS = ROOT / "configs"


async def open_form(pilot, app, name: str = "resnet18_baseline") -> LaunchScreen:
    app.post_message(LaunchRequested([name]))
    form = await until_form(pilot, app)
    await pilot.pause(0.4)  # the time line follows the fields (PLAN_DELAY_S)
    return form


def text(form: LaunchScreen, selector: str) -> str:
    return " ".join(str(form.query_one(selector, Static).render()).split())


def test_the_form_remembers_the_last_data_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "off")
    ws, _ = fake_workspace(tmp_path)  # its newest run is a synthetic one
    (ws.data_root / "cifar-100-python").mkdir(parents=True)  # CIFAR-100 is here: nothing forces synthetic
    store = Store(ws.home)
    try:  # a slot held by another live launcher (this test's process): the launch below stays queued
        Leases(store.conn).acquire("other-run-20260101T000000Z-0000", gpus=[], n=0, max_parallel=None,
                                   pid=os.getpid())
    finally:
        store.close()

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=(160, 45)) as pilot:
            await until_loaded(pilot, app)
            form = await open_form(pilot, app)
            assert form.query_one("#f-data", Select).value == "synthetic"  # as the newest run
            assert text(form, "#data-hint") == ""
            form.query_one("#f-data", Select).value = "cifar100"
            await pilot.pause(0.1)
            await pilot.press("ctrl+s")
            for _ in range(100):
                await pilot.pause(0.05)
                if not isinstance(app.screen, LaunchScreen):
                    break
            assert [q["config"] for q in app.index.queue] == ["resnet18_baseline"]  # queued, not started
            form = await open_form(pilot, app, "resnet18_baseline_wd01")
            assert form.query_one("#f-data", Select).value == "cifar100"  # the last choice, not the newest run's

    asyncio.run(scenario())


def test_without_cifar100_the_form_starts_on_synthetic_and_shows_the_time_from_earlier_runs_here(tmp_path,
                                                                                                 monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "off")
    monkeypatch.setenv("CIFAR_TUI_GPUS", "")
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data", configs=CONFIGS)
    store = Store(ws.home)
    try:  # an earlier run of resnet18 at 32x32 on this machine's CPU: 2,000 + 500 images in 30 s an epoch
        cfg = load_config("resnet18_baseline", ["data.train_limit=2000", "data.test_limit=500"], CONFIGS)
        store.run_started("resnet18_baseline-20260101T000000Z-aaaa", config=cfg.to_dict(), device="cpu", pid=1,
                          run_dir=str(ws.home / "x"), epochs_total=3, params=None, flops=None)
        for n in (1, 2, 3):
            store.epoch_done("resnet18_baseline-20260101T000000Z-aaaa", {"epoch": n, "epoch_s": 30.0, "test_acc": 5.0},
                             30.0 * n)
    finally:
        store.close()

    async def scenario():
        app = CifarTUI(ws)
        async with app.run_test(size=(160, 45)) as pilot:
            await until_loaded(pilot, app)
            form = await open_form(pilot, app)
            assert form.query_one("#f-data", Select).value == "synthetic"  # the config says cifar100
            assert "Synthetic data: CIFAR-100 is not in" in text(form, "#data-hint")
            assert "cifar-tui data download" in text(form, "#data-hint")
            assert "data.source=synthetic" in form.overrides()
            # 200 epochs x (50,000 + 10,000/3) images at 30 s / (2,000 + 500/3) images: 41.03 h
            assert text(form, "#estimate") == (
                "Time: about 41 h on cpu (from 1 earlier run of resnet18 at 32x32 on cpu here) · fewer epochs "
                "or data.train_limit make it shorter")
            form.query_one("#f-epochs").value = "2"
            await pilot.pause(0.5)
            assert text(form, "#estimate").startswith("Time: about 25 min on cpu")
            form.query_one("#f-set").value = "data.train_limit=2000 data.test_limit=500"  # 2 x 2,166.7 images
            await pilot.pause(0.5)
            assert text(form, "#estimate") == "Time: about 1 min on cpu (from 1 earlier run of resnet18 at 32x32 on " \
                                              "cpu here)"
            form.query_one("#f-set").value = "model.backbone=resnet50"
            await pilot.pause(0.5)
            assert text(form, "#estimate") == "Time: unknown (no earlier run of resnet50 at 32x32 on cpu here)"

    asyncio.run(scenario())


def test_once_the_form_is_mounted_the_focus_a_person_moves_stays_where_they_put_it(tmp_path, monkeypatch):
    """The form gives its first field the focus while it mounts, not a moment later: a field focused
    (a Tab, a click) as soon as the form is there keeps the focus. With a deferred focus() in on_mount,
    the focus went back to Epochs after the first keys had moved it (they then landed in Epochs)."""
    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "off")
    ws, _ = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=(160, 45)) as pilot:
            await until_loaded(pilot, app)
            app.post_message(LaunchRequested(["resnet18_baseline"]))
            for _ in range(20000):  # each turn of the loop, not pilot.pause (that waits for the app's queue)
                if isinstance(app.screen, LaunchScreen) and app.screen.is_mounted:
                    break
                await asyncio.sleep(0)
            form = app.screen
            assert isinstance(form, LaunchScreen) and form.is_mounted
            field = form.query_one("#f-set")
            form.set_focus(field)
            await pilot.pause(0.3)
            assert app.focused is field, app.focused

    asyncio.run(scenario())
