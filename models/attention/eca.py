"""ECA: Efficient Channel Attention (Wang et al., CVPR 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: the odd size nearest to |log2(C) + b| / gamma (rounded up to odd)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al., CVPR 2020).

    Global average pooling then a 1D convolution across neighbouring channels (kernel adapted to C),
    without dimensionality reduction, gives the channel gate.
    """

    gate = True

    def __init__(self, c1: int, k_size: int | None = None):
        super().__init__()
        k = eca_kernel_size(c1) if k_size is None else k_size
        if k % 2 == 0 or k < 1:
            raise ValueError(f"ECA: k_size must be a positive odd number, got {k}")
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # (b, 1, c): convolve along channels
        return x * y.transpose(1, 2).unsqueeze(-1).sigmoid()
