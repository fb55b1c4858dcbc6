"""Triplet attention (Misra et al., WACV 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ZPoolGate(nn.Module):
    """One triplet branch: max and mean over dimension 1, a k x k conv + BatchNorm, a sigmoid gate."""

    gate = True

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat((x.amax(1, keepdim=True), x.mean(1, keepdim=True)), 1)
        return x * self.bn(self.conv(z)).sigmoid()


class Triplet(nn.Module):
    """Triplet Attention (Misra et al., WACV 2021): cross-dimension interaction without reduction.

    Three branches rotate the tensor so that (C, W), (H, C) and (H, W) each become the plane a Z-pool + 7x7 conv
    gate is computed on; the three gated tensors are averaged.
    """

    gate = True

    def __init__(self, c1: int, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"Triplet: kernel_size must be odd, got {kernel_size}")
        self.cw = ZPoolGate(kernel_size)  # H pooled: a gate over (C, W)
        self.hc = ZPoolGate(kernel_size)  # W pooled: a gate over (H, C)
        self.hw = ZPoolGate(kernel_size)  # C pooled: a gate over (H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        x_hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        return (x_cw + x_hc + self.hw(x)) / 3
