"""NAM: Normalization-based Attention Module (Liu et al., NeurIPS 2021 ImageNet PPF workshop)."""

from __future__ import annotations

import torch
import torch.nn as nn


class NAM(nn.Module):
    """Normalization-based Attention Module, channel part (Liu et al., 2021).

    BatchNorm's scale factors measure how much each channel varies: the normalised input, weighted by
    ``|gamma_c| / sum |gamma|``, goes through a sigmoid to gate the input.
    """

    gate = True

    def __init__(self, c1: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.bn.weight.abs() / self.bn.weight.abs().sum()
        return x * (self.bn(x) * weight.view(1, -1, 1, 1)).sigmoid()
