"""What the trainer needs beyond torch to run under torchrun: synchronised BatchNorm that also
works on CPU (gloo), and a readable name for the devices a run uses.

The distributed machinery itself is PyTorch's: torchrun (``torch.distributed.run``) starts
the processes, ``DistributedDataParallel`` averages the gradients.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of each rank's input is the sum of the
    gradients of every rank's output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm synchronised across ranks on CPU (gloo), where torch's SyncBatchNorm refuses to run.

    Batch statistics are summed over all ranks with an autograd-aware all_reduce: the mean,
    then the variance of the deviations (two passes, as a single-process BatchNorm), over the
    global batch; the running variance is the unbiased one, as in BatchNorm. So a DDP run with
    N ranks matches one process fed the same global batch. Outside DDP training it is BatchNorm."""

    _BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() / x.shape[1]])
        total = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = total[-1].detach()
        mean = total[:-1] / n
        centered = x - mean.view(shape)
        var = _AllReduceSum.apply(centered.square().sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `model` synchronised across ranks (train.sync_bn): timm's converter
    (torch's SyncBatchNorm, timm's norm+act layers too) on GPUs, CpuSyncBatchNorm on CPU."""
    if device.type != "cpu":
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(model)
    for module in model.modules():
        if type(module) in CpuSyncBatchNorm._BATCHNORMS:
            module.__class__ = CpuSyncBatchNorm  # the same state; only forward() differs
    return model


def _physical(device: torch.device) -> str:
    """cuda:i named by the GPU it is (nvidia-smi's index) when CUDA_VISIBLE_DEVICES pins the process."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return f"cuda:{visible[index]}" if index < len(visible) else f"cuda:{index}"


def device_label(device: torch.device, world_size: int = 1, local_world_size: int = 1) -> str:
    """What a run runs on, for people: "cpu", "cuda:0", "cpu x2", "cuda:0,cuda:1", "cuda:0,cuda:1 on 2 nodes"."""
    if world_size <= 1:
        return _physical(device)
    local_world_size = max(1, min(local_world_size, world_size))
    if device.type == "cuda":
        local = ",".join(_physical(torch.device("cuda", i)) for i in range(local_world_size))
    else:
        local = f"{device.type} x{local_world_size}"
    nodes = world_size // local_world_size
    return local if nodes <= 1 else f"{local} on {nodes} nodes"
