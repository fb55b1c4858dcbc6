"""CAA: Context Anchor Attention of PKINet (Cai et al., CVPR 2024)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.common import Conv


class CAA(nn.Module):
    """Context Anchor Attention (Cai et al., Poly Kernel Inception Network, CVPR 2024): long-range strip context.

    A 7x7 average pool and a 1x1 Conv, then depthwise 1 x k and k x 1 strip convs (k = 11) capture long, thin context;
    a 1x1 Conv and a sigmoid give the per-pixel, per-channel gate.
    """

    gate = True

    def __init__(self, c1: int, h_kernel_size: int = 11, v_kernel_size: int = 11):
        super().__init__()
        if h_kernel_size % 2 == 0 or v_kernel_size % 2 == 0:
            raise ValueError(f"CAA: kernel sizes must be odd, got {h_kernel_size} and {v_kernel_size}")
        self.avg_pool = nn.AvgPool2d(7, 1, 3)
        self.conv1 = Conv(c1, c1, 1)
        self.h_conv = nn.Conv2d(c1, c1, (1, h_kernel_size), padding=(0, h_kernel_size // 2), groups=c1)
        self.v_conv = nn.Conv2d(c1, c1, (v_kernel_size, 1), padding=(v_kernel_size // 2, 0), groups=c1)
        self.conv2 = Conv(c1, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv2(self.v_conv(self.h_conv(self.conv1(self.avg_pool(x))))).sigmoid()
