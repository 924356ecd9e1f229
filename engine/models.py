"""Models: a timm backbone (pooled last feature map) and a head from an explicit registry."""
from __future__ import annotations

import os
import pickle
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from timm.models import is_model_in_modules
from torch import nn

from .config import ConfigError, ModelConfig
from .wideresnet import WIDE_RESNETS, WideResNet

HUB_HOST = ("huggingface.co", 443)
NETWORK_PROBE_TIMEOUT_S = 3.0


class WeightsError(ConfigError):
    """Pretrained weights cannot be had (offline, missing or unreadable file): exit 2."""


class LinearHead(nn.Module):
    """The seed's Baseline head: pooled features -> class logits."""

    def __init__(self, in_features: int, num_classes: int, hid_dim: int, drop_rate: float):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(features))


class MarginHead(nn.Module):
    """The seed's MarginHead: Linear+BN to hid_dim, then cosine similarity between the
    L2-normalised embedding and L2-normalised class weights (logits in [-1, 1])."""

    def __init__(self, in_features: int, num_classes: int, hid_dim: int, drop_rate: float):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.proj = nn.Linear(in_features, hid_dim, bias=False)
        self.bn = nn.BatchNorm1d(hid_dim)
        self.weight = nn.Parameter(torch.empty(num_classes, hid_dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        emb = self.bn(self.proj(self.drop(features)))
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))


HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "margin": MarginHead}


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _resnet_cifar_stem(backbone: nn.Module, name: str) -> None:
    # 3x3 stride-1 first conv and no max-pool: keeps 32x32 detail the ImageNet stem
    # (stride 4 before the first block) throws away.
    conv1, maxpool = getattr(backbone, "conv1", None), getattr(backbone, "maxpool", None)
    if not isinstance(conv1, nn.Conv2d) or maxpool is None:
        raise ConfigError(f"model.stem: cifar is available for ResNet-style (conv1 + maxpool), ConvNeXt and ViT/DeiT "
                          f"backbones and the wrn* networks, not {name!r}")
    backbone.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    backbone.maxpool = nn.Identity()


def _convnext_cifar_stem(backbone: nn.Module, name: str) -> None:
    # The 4x4 stride-4 patchify conv becomes a 3x3 stride-1 conv (its LayerNorm stays): the four
    # stages then run at 32, 16, 8 and 4 pixels, as a CIFAR-stem ResNet's do.
    stem = getattr(backbone, "stem", None)
    if not isinstance(stem, nn.Sequential) or not isinstance(stem[0], nn.Conv2d):
        raise ConfigError(f"model.stem: cifar expects a ConvNeXt patch stem, not the one of {name!r}")
    conv = stem[0]
    stem[0] = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=conv.bias is not None)


# A CIFAR stem for each timm family that has one: (timm modules, creation kwargs, change after creation).
# ViTs take 4x4 patches of a 32x32 image (64 tokens, other sizes by interpolating the position embedding).
CIFAR_STEMS: list[tuple[tuple[str, ...], dict, Callable[[nn.Module, str], None] | None]] = [
    (("resnet",), {}, _resnet_cifar_stem),
    (("convnext",), {}, _convnext_cifar_stem),
    (("vision_transformer", "deit"), {"patch_size": 4, "img_size": 32, "dynamic_img_size": True}, None),
]


def _cifar_stem(name: str) -> tuple[dict, Callable[[nn.Module, str], None] | None]:
    for modules, kwargs, change in CIFAR_STEMS:
        if is_model_in_modules(name, list(modules)):
            return kwargs, change
    return {}, _resnet_cifar_stem  # any other ResNet-like model (conv1 + maxpool), or a clear error


