"""CPCA: Channel Prior Convolutional Attention (Huang et al., 2023)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


def _depthwise(c: int, kh: int, kw: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, (kh, kw), padding=(kh // 2, kw // 2), groups=c)


class CPCA(nn.Module):
    """Channel Prior Convolutional Attention (Huang et al., 2023): channel prior, then multi-scale spatial weights.

    Channel prior ``F_c = x * (sigmoid(MLP(avg)) + sigmoid(MLP(max)))`` (the authors' code); a 5x5 depthwise conv and
    three strip-conv pairs (1x7/7x1, 1x11/11x1, 1x21/21x1) summed, then a 1x1 channel mix, weight ``F_c`` per pixel.
    """

    gate = True

    def __init__(self, c1: int, ratio: int = 4):
        super().__init__()
        c_ = check_ratio("CPCA", c1, ratio)
        self.fc1 = nn.Conv2d(c1, c_, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(c_, c1, 1)
        self.dconv5_5 = _depthwise(c1, 5, 5)
        self.strips = nn.ModuleList(nn.Sequential(_depthwise(c1, 1, k), _depthwise(c1, k, 1)) for k in (7, 11, 21))
        self.conv = nn.Conv2d(c1, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.relu(self.fc1(x.amax((2, 3), keepdim=True))))
        x = x * (avg.sigmoid() + mx.sigmoid())
        s = self.dconv5_5(x)
        s = s + sum(strip(s) for strip in self.strips)
        return self.conv(s) * x
