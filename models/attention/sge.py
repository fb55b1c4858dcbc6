"""SGE: Spatial Group-wise Enhance (Li, Hu & Yang, 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible


class SGE(nn.Module):
    """Spatial Group-wise Enhance (Li, Hu & Yang, 2019): one spatial gate per channel group.

    Each pixel's similarity to its group's global descriptor (dot product over the group's channels) is normalised
    over the pixels (mean 0, std 1 with the paper's biased variance), scaled and shifted per group, and gates the group.
    """

    gate = True

    def __init__(self, c1: int, groups: int = 64):
        super().__init__()
        check_divisible("SGE", c1, groups, f"groups={groups}")
        self.groups = groups
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        t = (g * g.mean((2, 3), keepdim=True)).sum(1, keepdim=True)  # (bG, 1, h, w)
        t = t - t.mean((2, 3), keepdim=True)
        t = t / (t.square().mean((2, 3), keepdim=True).sqrt() + 1e-5)
        t = t.reshape(b, self.groups, h, w) * self.weight + self.bias
        return (g * t.reshape(b * self.groups, 1, h, w).sigmoid()).reshape(b, c, h, w)
