"""Wide Residual Networks for 32x32 images (Zagoruyko & Komodakis, BMVC 2016), which timm does not have.

WRN-d-k: a 3x3 conv to 16 channels, three groups of (d - 4) / 6 pre-activation basic blocks
(BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3) at widths 16k, 32k, 64k and strides 1, 2, 2, then
BN-ReLU and global average pooling; a 1x1 conv on the shortcut where the shape changes.  As the
paper's code and the common PyTorch ports (e.g. xternalz/WideResNet-pytorch): WRN-28-10 has
36.5 M parameters with a 100-class linear layer.  Here it is a backbone like timm's with
``num_classes=0``: ``forward`` returns the pooled features, ``num_features`` is 64k.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)  # the projection sees the activated input
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.drop_rate:
            y = F.dropout(y, p=self.drop_rate, training=self.training)
        return self.conv2(y) + shortcut


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen: int = 10, drop_rate: float = 0.0, in_chans: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        blocks = []
        for group, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                cin = widths[group] if i == 0 else widths[group + 1]
                blocks.append(_Block(cin, widths[group + 1], stride if i == 0 else 1, drop_rate))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.num_features = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.blocks(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)


# name -> (depth, widen factor); the names a config's model.backbone may use
WIDE_RESNETS: dict[str, tuple[int, int]] = {"wrn16_4": (16, 4), "wrn28_2": (28, 2), "wrn28_10": (28, 10), "wrn40_2": (40, 2)}


__all__ = ["WIDE_RESNETS", "WideResNet"]
