"""SK: Selective Kernel convolution (Li et al., CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible


class SK(nn.Module):
    """Selective Kernel (Li et al., CVPR 2019): branches with growing receptive fields, mixed per channel.

    Branch ``i`` is a grouped 3x3 conv of dilation ``i + 1`` (so 3x3, 5x5, ...); a softmax across branches of weights
    computed from the pooled sum picks each channel's kernel size. Its BatchNorm over pooled vectors needs batch >= 2
    in training, as in the paper.
    """

    gate = False
    min_batch = 2  # BatchNorm over pooled (B, C, 1, 1) vectors: 2+ images per training batch, none of one

    def __init__(self, c1: int, branches: int = 2, groups: int = 32, ratio: int = 16, min_dim: int = 32):
        super().__init__()
        check_divisible("SK", c1, groups, f"groups={groups} of its grouped convolutions")
        if branches < 2:
            raise ValueError(f"SK: branches must be at least 2, got {branches}")
        d = max(c1 // ratio, min_dim)
        self.branches = branches
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c1, c1, 3, padding=i + 1, dilation=i + 1, groups=groups, bias=False),
                          nn.BatchNorm2d(c1), nn.ReLU()) for i in range(branches))
        self.fc = nn.Sequential(nn.Conv2d(c1, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU())
        self.fcs = nn.Conv2d(d, c1 * branches, 1, bias=False)  # one c1 x d matrix per branch, stacked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.stack([conv(x) for conv in self.convs], 1)  # (b, M, c, h, w)
        z = self.fc(u.sum(1).mean((2, 3), keepdim=True))  # (b, d, 1, 1)
        a = self.fcs(z).unflatten(1, (self.branches, -1)).softmax(1)  # (b, M, c, 1, 1)
        return (u * a).sum(1)
