"""SAM / ASAM: one step against the two-pass step worked out by hand on a tiny model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.sam import SAM, frozen_batchnorm_stats


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)


def by_hand(model: nn.Module, x, y, *, lr: float, rho: float, adaptive: bool, clip: float | None = None):
    """w' = w - lr * g(w + e), e = rho * T^2 g(w) / ||T g(w)||, T = |w| (ASAM) or 1 (SAM); plain SGD."""
    w = [p.detach().clone() for p in model.parameters()]

    def grads_at(weights):
        params = [t.clone().requires_grad_(True) for t in weights]
        h = torch.tanh(F.linear(x, params[0], params[1]))
        loss = F.cross_entropy(F.linear(h, params[2], params[3]), y)
        return torch.autograd.grad(loss, params)

    g = grads_at(w)
    t = [wi.abs() if adaptive else torch.ones_like(wi) for wi in w]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g)))
    e = [rho * ti * ti * gi / norm for ti, gi in zip(t, g)]
    g2 = grads_at([wi + ei for wi, ei in zip(w, e)])
    if clip is not None:
        total = torch.sqrt(sum((gi ** 2).sum() for gi in g2))
        g2 = [gi * min(1.0, clip / (total.item() + 1e-6)) for gi in g2]
    return [wi - lr * gi for wi, gi in zip(w, g2)]


def sam_step(model, x, y, *, lr, rho, adaptive, clip=None, scaler=None):
    sam = SAM(torch.optim.SGD(model.parameters(), lr=lr), rho=rho, adaptive=adaptive)

    def forward_backward():
        loss = F.cross_entropy(model(x), y)
        (scaler.scale(loss) if scaler else loss).backward()
        return loss.detach()

    first_loss = sam.step(forward_backward, scaler=scaler, grad_clip=clip, model=model)
    return first_loss, [p.detach() for p in model.parameters()]


@pytest.mark.parametrize("adaptive", [False, True], ids=["SAM", "ASAM"])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_sam_step_is_the_two_pass_step(adaptive, clip):
    x, y = batch()
    model = tiny_model()
    expected = by_hand(model, x, y, lr=0.5, rho=0.3, adaptive=adaptive, clip=clip)
    loss_at_w = F.cross_entropy(model(x), y).detach()
    first_loss, got = sam_step(model, x, y, lr=0.5, rho=0.3, adaptive=adaptive, clip=clip)
    assert torch.allclose(first_loss, loss_at_w)  # the step reports the loss at w, not at w + e
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    plain = tiny_model()  # and it is not plain SGD
    torch.optim.SGD(plain.parameters(), lr=0.5).zero_grad()
    F.cross_entropy(plain(x), y).backward()
    with torch.no_grad():
        sgd = [p - 0.5 * p.grad for p in plain.parameters()]
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(got, sgd))


def test_grad_scaler_gives_the_same_step():
    """The perturbation is computed from scaled gradients (it does not depend on their scale);
    the update is unscaled by the scaler."""
    x, y = batch()
    _, unscaled = sam_step(tiny_model(), x, y, lr=0.5, rho=0.3, adaptive=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    _, scaled = sam_step(tiny_model(), x, y, lr=0.5, rho=0.3, adaptive=False, scaler=scaler)
    for a, b in zip(scaled, unscaled):
        assert torch.allclose(a, b, atol=1e-6)


def test_overflow_in_the_first_pass_means_no_perturbation_and_a_skipped_step():
    x, y = batch()
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.5), rho=0.3)

    def forward_backward():
        loss = F.cross_entropy(model(x), y) * float("inf")  # an fp16-style overflow
        scaler.scale(loss).backward()
        return loss

    sam.step(forward_backward, scaler=scaler, model=model)
    for a, b in zip(model.parameters(), before):
        assert torch.equal(a, b)  # restored exactly, and the scaler skipped the step
    assert scaler.get_scale() < 2.0 ** 12


def test_weights_are_restored_exactly_before_the_base_step():
    model = tiny_model()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=1e3)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    sam.perturb()
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    sam.restore()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_second_pass_leaves_batchnorm_running_stats_alone():
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(bn, nn.Linear(4, 3))
    x, y = batch()
    with frozen_batchnorm_stats(model):
        model(x * 5 + 3)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and bn.momentum == 0.1
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)

    def forward_backward():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    sam.step(forward_backward, model=model)
    expected = 0.1 * x.mean(0)  # one update (pass 1), from zero
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)


def test_sam_keeps_the_base_optimizers_state_for_schedulers_and_checkpoints():
    model = tiny_model()
    base = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sam = SAM(base, rho=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(base, lambda s: 0.5)
    assert sam.param_groups is base.param_groups and sam.param_groups[0]["lr"] == 5e-4
    x, y = batch()

    def forward_backward():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    sam.step(forward_backward)
    sched.step()
    state = sam.state_dict()
    assert state["state"] and torch.is_tensor(state["state"][0]["exp_avg"])
