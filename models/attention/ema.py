"""EMA: Efficient Multi-Scale Attention (Ouyang et al., ICASSP 2023)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible


class EMA(nn.Module):
    """Efficient Multi-Scale Attention (Ouyang et al., ICASSP 2023).

    Channels are split into ``factor`` groups folded into the batch; a shared 1x1 branch (directional pooling) and
    a 3x3 branch are combined by cross-spatial learning into one per-pixel gate for each group.

    ``cross_spatial=False`` is the paper's ablation "EMA_no" (Table 4): same branches and parameters, but the two branch
    outputs are averaged (the "simple averaging" the paper contrasts with) into a per-channel, per-pixel gate
    ``sigmoid((x1 + x2) / 2)`` instead of weighting each other's pixels. Chosen at construction: one traced graph.
    """

    gate = True

    def __init__(self, c1: int, factor: int = 32, cross_spatial: bool = True):
        super().__init__()
        check_divisible("EMA", c1, factor, f"factor={factor} groups")
        self.groups = factor
        self.cross_spatial = bool(cross_spatial)
        c = c1 // factor
        self.gn = nn.GroupNorm(c, c)
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        g = x.reshape(b * self.groups, ch // self.groups, h, w)
        # 1x1 branch: pool along W and along H, encode both with one shared 1x1 conv
        pooled = torch.cat((g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)), 2)
        gate_h, gate_w = self.conv1x1(pooled).split((h, w), 2)
        x1 = self.gn(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(g)
        if not self.cross_spatial:  # ablation EMA_no: the branches averaged, no cross-spatial learning
            return (g * ((x1 + x2) / 2).sigmoid()).reshape(b, ch, h, w)
        # cross-spatial learning: each branch's global descriptor weights the other branch's pixels
        d1 = x1.mean((2, 3)).softmax(-1).unsqueeze(1)  # (bg, 1, c)
        d2 = x2.mean((2, 3)).softmax(-1).unsqueeze(1)
        weights = d1 @ x2.flatten(2) + d2 @ x1.flatten(2)  # (bg, 1, hw)
        return (g * weights.reshape(-1, 1, h, w).sigmoid()).reshape(b, ch, h, w)
