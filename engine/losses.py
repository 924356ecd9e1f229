"""Losses: cross-entropy (+ label smoothing), ArcFace / CosFace margins, knowledge distillation.

Margins act on the target class's cosine logit during training only; evaluation
uses the plain cosine logits (scaled by s, which does not change the argmax).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """s * cos(theta + m) on the target, s * cos(theta) elsewhere.

    As in the seed (and insightface), the margin is added without gradient: the
    backward pass sees s * cosine, so the gradient never goes through arccos (which
    is infinite at +-1).
    """
    with torch.no_grad():
        target = cosine.gather(1, labels[:, None]).float().clamp(-1.0, 1.0)
        delta = torch.cos(torch.acos(target) + m) - target
    return (cosine + torch.zeros_like(cosine).scatter_(1, labels[:, None], delta.to(cosine.dtype))) * s


def cosface_logits(cosine: torch.Tensor, labels: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """s * (cos(theta) - m) on the target, s * cos(theta) elsewhere."""
    return (cosine - m * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)) * s


MARGINS = {"arcface": arcface_logits, "cosface": cosface_logits}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * KL(p_t^T || p_s^T) * T^2 + (1 - alpha) * CE(y, p_s)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * kl * (t * t) + (1.0 - alpha) * ce


class Criterion:
    """Turns model outputs into training logits, evaluation logits and the loss."""

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg
        self.margin = MARGINS.get(cfg.margin)

    def train_logits(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.margin is None:
            return output
        return self.margin(output, labels, self.cfg.s, self.cfg.m)

    def eval_logits(self, output: torch.Tensor) -> torch.Tensor:
        return output if self.margin is None else output * self.cfg.s

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        if teacher_logits is not None and self.cfg.kd is not None:
            return kd_loss(logits, teacher_logits.float(), labels, self.cfg.kd.temperature, self.cfg.kd.alpha,
                           self.cfg.label_smoothing)
        return F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)

    def eval_loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.eval_logits(output).float(), labels, reduction="sum")
