"""BAM: Bottleneck Attention Module (Park et al., BMVC 2018)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


class BAM(nn.Module):
    """Bottleneck Attention Module (Park, Woo, Lee & Kweon, BMVC 2018): channel and spatial branches in parallel.

    ``x * (1 + sigmoid(Mc(x) + Ms(x)))``: ``Mc`` an MLP with BatchNorm on the pooled descriptor, ``Ms`` a 1x1 reduction
    and two dilated 3x3 convs down to one map. Its BatchNorm over pooled vectors needs batch >= 2 in training.
    """

    gate = True
    min_batch = 2  # BatchNorm over pooled (B, C, 1, 1) vectors: 2+ images per training batch, none of one

    def __init__(self, c1: int, ratio: int = 16, dilation: int = 4):
        super().__init__()
        c_ = check_ratio("BAM", c1, ratio)
        self.channel_attention = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.BatchNorm2d(c_), nn.ReLU(),
                                               nn.Conv2d(c_, c1, 1))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(c1, c_, 1), nn.BatchNorm2d(c_), nn.ReLU(),
            nn.Conv2d(c_, c_, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(c_), nn.ReLU(),
            nn.Conv2d(c_, c_, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(c_), nn.ReLU(),
            nn.Conv2d(c_, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.channel_attention(x.mean((2, 3), keepdim=True)) + self.spatial_attention(x)
        return x * (1 + a.sigmoid())
