"""ParNet attention: the RepVGG-SSE block of ParNet (Goyal et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ParNet(nn.Module):
    """ParNet's RepVGG-SSE block (Goyal, Bochkovskiy, Deng & Koltun, "Non-deep Networks", 2021).

    ``SiLU(BN(conv1x1 x) + BN(conv3x3 x) + SSE(BN x))``: the skip branch is BatchNorm-ed and gated by a
    skip-squeeze-excitation (global average, one 1x1 conv, sigmoid), keeping the block shallow but wide.
    """

    gate = False

    def __init__(self, c1: int):
        super().__init__()
        self.conv1x1 = nn.Sequential(nn.Conv2d(c1, c1, 1, bias=False), nn.BatchNorm2d(c1))
        self.conv3x3 = nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1))
        self.bn = nn.BatchNorm2d(c1)
        self.sse = nn.Conv2d(c1, c1, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.bn(x)
        s = s * self.sse(s.mean((2, 3), keepdim=True)).sigmoid()
        return self.act(self.conv1x1(x) + self.conv3x3(x) + s)
