"""Unit tests of the TUI's plain logic."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from cifar_tui.launch import Workspace
from cifar_tui.tui.support import (MAX_STEP_POINTS, LogTail, RunState, config_diff, flatten, fmt_eta, matches_filter,
                                   parse_override_text, pane_id_for, short_run)
from engine.config import load_config

from tests.support.tui import DEAD_PID, ROOT, fake_run, fake_workspace  # noqa: F401


def test_flatten_and_diff_only_differing_keys():
    a = {"train": {"epochs": 2, "lr": 0.1}, "model": {"backbone": "resnet18"}, "description": "x"}
    b = {"train": {"epochs": 5, "lr": 0.1}, "model": {"backbone": "resnet18", "stem": "cifar"}, "description": "y"}
    assert flatten(a) == {"train.epochs": 2, "train.lr": 0.1, "model.backbone": "resnet18", "description": "x"}
    assert config_diff([a, b]) == [("model.stem", [None, "cifar"]), ("train.epochs", [2, 5])]
    assert config_diff([a, a]) == []


def test_filter_and_overrides_text():
    assert matches_filter("base 18", "resnet18_baseline", "resnet18")
    assert not matches_filter("arcface", "resnet18_baseline", "linear/ce")
    assert matches_filter("", "anything")
    assert parse_override_text("--set a.b=1 c.d='x y' --set=e=2") == ["a.b=1", "c.d=x y", "e=2"]
    with pytest.raises(ValueError):
        parse_override_text("a.b='unclosed")


def test_names_and_ids():
    assert short_run("resnet18_baseline-20260101T000000Z-00a1") == "resnet18_baseline·00a1"
    assert pane_id_for("a.b-c") == "run-a_b-c"
    assert fmt_eta(75) == "01:15" and fmt_eta(3725) == "1:02:05" and fmt_eta(None) == "--:--"


def test_run_state_folds_events_incrementally(tmp_path):
    rid = fake_run(tmp_path, "resnet18_baseline", "0001", epochs=3, done=2, status=None)
    events = [json.loads(x) for x in (tmp_path / rid / "events.jsonl").read_text().splitlines()]
    st = RunState(rid)
    st.apply(events[:5])
    assert st.status == "running" and st.epochs_total == 3 and st.steps_per_epoch == 4
    assert st.current_epoch == 1 and st.step["step"] == 4 and not st.epochs
    st.apply(events[5:])
    assert sorted(st.epochs) == [1, 2] and st.best_epoch == 2 and st.current_epoch == 3
    epoch_left, run_left = st.eta()
    assert epoch_left is None or epoch_left >= 0
    assert run_left == pytest.approx(8.0)  # one epoch left at 8 s each
    st.apply([{"type": "end", "status": "stopped", "best_acc": 1.0, "best_epoch": 2}])
    assert st.status == "stopped" and st.best_acc == 1.0


def test_run_state_bounds_step_points_and_keeps_the_curves_shape():
    """20,000 steps keep at most MAX_STEP_POINTS points, but no fewer than half of that: every k-th
    step from the first to (nearly) the last, evenly spaced, each with its own loss and accuracy."""
    n, spe = 20000, 100000
    st = RunState("x")
    st.apply([{"type": "step", "epoch": 1, "step": i, "steps_per_epoch": spe, "loss": 5.0 - i / n, "acc": i / 100}
              for i in range(n)])
    xs = [p[0] for p in st.step_points]
    assert MAX_STEP_POINTS // 2 <= len(xs) <= MAX_STEP_POINTS, len(xs)
    steps = [round(x * spe) for x in xs]
    stride = steps[1] - steps[0]
    assert steps[0] == 0 and steps == list(range(0, steps[-1] + 1, stride)), steps[:5]  # every stride-th step
    assert steps[-1] > n - 1 - stride  # up to the last one
    for step, (_, loss, acc) in zip(steps, st.step_points):
        assert loss == pytest.approx(5.0 - step / n) and acc == pytest.approx(step / 100)


def test_log_tail_reads_last_lines_incrementally(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    tail = LogTail(log, initial_bytes=100)
    first = tail.poll()
    assert first[-1] == "line 4999" and len(first) < 20
    with open(log, "a") as f:
        f.write("progress 1\rprogress 2\nhalf")
    assert tail.poll() == ["progress 2"]
    with open(log, "a") as f:
        f.write(" line\n")
    assert tail.poll() == ["half line"]
