"""The test-only fault hooks (engine/fault_hooks.py): named CIFAR_TUI_TEST_*, listed in
docs/RELIABILITY.md, validated, and harmless when misset: one warning line, then ignored."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from cifar_tui.serve_sessions import HEARTBEAT_ENV
from engine import fault_hooks
from engine.config import load_config
from engine.events import read_events
from engine.trainer import Trainer

from tests.conftest import CONFIGS, ROOT

TINY = ["data.source=synthetic", "data.train_limit=32", "data.test_limit=16", "train.batch_size=16",
        "train.device=cpu", "train.epochs=1", "model.backbone=test_resnet"]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(fault_hooks, "_reported", set())
    for var in fault_hooks.HOOKS:
        monkeypatch.delenv(var, raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning: CIFAR_TUI_TEST_")]


@pytest.mark.parametrize("value", ["x", "0", "-3", "2.5", "1e3"])
def test_a_misset_oom_step_is_one_warning_and_ignored(monkeypatch, capsys, value):
    monkeypatch.setenv(fault_hooks.OOM_AT_STEP, value)
    assert fault_hooks.oom_at_step() is None
    assert fault_hooks.oom_at_step() is None  # asked again: still one line
    (line,) = warnings_in(capsys.readouterr().err)
    assert line == f"warning: CIFAR_TUI_TEST_OOM_AT_STEP={value!r} ignored: expected a global step number >= 1"


@pytest.mark.parametrize("var", [fault_hooks.SLOW_CHECKPOINT, fault_hooks.PAUSE_IN_CHECKPOINT_WRITE])
@pytest.mark.parametrize("value", ["abc", "best.pt:", "best.pt:-1", "nan", "inf", "../x/last.pt:3"])
def test_a_misset_pause_is_one_warning_and_ignored(monkeypatch, capsys, var, value):
    monkeypatch.setenv(var, value)
    assert fault_hooks.pause(var) is None
    (line,) = warnings_in(capsys.readouterr().err)
    assert line.startswith(f"warning: {var}={value!r} ignored: expected [FILE:]SECONDS")


def test_well_set_hooks_are_read(monkeypatch, capsys):
    monkeypatch.setenv(fault_hooks.OOM_AT_STEP, "6")
    monkeypatch.setenv(fault_hooks.SLOW_CHECKPOINT, "best.pt:30")
    monkeypatch.setenv(fault_hooks.PAUSE_IN_CHECKPOINT_WRITE, "2.5")
    assert fault_hooks.oom_at_step() == 6
    slow = fault_hooks.pause(fault_hooks.SLOW_CHECKPOINT)
    assert slow == fault_hooks.Pause("best.pt", 30.0) and slow.applies_to(Path("x/best.pt"))
    assert not slow.applies_to(Path("x/last.pt"))
    anywhere = fault_hooks.pause(fault_hooks.PAUSE_IN_CHECKPOINT_WRITE)
    assert anywhere == fault_hooks.Pause(None, 2.5) and anywhere.applies_to(Path("last.pt"))
    assert capsys.readouterr().err == ""


def test_an_unknown_test_hook_is_named_at_engine_start(monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_TUI_TEST_OOM_AT_STEPS", "3")  # a typo: it would silently do nothing
    monkeypatch.setenv(fault_hooks.OOM_AT_STEP, "x")
    fault_hooks.check_environment()
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 2
    assert any(line.startswith("warning: CIFAR_TUI_TEST_OOM_AT_STEP='x' ignored") for line in lines)
    assert any(line.startswith("warning: CIFAR_TUI_TEST_OOM_AT_STEPS='3' ignored: expected one of the test hooks")
               for line in lines)
    fault_hooks.check_environment(report=False)  # the other ranks under torchrun: silent
    assert capsys.readouterr().err == ""


def test_a_run_with_misset_hooks_trains_as_if_they_were_unset(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(fault_hooks.OOM_AT_STEP, "x")
    monkeypatch.setenv(fault_hooks.SLOW_CHECKPOINT, "last.pt:soon")
    monkeypatch.setenv(fault_hooks.PAUSE_IN_CHECKPOINT_WRITE, "forever")
    trainer = Trainer(load_config("resnet18_baseline", TINY, CONFIGS), run_id="misset", home=tmp_path, data_root=tmp_path)
    trainer.prepare()
    assert trainer.run() == 0
    assert read_events(tmp_path / "misset" / "events.jsonl")[-1]["status"] == "completed"
    lines = warnings_in(capsys.readouterr().err)
    assert sorted(line.split("=")[0] for line in lines) == sorted(f"warning: {v}" for v in fault_hooks.HOOKS)


def test_every_hook_is_listed_in_the_reliability_doc():
    doc = (ROOT / "docs" / "RELIABILITY.md").read_text()
    section = doc.split("## Test-only hooks", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(CIFAR_TUI_TEST_[A-Z_]+)", section))
    # the engine's hooks, and the one the web server reads (never passed on to an engine)
    assert listed == set(fault_hooks.HOOKS) | {HEARTBEAT_ENV}
    engine_sources = "\n".join(p.read_text() for p in (ROOT / "engine").rglob("*.py"))
    assert set(re.findall(r"CIFAR_TUI_TEST_[A-Z_]+", engine_sources)) <= set(fault_hooks.HOOKS) | {"CIFAR_TUI_TEST_"}
    assert "CIFAR_TUI_DUMP" not in engine_sources
