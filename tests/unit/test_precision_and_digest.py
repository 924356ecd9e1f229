"""Mixed precision and the final-weights digest, with the real Trainer in this process on tiny data:
bf16 autocast really runs on the CPU; an fp16 run's GradScaler state goes into the checkpoint
and comes back on resume, which then ends bit for bit where an uninterrupted run ends; and the
`end` event's `weights_sha256` is the digest of the weights the run ended with."""
from __future__ import annotations

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.ddp import weights_sha256
from engine.record.events import read_events
from engine.hooks import TrainerHook
from engine.trainer import Trainer

from tests.conftest import CONFIGS

TINY = ["data.source=synthetic", "data.train_limit=64", "data.test_limit=16", "train.batch_size=16",
        "train.device=cpu", "train.epochs=2", "model.backbone=test_resnet", "data.shuffle=true",
        "data.augment=crop_flip", "train.keep=best+last"]


@pytest.fixture(autouse=True)
def _restore_determinism():
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


class StopAtStep(TrainerHook):
    def __init__(self, step: int) -> None:
        self.step = step

    def step_end(self, trainer, loss, batch_size):
        if trainer.global_step == self.step:
            trainer.stop.flag = True


def trainer(tmp_path, run_id: str, *extra: str, resume: bool = False, hooks=()) -> Trainer:
    cfg = load_config("resnet18_baseline", [*TINY, *extra], CONFIGS)
    t = Trainer(cfg, run_id=run_id, home=tmp_path, data_root=tmp_path, resume=resume, hooks=hooks)
    t.prepare()
    return t


def end_of(tmp_path, run_id: str) -> dict:
    end = read_events(tmp_path / run_id / "events.jsonl")[-1]
    assert end["type"] == "end"
    return end


def test_bf16_autocast_runs_the_training_forward_in_bfloat16_on_the_cpu(tmp_path):
    t = trainer(tmp_path, "bf16", "train.precision=bf16", "train.epochs=1")
    seen: list[torch.dtype] = []
    t.model.backbone.register_forward_hook(lambda m, i, out: seen.append(out.dtype) if m.training else None)
    assert t.run() == 0
    assert seen and set(seen) == {torch.bfloat16}, seen  # every training forward, not only the first
    assert not t.scaler.is_enabled()  # bf16 needs no loss scaling
    end = end_of(tmp_path, "bf16")
    assert end["status"] == "completed" and end["best_acc"] is not None
    assert weights_sha256(load_checkpoint(tmp_path / "bf16" / "checkpoints" / "last.pt")["model"]) == end["weights_sha256"][0]


def test_fp16_grad_scaler_state_is_checkpointed_and_restored_and_the_resume_is_exact(tmp_path):
    fresh = torch.amp.GradScaler("cpu").state_dict()
    stopped = trainer(tmp_path, "fp16", "train.precision=fp16", hooks=[StopAtStep(6)])  # 4 steps an epoch
    assert stopped.scaler.is_enabled()
    assert stopped.run() == 130
    saved = load_checkpoint(tmp_path / "fp16" / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 2)
    assert saved["scaler"] == stopped.scaler.state_dict() and saved["scaler"] != fresh  # it moved (overflows, growth)

    resumed = trainer(tmp_path, "fp16", "train.precision=fp16", resume=True)
    assert resumed.scaler.state_dict() == saved["scaler"]
    assert resumed.run() == 0

    whole = trainer(tmp_path, "fp16-whole", "train.precision=fp16")
    assert whole.run() == 0
    a, b = end_of(tmp_path, "fp16"), end_of(tmp_path, "fp16-whole")
    assert a["status"] == b["status"] == "completed"
    assert a["weights_sha256"] == b["weights_sha256"], "the resumed fp16 run ended with other weights"
    assert resumed.scaler.state_dict() == whole.scaler.state_dict()


def test_the_end_events_digest_is_that_of_the_final_weights(tmp_path):
    t = trainer(tmp_path, "digest", "train.epochs=1")
    assert t.run() == 0
    end = end_of(tmp_path, "digest")
    final = t.model.state_dict()
    assert end["weights_sha256"] == [weights_sha256(final)]
    last = load_checkpoint(tmp_path / "digest" / "checkpoints" / "last.pt")["model"]
    assert weights_sha256(last) == weights_sha256(final)
    # the digest sees a one-ulp change, and not the memory format
    key = next(k for k, v in final.items() if v.is_floating_point() and v.dim() == 4)
    nudged = dict(final, **{key: final[key].clone()})
    nudged[key][0, 0, 0, 0] = torch.nextafter(nudged[key][0, 0, 0, 0], torch.tensor(float("inf")))
    assert weights_sha256(nudged) != weights_sha256(final)
    assert final[key].is_contiguous(memory_format=torch.channels_last)  # train.channels_last
    assert weights_sha256(dict(final, **{key: final[key].contiguous()})) == weights_sha256(final)
