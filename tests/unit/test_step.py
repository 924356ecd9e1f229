"""engine/step.py: one optimization step, plain or SAM, with class or mixed (soft) targets; and the
distillation teacher's rule for mixed targets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoint import save_checkpoint
from engine.config import ConfigError, KDConfig, LossConfig, SamConfig, load_config
from engine.losses import Criterion
from engine.models import build_model
from engine.step import TrainStep, hard_labels
from engine.teacher import Teacher

from tests.conftest import CONFIGS


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5))


def batch(soft: bool = False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 6, generator=g)
    y = torch.randint(0, 5, (12,), generator=g)
    if soft:  # a MixUp-style target: each image's label mixed with its flipped partner's
        lam = torch.rand(12, 1, generator=g)
        one_hot = F.one_hot(y, 5).float()
        return x, lam * one_hot + (1 - lam) * one_hot.flip(0)
    return x, y


def make_step(model: nn.Module, smoothing: float = 0.0, clip: float | None = 1.0, sam: SamConfig | None = None):
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(model=model, forward=model, optimizer=opt, scaler=scaler,
                     criterion=Criterion(LossConfig(label_smoothing=smoothing)), amp_dtype=None,
                     device=torch.device("cpu"), grad_clip=clip, sam=sam)
    return step, opt


@pytest.mark.parametrize("soft", [False, True], ids=["labels", "mixed"])
def test_plain_step_is_forward_loss_backward_clip_step(soft):
    x, y = batch(soft)
    smoothing = 0.1
    model, reference = tiny(), tiny()
    step, _ = make_step(model, smoothing=smoothing)
    loss, correct = step.step(x, y)

    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    logits = reference(x)
    # timm's mixup_target(smoothing) + SoftTargetCrossEntropy: (1 - s) * target + s / classes
    target = F.one_hot(y, 5).float() if not soft else y
    target = target * (1 - smoothing) + smoothing / 5
    ref_loss = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    ref_loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    ref_opt.step()

    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert int(correct) == int((logits.argmax(1) == hard_labels(y)).sum())  # mixed: the larger share counts
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


def test_sam_step_takes_the_two_pass_route():
    x, y = batch()
    plain, sharp = tiny(), tiny()
    make_step(plain, clip=None)[0].step(x, y)
    step, _ = make_step(sharp, clip=None, sam=SamConfig(rho=0.5))
    loss, _ = step.step(x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(tiny()(x), y).item(), rel=1e-6)  # the loss at w
    assert any(not torch.allclose(a, b) for a, b in zip(plain.parameters(), sharp.parameters()))


def test_distillation_with_mixed_targets():
    """KD + MixUp: the KL term on the mixed images, cross-entropy on the mixed targets."""
    x, y = batch(soft=True)
    student, teacher = torch.randn(12, 5), torch.randn(12, 5)
    crit = Criterion(LossConfig(kd=KDConfig(teacher="t", temperature=4.0, alpha=0.7)))
    got = crit.loss(student, y, teacher)
    kl = F.kl_div(F.log_softmax(student / 4, 1), F.softmax(teacher / 4, 1), reduction="batchmean")
    ce = torch.sum(-y * F.log_softmax(student, 1), 1).mean()
    assert got.item() == pytest.approx((0.7 * kl * 16 + 0.3 * ce).item(), rel=1e-5)


def _teacher_run(tmp_path, name: str):
    cfg = load_config(name, ["model.pretrained=false", "data.source=synthetic"], configs_dir=CONFIGS)
    run_dir = tmp_path / f"{name}-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    save_checkpoint({"run_id": run_dir.name, "config": cfg.to_dict(), "model": build_model(cfg.model).state_dict(),
                     "epoch": 1, "best_acc": 1.0}, run_dir / "checkpoints" / "best.pt")
    return run_dir


def test_a_margin_teacher_is_refused_with_mixed_targets(tmp_path):
    margin = _teacher_run(tmp_path, "resnet18_pretrained_arcface")
    with pytest.raises(ConfigError, match="loss.kd.teacher: .*arcface.*data.mixup"):
        Teacher(margin, torch.device("cpu"), channels_last=False, mixed_targets=True)
    Teacher(margin, torch.device("cpu"), channels_last=False, mixed_targets=False)  # as before without mixup
    linear = _teacher_run(tmp_path, "resnet18_baseline")
    teacher = Teacher(linear, torch.device("cpu"), channels_last=False, mixed_targets=True)
    x, y = torch.randn(4, 3, 32, 32), torch.softmax(torch.randn(4, 100), 1)
    assert teacher.logits(x, y).shape == (4, 100)
