"""Keys that arrive all at once (a paste, tmux send-keys, a key held down) are applied in the
order they were typed, in every field of the launch form (Pilot, in process: the keys are posted
to the App together, as the terminal driver posts them after one read). The same burst is sent by
tests/integration/test_tui_tmux.py in one tmux send-keys call to the installed app."""
from __future__ import annotations

import asyncio

from textual import events
from textual.keys import _character_to_key
from textual.widgets import Input

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.screens import LaunchScreen

from cifar_tui.workspace import Workspace

from tests.support.tui import ROOT, until_loaded, form_ready

CONFIGS = ROOT / "configs"

OVERRIDES = "data.train_limit=256 train.device=cpu"


def _typo_fixed(text: str) -> list[str]:
    """`text` typed with a slip every few words, each slip taken back with BSpace."""
    keys: list[str] = []
    for n, word in enumerate(text.split(" ")):
        if n:
            keys.append(" ")
        keys += list(word[:3]) + ["x", "y", "BSpace", "BSpace"] + list(word[3:])
    return keys


# The burst, in tmux's key names, from the form's first field (Epochs = 200, its text selected on focus).
# Tab moves on (a field reached by Tab has its text selected: typing replaces it); the selects are passed by.
BURST: list[str] = [
    "End", "BSpace", "BSpace", "BSpace", "BSpace", "4", "0",              # Epochs 200 -> 40 (the keys)
    "Tab", "6", "4", "BSpace", "BSpace", "1", "2", "8",                    # Batch 250 -> 64 -> 128
    "Tab", "End", "BSpace", "2", "Home", "Delete", "1",                     # LR 0.001 -> 0.002 -> 1.002
    "Tab", "Tab",                                                           # Device (a select), then Processes
    "2", "BSpace", "1",                                                     # Processes 1 -> 2 -> 1
    "Tab", "Tab",                                                           # Data (a select), then Overrides
    *_typo_fixed(OVERRIDES),
    *(list(" optim.weight_decay=0.05") + ["BSpace"] * 24) * 3,              # typed and taken back, three times
    "Tab", "2", "BSpace", "1",                                              # Seeds 1 -> 2 -> 1
    "Tab", "a", "b", "c", "BSpace", "BSpace", "BSpace",                     # Study: typed and taken back
]
EXPECTED = {"#f-epochs": "40", "#f-batch": "128", "#f-lr": "1.002", "#f-nproc": "1", "#f-set": OVERRIDES,
            "#f-seeds": "1", "#f-study": ""}
TMUX_TO_TEXTUAL = {"End": ("end", None), "Home": ("home", None), "BSpace": ("backspace", "\x7f"),
                   "Delete": ("delete", None), "Tab": ("tab", "\t"), "BTab": ("shift+tab", None)}


def key_event(name: str) -> events.Key:
    if name in TMUX_TO_TEXTUAL:
        return events.Key(*TMUX_TO_TEXTUAL[name])
    return events.Key(_character_to_key(name), name)


async def open_form(pilot, app) -> LaunchScreen:
    await until_loaded(pilot, app)
    from cifar_tui.tui.messages import LaunchRequested

    app.post_message(LaunchRequested(["resnet18_baseline"]))
    for _ in range(100):
        await pilot.pause(0.05)
        if form_ready(app):
            return app.screen
    raise AssertionError(f"the launch form did not open with Epochs focused: {app.screen}, {app.focused}")


def values(form: LaunchScreen) -> dict[str, str]:
    return {selector: form.query_one(selector, Input).value for selector in EXPECTED}


def test_a_burst_of_keys_lands_in_order_in_every_field_and_a_paste_keeps_its_place(tmp_path):
    assert len(BURST) >= 200
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data", configs=CONFIGS)

    async def scenario():
        app = CifarTUI(ws)
        async with app.run_test(size=(160, 45)) as pilot:
            form = await open_form(pilot, app)
            for name in BURST:  # all in the App's queue before the first is handled
                app.post_message(key_event(name))
            await pilot.pause(0.3)
            assert values(form) == EXPECTED
            assert getattr(app.focused, "id", "") == "f-study"

            # back to Overrides (its text selected), a paste over it, keys, another paste, all at once
            for event in [key_event("BTab"), key_event("BTab"),
                          events.Paste("train.epochs=1 model.backbone=test_resnet\nsecond line"),
                          *[key_event(k) for k in ["BSpace"] * 11 + list("resnet18") + [" "]],
                          events.Paste("data.source=synthetic")]:
                app.post_message(event)
            await pilot.pause(0.3)
            assert form.query_one("#f-set", Input).value == \
                "train.epochs=1 model.backbone=resnet18 data.source=synthetic"

    asyncio.run(scenario())
