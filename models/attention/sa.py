"""SA: Shuffle Attention (Zhang & Yang, ICASSP 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible


class SA(nn.Module):
    """Shuffle Attention (Zhang & Yang, ICASSP 2021).

    Per group, half the channels get a channel gate (global average) and half a spatial gate
    (GroupNorm); the halves are concatenated and channels shuffled so groups exchange information.
    """

    gate = True

    def __init__(self, c1: int, groups: int = 64):
        super().__init__()
        check_divisible("SA", c1, 2 * groups, f"{groups} groups of two halves")
        self.groups = groups
        c = c1 // (2 * groups)
        self.gn = nn.GroupNorm(c, c)
        self.cweight = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, c, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        x_c, x_s = x.reshape(b * self.groups, ch // self.groups, h, w).chunk(2, 1)
        x_c = x_c * (self.cweight * x_c.mean((2, 3), keepdim=True) + self.cbias).sigmoid()
        x_s = x_s * (self.sweight * self.gn(x_s) + self.sbias).sigmoid()
        out = torch.cat((x_c, x_s), 1).reshape(b, 2, ch // 2, h, w)
        return out.transpose(1, 2).reshape(b, ch, h, w)  # channel shuffle, 2 groups
