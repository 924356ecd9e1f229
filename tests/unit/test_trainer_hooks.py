"""Trainer hooks: where other code acts in the loop (cifar-tui bench times epochs with them)."""
from __future__ import annotations

import pytest
import torch

from engine.config import load_config
from engine.record.events import read_events
from engine.hooks import TrainerHook
from engine.trainer import Trainer

from tests.conftest import CONFIGS

TINY = ["data.source=synthetic", "data.train_limit=32", "data.test_limit=16", "train.batch_size=16",
        "train.device=cpu", "train.epochs=2", "model.backbone=test_resnet"]


@pytest.fixture(autouse=True)
def _restore_determinism():
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


class Recorder(TrainerHook):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def epoch_start(self, trainer):
        self.calls.append(("epoch_start", trainer.epoch, trainer.step_in_epoch))

    def step_end(self, trainer, loss, batch_size):
        self.calls.append(("step_end", trainer.global_step, batch_size, bool(torch.isfinite(loss))))

    def epoch_trained(self, trainer, totals):
        self.calls.append(("epoch_trained", totals.epoch, totals.seen, trainer.best_epoch))

    def epoch_end(self, trainer, record):
        self.calls.append(("epoch_end", record["epoch"], record["test_acc"] is not None))


def test_hooks_are_called_in_order_with_the_epoch_totals(tmp_path):
    cfg = load_config("resnet18_baseline", TINY, CONFIGS)
    hook = Recorder()
    trainer = Trainer(cfg, run_id="hooked", home=tmp_path, data_root=tmp_path, hooks=[hook])
    trainer.prepare()
    assert trainer.run() == 0
    assert hook.calls == [
        ("epoch_start", 0, 0), ("step_end", 1, 16, True), ("step_end", 2, 16, True),
        ("epoch_trained", 1, 32, None),  # before evaluation: no best epoch yet
        ("epoch_end", 1, True),
        ("epoch_start", 1, 0), ("step_end", 3, 16, True), ("step_end", 4, 16, True),
        ("epoch_trained", 2, 32, 1), ("epoch_end", 2, True),
    ]
    epochs = [e for e in read_events(tmp_path / "hooked" / "events.jsonl") if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]


def test_a_stop_mid_epoch_ends_without_epoch_hooks(tmp_path):
    class StopAtFirstStep(Recorder):
        def step_end(self, trainer, loss, batch_size):
            super().step_end(trainer, loss, batch_size)
            trainer.stop.flag = True

    cfg = load_config("resnet18_baseline", TINY, CONFIGS)
    hook = StopAtFirstStep()
    trainer = Trainer(cfg, run_id="stopped", home=tmp_path, data_root=tmp_path, hooks=[hook])
    trainer.prepare()
    assert trainer.run() == 130
    assert hook.calls == [("epoch_start", 0, 0), ("step_end", 1, 16, True)]
    assert (tmp_path / "stopped" / "checkpoints" / "last.pt").is_file()
