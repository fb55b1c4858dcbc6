"""SE: Squeeze-and-Excitation (Hu et al., CVPR 2018)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018).

    Global average pooling, a bottleneck MLP (ratio ``ratio``) and a sigmoid give one weight per channel.
    """

    gate = True

    def __init__(self, c1: int, ratio: int = 16):
        super().__init__()
        c_ = check_ratio("SE", c1, ratio)
        self.fc1 = nn.Conv2d(c1, c_, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(c_, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))).sigmoid()


class EffectiveSE(nn.Module):
    """Effective Squeeze-and-Excitation (Lee & Park, CenterMask, CVPR 2020).

    SE without the bottleneck: one ``C x C`` 1x1 conv on the pooled descriptor and a hard sigmoid keep every channel.
    """

    gate = True

    def __init__(self, c1: int):
        super().__init__()
        self.fc = nn.Conv2d(c1, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.hardsigmoid(self.fc(x.mean((2, 3), keepdim=True)))
