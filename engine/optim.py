"""Optimizers from an explicit registry, with the parameter groups that say which parameters
get no weight decay (``optim.no_decay``).

Rules (NO_DECAY_RULES):
``none``
    Every parameter decays: one group, torch's default (and the layout of every checkpoint
    written before the rule existed).
``bias``
    Otter's rule (``BaseMixin.get_optimizer_params``), which the seed trained with: a parameter
    whose name contains ``bias`` or ``LayerNorm.weight`` gets weight decay 0.  (Hugging Face
    names LayerNorm weights so; timm models do not, so for them it is "names containing bias".)
    Groups in Otter's order: decayed, then not decayed.
``bias_norm``
    timm's rule (``timm.optim.param_groups_weight_decay``, used by its train script): 1-D tensors
    (biases, normalisation weights) and names ending in ``.bias`` get weight decay 0, and so do
    the names a timm backbone lists in ``no_weight_decay()``.  Groups in timm's order.

Each group carries its parameters' names (torch stores them as ``param_names`` in the
optimizer's state_dict), so a checkpoint shows which parameters were decayed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .checkpoint import CheckpointError
from .config import OptimConfig
from .fast import optimizer_kwargs

ParamGroup = dict  # {"params": [(name, tensor), ...], "weight_decay": float}

OTTER_NO_DECAY = ("bias", "LayerNorm.weight")


def _groups_none(model: nn.Module, weight_decay: float) -> list[ParamGroup]:
    return [{"params": list(model.named_parameters()), "weight_decay": weight_decay}]


def _groups_bias(model: nn.Module, weight_decay: float) -> list[ParamGroup]:
    named = list(model.named_parameters())
    return [
        {"params": [(n, p) for n, p in named if not any(nd in n for nd in OTTER_NO_DECAY)], "weight_decay": weight_decay},
        {"params": [(n, p) for n, p in named if any(nd in n for nd in OTTER_NO_DECAY)], "weight_decay": 0.0},
    ]


def _groups_bias_norm(model: nn.Module, weight_decay: float) -> list[ParamGroup]:
    from timm.optim import param_groups_weight_decay

    skip: set[str] = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed) and prefix:  # a timm backbone inside our Classifier: names relative to it
            skip |= {f"{prefix}.{n}" for n in listed()}
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=sorted(skip))
    return [{**g, "params": [(names[id(p)], p) for p in g["params"]]} for g in groups]


NO_DECAY_RULES: dict[str, Callable[[nn.Module, float], list[ParamGroup]]] = {
    "none": _groups_none, "bias": _groups_bias, "bias_norm": _groups_bias_norm,
}


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[ParamGroup]:
    """The model's parameters grouped by cfg.no_decay; empty groups are left out."""
    return [g for g in NO_DECAY_RULES[cfg.no_decay](model, cfg.weight_decay) if g["params"]]


def _adamw(groups, cfg: OptimConfig, **fast) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **fast)


def _sgd(groups, cfg: OptimConfig, **fast) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov and cfg.momentum > 0, **fast)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adamw": _adamw, "sgd": _sgd}


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device | None = None) -> torch.optim.Optimizer:
    """On CUDA the fused implementations (engine/fast.py: one kernel for the whole update); their
    state_dict is the same as the others', so a checkpoint resumes on either device."""
    fast = optimizer_kwargs(device) if device is not None else {}
    return OPTIMIZERS[cfg.name](param_groups(model, cfg), cfg, **fast)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, cfg: OptimConfig, path: Path) -> None:
    """Load a checkpoint's optimizer state; a layout that does not fit (a run started before
    optim.no_decay existed, then resumed with another rule) is one clear error, not a traceback."""
    saved = [len(g.get("params", [])) for g in state.get("param_groups", [])]
    wanted = [len(g["params"]) for g in optimizer.param_groups]
    if saved != wanted:
        raise CheckpointError(
            f"{path}: the checkpoint's optimizer has {len(saved)} parameter group{'s' if len(saved) != 1 else ''} of {saved} tensors, but "
            f"optim.no_decay: {cfg.no_decay} makes {len(wanted)} of {wanted}; this run was started with another "
            f"weight-decay rule (runs from before optim.no_decay existed used 'none'): set optim.no_decay in the "
            f"run's config.yaml back to what it started with, or start a new run")
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the optimizer state does not fit this model and optimizer "
                              f"({str(exc).splitlines()[0][:160]}); start a new run") from None
