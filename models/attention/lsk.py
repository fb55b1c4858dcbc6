"""LSKA (Lau, Po & Rehman, 2023) and the LSK block of LSKNet (Li et al., ICCV 2023): large-kernel attention."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible

# LSKA kernel size -> (local depthwise size, dilated depthwise size, dilation), from the paper
LSKA_KERNELS = {7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3), 41: (5, 13, 3), 53: (5, 17, 3)}


def _strip(c: int, k: int, horizontal: bool, dilation: int = 1) -> nn.Conv2d:
    pad = (k // 2) * dilation
    size, padding = ((1, k), (0, pad)) if horizontal else ((k, 1), (pad, 0))
    return nn.Conv2d(c, c, size, padding=padding, dilation=dilation, groups=c)


class LSKA(nn.Module):
    """Large Separable Kernel Attention (Lau et al., 2023): VAN's large-kernel attention with 1D separable kernels.

    A ``k x k`` depthwise conv and a dilated depthwise conv are each split into 1 x n and n x 1 convs; a 1x1 conv
    follows and the result multiplies the input (``x * attn``).
    """

    gate = True

    def __init__(self, c1: int, k_size: int = 7):
        super().__init__()
        if k_size not in LSKA_KERNELS:
            raise ValueError(f"LSKA: k_size must be one of {', '.join(map(str, LSKA_KERNELS))}, got {k_size}")
        k0, k1, d = LSKA_KERNELS[k_size]
        self.conv0h, self.conv0v = _strip(c1, k0, True), _strip(c1, k0, False)
        self.conv_spatial_h, self.conv_spatial_v = _strip(c1, k1, True, d), _strip(c1, k1, False, d)
        self.conv1 = nn.Conv2d(c1, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x))))
        return x * self.conv1(attn)


class LSKBlock(nn.Module):
    """Large Selective Kernel block (Li et al., LSKNet, ICCV 2023): spatial selection between two receptive fields.

    A 5x5 depthwise conv and, after it, a 7x7 depthwise conv of dilation 3 give two contexts (halved by 1x1 convs);
    a 7x7 conv over their channel-mean and channel-max maps yields two sigmoid masks that mix them; a 1x1 conv
    expands the mix, which multiplies the input.
    """

    gate = True

    def __init__(self, c1: int):
        super().__init__()
        check_divisible("LSKBlock", c1, 2, "two halves")
        self.conv0 = nn.Conv2d(c1, c1, 5, padding=2, groups=c1)
        self.conv_spatial = nn.Conv2d(c1, c1, 7, padding=9, dilation=3, groups=c1)
        self.conv1 = nn.Conv2d(c1, c1 // 2, 1)
        self.conv2 = nn.Conv2d(c1, c1 // 2, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(c1 // 2, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = self.conv0(x)
        a2 = self.conv_spatial(a1)
        a1, a2 = self.conv1(a1), self.conv2(a2)
        both = torch.cat((a1, a2), 1)
        masks = self.conv_squeeze(torch.cat((both.mean(1, keepdim=True), both.amax(1, keepdim=True)), 1)).sigmoid()
        return x * self.conv(a1 * masks[:, :1] + a2 * masks[:, 1:])
