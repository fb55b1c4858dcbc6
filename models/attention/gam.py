"""GAM: Global Attention Mechanism (Liu et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


class GAM(nn.Module):
    """Global Attention Mechanism (Liu, Shao & Hoffmann, 2021): channel then spatial gate, no pooling.

    A per-pixel MLP (``C -> C/rate -> C``) gates channels; two 7x7 convs with BatchNorm (``C -> C/rate -> C``) gate
    every channel at every pixel, so no information is squeezed by pooling.
    """

    gate = True

    def __init__(self, c1: int, rate: int = 4):
        super().__init__()
        c_ = check_ratio("GAM", c1, rate, "rate")
        self.channel_attention = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.ReLU(), nn.Conv2d(c_, c1, 1))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(c1, c_, 7, padding=3), nn.BatchNorm2d(c_), nn.ReLU(),
            nn.Conv2d(c_, c1, 7, padding=3), nn.BatchNorm2d(c1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_attention(x).sigmoid()
        return x * self.spatial_attention(x).sigmoid()
