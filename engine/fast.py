"""The fast GPU path's choices, in one place: the autocast dtype, fused optimizers, the
torch.compile mode, CUDA graph step marks and cuDNN autotuning. Each is a plain function of
(config, device, DDP or not), so the trainer and `scripts/gpu-check.sh` make the same choice.

- Fused AdamW/SGD (one kernel for the whole update) on CUDA; foreach elsewhere.
- ``train.compile_mode: auto`` picks ``reduce-overhead`` (Inductor + CUDA graphs: the step's
  kernels replay without launch overhead) on one GPU, ``max-autotune-no-cudagraphs`` under DDP
  (NCCL all-reduces between graph segments do not mix with CUDA graphs), and no compilation on the
  CPU: our compiled recipes are GPU recipes, and an Inductor build takes minutes on a small CPU for
  little gain (``compile_mode: default`` compiles there anyway). An explicit CUDA-graph mode is refused where graphs cannot be used.
- With CUDA graphs, the outputs of one replay are overwritten by the next: the trainer marks each
  step's start (:func:`mark_step`) and keeps nothing from a forward past the next one.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .config import ConfigError

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.precision` on `device` (None: fp32), the same for training and evaluation."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def optimizer_kwargs(device: torch.device) -> dict[str, Any]:
    """Extra keyword arguments for torch.optim.AdamW/SGD on this device."""
    return {"fused": True} if torch.device(device).type == "cuda" else {}


def compile_mode(requested: str, device: torch.device, distributed: bool) -> Optional[str]:
    """The torch.compile mode for ``train.compile_mode`` on this device (None: do not compile)."""
    device = torch.device(device)
    if requested == "auto":
        if device.type != "cuda":
            return None
        return "max-autotune-no-cudagraphs" if distributed else "reduce-overhead"
    if requested in CUDA_GRAPH_MODES and (device.type != "cuda" or distributed):
        where = "with several processes (DDP)" if device.type == "cuda" else f"on {device.type}"
        raise ConfigError(f"train.compile_mode: {requested} uses CUDA graphs, which cannot be used {where}; "
                          f"use auto, default or max-autotune-no-cudagraphs")
    return requested


def uses_cuda_graphs(mode: Optional[str]) -> bool:
    return mode in CUDA_GRAPH_MODES


def compile_module(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    return torch.compile(module, mode=mode)


def mark_step(mode: Optional[str]) -> None:
    """Before each training forward when CUDA graphs replay: a new step begins (outputs of the
    previous replay may be overwritten from here on)."""
    if uses_cuda_graphs(mode):
        torch.compiler.cudagraph_mark_step_begin()


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning for the fixed batch shapes of a run (GPU only)."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


__all__ = ["compile_mode", "compile_module", "configure_backends", "mark_step", "optimizer_kwargs",
           "uses_cuda_graphs"]
