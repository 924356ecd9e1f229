"""Loss math against values computed by hand (math module, no torch functional)."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config import LossConfig
from engine.losses import Criterion, arcface_logits, cosface_logits, kd_loss


def test_arcface_adds_angular_margin_to_target_only():
    cos = torch.tensor([[0.5, 0.2, -0.1]], requires_grad=True)
    out = arcface_logits(cos, torch.tensor([0]), s=8.0, m=0.35)
    expected = [8 * math.cos(math.acos(0.5) + 0.35), 8 * 0.2, 8 * -0.1]
    assert out.detach().tolist()[0] == pytest.approx(expected, rel=1e-5)
    # as in the seed, the margin carries no gradient: d(out)/d(cos) = s everywhere
    out.sum().backward()
    assert cos.grad.tolist()[0] == pytest.approx([8.0, 8.0, 8.0])


def test_arcface_is_finite_at_cosine_one():
    cos = torch.tensor([[1.0, -1.0]], requires_grad=True)
    out = arcface_logits(cos, torch.tensor([0]), s=8.0, m=0.35)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(cos.grad).all()
    assert out[0, 0].item() == pytest.approx(8 * math.cos(0.35), rel=1e-5)


def test_cosface_subtracts_margin_from_target():
    cos = torch.tensor([[0.5, 0.2], [0.1, 0.9]])
    out = cosface_logits(cos, torch.tensor([0, 1]), s=8.0, m=0.35)
    assert out.tolist() == [pytest.approx([8 * 0.15, 8 * 0.2]), pytest.approx([8 * 0.1, 8 * 0.55])]


def _ce(logits, label, smoothing=0.0):
    z = sum(math.exp(v) for v in logits)
    logp = [v - math.log(z) for v in logits]
    n = len(logits)
    q = [smoothing / n + (1 - smoothing) * (1.0 if i == label else 0.0) for i in range(n)]
    return -sum(qi * lp for qi, lp in zip(q, logp))


def test_label_smoothing_cross_entropy():
    crit = Criterion(LossConfig(label_smoothing=0.1))
    loss = crit.loss(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(_ce([2.0, 0.0, -1.0], 0, 0.1), rel=1e-6)


def test_kd_loss_matches_hand_computation():
    s, t, label, T, alpha = [1.0, 0.0, 0.5], [0.0, 2.0, 0.0], 0, 4.0, 0.7

    def softmax(v):
        z = sum(math.exp(x / T) for x in v)
        return [math.exp(x / T) / z for x in v]

    ps, pt = softmax(s), softmax(t)
    kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    expected = alpha * kl * T * T + (1 - alpha) * _ce(s, label)
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([label]), T, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_margin_criterion_trains_with_margin_and_evaluates_plain_cosine():
    crit = Criterion(LossConfig(margin="arcface", s=8.0, m=0.35))
    cos = torch.tensor([[0.5, 0.6]])
    assert crit.eval_logits(cos).tolist()[0] == pytest.approx([4.0, 4.8])
    train = crit.train_logits(cos, torch.tensor([0]))
    assert train[0, 0].item() < 4.0 and train[0, 1].item() == pytest.approx(4.8)
