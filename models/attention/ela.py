"""ELA: Efficient Local Attention (Xu & Wan, 2024)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible

# version -> (1D kernel size, channels per conv group, GroupNorm groups), the paper's ELA-T/B/S/L
ELA_VERSIONS = {"T": (5, 1, 32), "B": (7, 1, 16), "S": (5, 8, 16), "L": (7, 8, 16)}


class ELA(nn.Module):
    """Efficient Local Attention (Xu & Wan, 2024): coordinate attention without reduction or BatchNorm.

    The H- and W-pooled strips each go through one shared 1D conv along the strip (depthwise for ELA-T/B, 8 channels
    per group for ELA-S/L) and GroupNorm; their sigmoids gate rows and columns: ``x * a_h * a_w``.
    """

    gate = True

    def __init__(self, c1: int, phi: str = "B"):
        super().__init__()
        if phi not in ELA_VERSIONS:
            raise ValueError(f"ELA: unknown version phi={phi!r}; choose one of {', '.join(ELA_VERSIONS)}")
        k, per_group, gn_groups = ELA_VERSIONS[phi]
        check_divisible("ELA", c1, max(gn_groups, per_group), f"{gn_groups} GroupNorm groups (ELA-{phi})")
        self.conv = nn.Conv1d(c1, c1, k, padding=k // 2, groups=c1 // per_group, bias=False)
        self.gn = nn.GroupNorm(gn_groups, c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h = self.gn(self.conv(x.mean(3))).sigmoid()  # (b, c, h)
        a_w = self.gn(self.conv(x.mean(2))).sigmoid()  # (b, c, w)
        return x * a_h.unsqueeze(3) * a_w.unsqueeze(2)
