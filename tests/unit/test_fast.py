"""The fast GPU path's choices (fused optimizers, compile mode) as functions of device and DDP."""
from __future__ import annotations

import pytest
import torch

from engine import fast
from engine.config import ConfigError

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize("requested, device, ddp, expected", [
    ("auto", GPU, False, "reduce-overhead"),            # CUDA graphs on one GPU
    ("auto", GPU, True, "max-autotune-no-cudagraphs"),  # no graphs with NCCL between segments
    ("auto", CPU, False, None),                         # no Inductor build on a CPU unless asked
    ("max-autotune-no-cudagraphs", GPU, True, "max-autotune-no-cudagraphs"),
    ("default", CPU, True, "default"),
    ("reduce-overhead", GPU, False, "reduce-overhead"),
])
def test_compile_mode(requested, device, ddp, expected):
    assert fast.compile_mode(requested, device, ddp) == expected


@pytest.mark.parametrize("device, ddp, where", [(CPU, False, "on cpu"), (GPU, True, "with several processes")])
def test_cuda_graph_modes_are_refused_where_graphs_cannot_run(device, ddp, where):
    with pytest.raises(ConfigError, match=f"train.compile_mode: reduce-overhead uses CUDA graphs, which cannot be used {where}"):
        fast.compile_mode("reduce-overhead", device, ddp)


def test_fused_optimizers_on_cuda_only():
    assert fast.optimizer_kwargs(GPU) == {"fused": True}
    assert fast.optimizer_kwargs(CPU) == {}
    assert fast.uses_cuda_graphs("reduce-overhead") and not fast.uses_cuda_graphs("max-autotune-no-cudagraphs")
    fast.mark_step("default")  # no CUDA graphs: nothing to mark (and no CUDA needed)
