"""GC: Global Context block (Cao et al., GCNet, ICCVW 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


class GC(nn.Module):
    """Global Context block (Cao et al., GCNet, 2019): one query-independent attention map for all pixels.

    A softmax over pixels of a 1x1 conv pools one context vector; a LayerNorm bottleneck transforms it and it is added
    to every pixel (``fusion="add"``, the paper's choice) or used as a sigmoid channel gate (``fusion="mul"``).
    """

    gate = False  # True for fusion="mul" (set per instance)

    def __init__(self, c1: int, ratio: int = 16, fusion: str = "add"):
        super().__init__()
        if fusion not in ("add", "mul"):
            raise ValueError(f"GC: fusion must be 'add' or 'mul', got {fusion!r}")
        c_ = check_ratio("GC", c1, ratio)
        self.gate = fusion == "mul"
        self.conv_mask = nn.Conv2d(c1, 1, 1)
        self.transform = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.LayerNorm([c_, 1, 1]), nn.ReLU(), nn.Conv2d(c_, c1, 1))
        if not self.gate:  # the block starts as the identity, as in the paper's code
            nn.init.zeros_(self.transform[-1].weight)
            nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.conv_mask(x).flatten(2).softmax(-1)  # (b, 1, hw)
        context = (x.flatten(2) @ weights.transpose(1, 2)).unsqueeze(-1)  # (b, c, 1, 1)
        t = self.transform(context)
        return x * t.sigmoid() if self.gate else x + t
