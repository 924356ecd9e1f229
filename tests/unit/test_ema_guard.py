"""Weight EMA update math and state; the divergence guard; early stopping."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine.config import EmaConfig, load_config
from engine.ema import WeightEma, better_of
from engine.guard import DivergenceGuard, EarlyStopping, chance_loss


def model_with_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def nudge(model: nn.Module, k: int) -> None:
    """A stand-in for an optimizer step that also moves the BatchNorm statistics."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * (k + 1))
    model.train()
    model(torch.randn(8, 3, generator=torch.Generator().manual_seed(k)))


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_update_math(warmup):
    decay = 0.9
    model = model_with_bn()
    ema = WeightEma(model, EmaConfig(decay=decay, warmup=warmup))
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    for step in range(1, 7):
        nudge(model, step)
        ema.step(model, step)
        d = 0.0 if step == 1 else (min(decay, 1 - step ** (-2 / 3)) if warmup else decay)  # timm: n = step - 1
        assert ema.decay(step) == pytest.approx(d)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v.double()
            else:
                expected[k] = v.clone().double()  # num_batches_tracked is copied
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v.double(), expected[k], atol=1e-6), k
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_every_n_steps_and_resume_state():
    model = model_with_bn()
    ema = WeightEma(model, EmaConfig(decay=0.5, warmup=False, every=2))
    for step in range(1, 6):
        nudge(model, step)
        ema.step(model, step)
    assert ema.updates == 2  # steps 2 and 4
    state = ema.state_dict()
    resumed = WeightEma(model_with_bn(), EmaConfig(decay=0.5, warmup=False, every=2))
    resumed.load_state_dict(state)
    for step in range(6, 9):  # the same updates after a resume
        nudge(model, step)
        ema.step(model, step)
        resumed.step(model, step)
    for a, b in zip(ema.module.state_dict().values(), resumed.module.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.updates == ema.updates == 4


def test_better_of():
    assert better_of(50.0, 51.0) == (51.0, "ema")
    assert better_of(50.0, 49.0) == (50.0, "model")
    assert better_of(50.0, None) == (50.0, "model")


# ---------------------------------------------------------------------------------------


def test_guard_records_the_first_bad_step():
    guard = DivergenceGuard(limit=46.0, device=torch.device("cpu"))
    for step, loss in enumerate([4.6, 4.2, 3.9], start=1):
        guard.observe(torch.tensor(loss), step)
    assert guard.check() is None
    guard.observe(torch.tensor(2e10), 4)
    guard.observe(torch.tensor(float("nan")), 5)
    found = guard.check()
    assert found.step == 4 and found.loss == 2e10  # the first, not the latest
    msg = found.message(steps_per_epoch=3, lr=1e6)
    assert msg.startswith("training diverged: the loss reached 2e+10 at step 4 (epoch 2, step 1 of 3)")
    assert "--set optim.lr=100000" in msg and "lower learning rate" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_guard_non_finite_loss(bad):
    guard = DivergenceGuard(limit=46.0, device=torch.device("cpu"))
    guard.observe(torch.tensor(bad, dtype=torch.bfloat16), 7)
    found = guard.check()
    assert found.step == 7
    assert ("NaN" if math.isnan(bad) else "infinite") in found.message(100, 0.1)
    guard.reset()
    assert guard.check() is None


def test_chance_loss_leaves_room_for_margins_and_distillation():
    base = load_config("resnet18_baseline")
    assert chance_loss(base, 100) == pytest.approx(math.log(100))
    arc = load_config("resnet18_pretrained_arcface")
    assert chance_loss(arc, 100) > math.log(100) + 8


def test_early_stopping():
    stop = EarlyStopping(patience=2, min_delta=0.5)
    assert stop.update(1, 10.0) is None
    assert stop.update(2, 10.4) is None  # not better by more than 0.5: stale 1
    assert stop.update(3, 11.0) is None  # better: stale 0
    state = stop.state_dict()
    assert stop.update(4, 11.2) is None
    reason = stop.update(5, 9.0)
    assert reason == ("early stop: test accuracy has not improved by more than 0.5 points for 2 evaluations "
                      "(best 11.00% at epoch 3)")
    resumed = EarlyStopping(patience=2, min_delta=0.5)
    resumed.load_state_dict(state)
    assert resumed.update(4, 11.2) is None and resumed.update(5, 9.0) == reason
