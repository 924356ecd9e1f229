"""What the trainer needs beyond torch to run under torchrun: which rank this process is and
which device it trains on, the process group, the few collective steps of the loop (stop
agreement, sums over ranks, rank 0's BatchNorm buffers, each rank's share of the loss),
synchronised BatchNorm that also works on CPU (gloo), and a readable name for the devices.

The distributed machinery itself is PyTorch's: torchrun (``torch.distributed.run``) starts
the processes, ``DistributedDataParallel`` averages the gradients.  Every helper here is a
no-op in a single process, so the trainer calls them unconditionally.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """What torchrun tells each process (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return DistInfo(int(os.environ.get("RANK", 0)), world_size, int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))


def init_distributed(info: DistInfo, device_hint: str) -> None:
    """Join torchrun's process group: NCCL when the ranks train on GPUs, gloo on CPU."""
    if not info.enabled or dist.is_initialized():
        return
    use_nccl = device_hint != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")


def select_device(requested: str, info: DistInfo) -> torch.device:
    """train.device resolved for this process: under DDP rank r of a node takes cuda:LOCAL_RANK."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {requested} asked for but no CUDA device is available (use cpu or auto)")
        if requested == "cuda":
            if info.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"train.device: local rank {info.local_rank} needs cuda:{info.local_rank} "
                                  f"but {torch.cuda.device_count()} CUDA devices are visible (fewer processes per node?)")
            return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
        if info.enabled:  # one GPU per process: rank r of a node uses cuda:LOCAL_RANK
            raise ConfigError(f"train.device: {requested} with {info.world_size} processes; use cuda or auto "
                              "(each process takes cuda:LOCAL_RANK; choose the GPUs with CUDA_VISIBLE_DEVICES)")
        index = int(requested.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {requested} does not exist ({torch.cuda.device_count()} CUDA devices)")
        return torch.device(requested)
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps is not available on this machine")
    return torch.device(requested)


# ---------------------------------------------------------------------------
# The collective steps of the training loop


def wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """The module the loop calls forward on: DistributedDataParallel under torchrun, else `model`."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_ranks(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """`t` summed over every rank, in place (unchanged in one process)."""
    if info.enabled:
        dist.all_reduce(t)
    return t


def any_rank_each(flags: tuple[bool, ...], info: DistInfo, device: torch.device) -> tuple[bool, ...]:
    """Each flag True on every rank when it is True on any, in one all-reduce."""
    if not info.enabled:
        return tuple(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


@torch.no_grad()
def adopt_rank0_buffers(model: nn.Module, info: DistInfo, sync_bn: bool) -> None:
    """Without SyncBN each rank's last step moved its own BatchNorm statistics: every rank
    evaluates, stops and ends with rank 0's, the ones its checkpoint holds."""
    if info.enabled and not sync_bn:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes and bytes, in order): equal digests
    mean bit-identical weights. It does not depend on the device or the memory format, so the
    digest of a checkpoint's `model` is that of the model it was saved from."""
    digest = hashlib.sha256()
    for key, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def rank_weights_sha256(model: nn.Module, info: DistInfo) -> list[str]:
    """Every rank's `weights_sha256`, in rank order (the `end` event's `weights_sha256`): the ranks
    of a DDP run must end with the same weights, and rank 0's are those its checkpoint holds.
    A collective under DDP: every rank calls it at the same point."""
    mine = weights_sha256(model.state_dict())
    if not info.enabled:
        return [mine]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    return [str(d) for d in gathered]


def share_of_global_batch(local_n: int, global_n: int, info: DistInfo) -> float:
    """DDP averages the ranks' gradients of their own mean losses. When a global batch does not
    divide evenly (250 on 4 GPUs: 63, 63, 62, 62) each rank's mean is weighted by its share, so
    that the step follows the mean over the global batch, as in one process. 1.0 otherwise."""
    if not info.enabled:
        return 1.0
    return local_n * info.world_size / global_n


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
