"""CA: Coordinate Attention (Hou et al., CVPR 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn


class CA(nn.Module):
    """Coordinate Attention (Hou et al., CVPR 2021).

    Pooling along each spatial axis keeps positions on the other; a shared 1x1 bottleneck then two
    1x1 convs give direction-aware gates ``a_h`` and ``a_w``.
    """

    gate = True

    def __init__(self, c1: int, reduction: int = 32):
        super().__init__()
        mip = max(8, c1 // reduction)
        self.conv1 = nn.Conv2d(c1, mip, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, c1, kernel_size=1)
        self.conv_w = nn.Conv2d(mip, c1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        pooled = torch.cat((x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)), 2)
        y_h, y_w = self.act(self.bn1(self.conv1(pooled))).split((h, w), 2)
        return x * self.conv_h(y_h).sigmoid() * self.conv_w(y_w.transpose(2, 3)).sigmoid()
