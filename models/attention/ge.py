"""GE: Gather-Excite (Hu, Shen, Albanie, Sun & Vedaldi, NeurIPS 2018)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.util import check_ratio


class GE(nn.Module):
    """Gather-Excite (Hu et al., NeurIPS 2018): gather context over an extent, redistribute it as a gate.

    GE-theta-minus (default, parameter-free): average over the whole map (``extent=0``) or over windows of
    ``2e - 1`` pixels every ``e``; GE-theta (``extra_params=True``): ``log2(e)`` depthwise stride-2 3x3 convs with
    BatchNorm; ``mlp=True`` adds an SE-style bottleneck (GE-theta-plus). The gathered map is upsampled by nearest
    neighbour and passed through a sigmoid.
    """

    gate = True

    def __init__(self, c1: int, extent: int = 0, extra_params: bool = False, mlp: bool = False, ratio: int = 16):
        super().__init__()
        if extent < 0 or extent & (extent - 1) or extent == 1:
            raise ValueError(f"GE: extent must be 0 (global) or a power of two >= 2, got {extent}")
        if extra_params and extent == 0:
            raise ValueError("GE: a learned global gather needs a fixed feature size; with extra_params=True use "
                             "extent 2, 4, 8... (or extra_params=False for the global extent)")
        self.extent = extent
        self.gather = None
        if extra_params:
            n = int(math.log2(extent))
            layers = []
            for i in range(n):
                layers += [nn.Conv2d(c1, c1, 3, stride=2, padding=1, groups=c1, bias=False), nn.BatchNorm2d(c1)]
                if i < n - 1:
                    layers.append(nn.ReLU())
            self.gather = nn.Sequential(*layers)
        if mlp:
            c_ = check_ratio("GE", c1, ratio)
            self.mlp = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.ReLU(), nn.Conv2d(c_, c1, 1))
        else:
            self.mlp = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is not None:
            g = self.gather(x)
        elif self.extent == 0:
            g = x.mean((2, 3), keepdim=True)
        else:
            e = self.extent
            g = F.avg_pool2d(x, 2 * e - 1, stride=e, padding=e - 1, count_include_pad=False)
        g = self.mlp(g)
        if self.extent:
            g = F.interpolate(g, size=x.shape[2:], mode="nearest")
        return x * g.sigmoid()