def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1 (the Hugging Face hub's own switch, also set by the test suite): never probe
    or download, only cached or local weights."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _network_reachable(timeout: float = NETWORK_PROBE_TIMEOUT_S) -> bool:
    if hub_offline():
        return False
    # create_connection's timeout does not bound the DNS lookup: bound the whole probe.
    def probe() -> bool:
        try:
            with socket.create_connection(HUB_HOST, timeout=timeout):
                return True
        except OSError:
            return False

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(probe).result(timeout=timeout + 1)
    except FuturesTimeout:
        return False
    finally:
        pool.shutdown(wait=False)


def cached_weights(backbone: str) -> str | None:
    """Path of already-downloaded pretrained weights for a timm model, or None."""
    pcfg = timm.models.get_pretrained_cfg(backbone)
    if pcfg is None:
        return None
    if pcfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = pcfg.hf_hub_id.split("@")[0]
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return found
    if pcfg.url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(pcfg.url)
        if candidate.is_file():
            return str(candidate)
    return None


def _pretrained_overlay(cfg: ModelConfig) -> dict | None:
    """Where timm should load weights from; raises WeightsError fast when it cannot."""
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"model.weights: file {cfg.weights!r} not found")
        return {"file": str(path)}
    pcfg = timm.models.get_pretrained_cfg(cfg.backbone)
    if pcfg is None or not (pcfg.hf_hub_id or pcfg.url or pcfg.file):
        raise WeightsError(f"model.pretrained: timm has no pretrained weights for {cfg.backbone!r}; set model.weights: PATH")
    cached = cached_weights(cfg.backbone)
    if cached:
        return {"file": cached}
    # The hub client retries for a minute or more without a network; probe first.
    if not _network_reachable():
        raise WeightsError(
            f"model.pretrained: no cached ImageNet weights for {cfg.backbone!r} and the hub is "
            f"{'off (HF_HUB_OFFLINE is set)' if hub_offline() else 'unreachable'}; "
            f"run once with network access (weights are cached) or set model.weights: PATH to a local weights file"
        )
    return None


def _local_backbone(cfg: ModelConfig) -> nn.Module:
    """A backbone of ours (not in timm): the wide ResNets, CIFAR networks by design."""
    depth, widen = WIDE_RESNETS[cfg.backbone]
    if cfg.stem != "cifar":
        raise ConfigError(f"model.stem: {cfg.backbone} is a CIFAR network (3x3 stem at full resolution); set stem: cifar")
    if cfg.drop_path_rate:
        raise ConfigError(f"model.drop_path_rate: {cfg.backbone} has no stochastic depth; leave it at 0")
    backbone = WideResNet(depth, widen)
    if cfg.pretrained:
        if not cfg.weights:
            raise WeightsError(f"model.pretrained: {cfg.backbone} has no published weights; set model.weights: PATH")
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"model.weights: file {cfg.weights!r} not found")
        try:
            backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            raise WeightsError(f"model.weights: cannot load {cfg.weights!r} into {cfg.backbone}: "
                               f"{str(exc).splitlines()[0][:200]}") from None
    return backbone


def build_backbone(cfg: ModelConfig) -> nn.Module:
    if cfg.backbone in WIDE_RESNETS:
        return _local_backbone(cfg)
    if not timm.is_model(cfg.backbone):
        raise ConfigError(f"model.backbone: unknown timm model {cfg.backbone!r} (e.g. resnet18, resnet50, "
                          f"vit_small_patch16_224, convnext_tiny; ours: {', '.join(WIDE_RESNETS)})")
    overlay = _pretrained_overlay(cfg) if cfg.pretrained else None
    stem_kwargs, change_stem = _cifar_stem(cfg.backbone) if cfg.stem == "cifar" else ({}, None)
    extra = {"drop_path_rate": cfg.drop_path_rate} if cfg.drop_path_rate else {}
    try:
        backbone = timm.create_model(
            cfg.backbone, pretrained=cfg.pretrained, num_classes=0, global_pool="avg",
            pretrained_cfg_overlay=overlay, **stem_kwargs, **extra,
        )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        if cfg.pretrained:
            where = cfg.weights or cfg.backbone
            raise WeightsError(f"model.weights: cannot load pretrained weights for {where!r}: {str(exc).splitlines()[0][:200]}") from None
        raise
    except TypeError as exc:  # a model that takes no such argument
        raise ConfigError(f"model: {cfg.backbone} does not take {str(exc).split('argument')[-1].strip()[:80]} "
                          f"(model.stem: cifar or model.drop_path_rate)") from None
    if change_stem is not None:
        change_stem(backbone, cfg.backbone)
    return backbone


def build_model(cfg: ModelConfig) -> Classifier:
    backbone = build_backbone(cfg)
    head = HEADS[cfg.head](backbone.num_features, cfg.num_classes, cfg.hid_dim, cfg.drop_rate)
    return Classifier(backbone, head)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int, device: torch.device) -> float | None:
    """Forward FLOPs of one image (torch's own counter); None when it cannot count."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        was_training = model.training
        model.train(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, image_size, image_size, device=device))
        model.train(was_training)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - FLOPs are informational only
        return None
