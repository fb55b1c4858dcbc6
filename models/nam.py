"""NAM channel attention, kept apart until it joins the attention package (then this file goes away).

Temporary home: the attention registry (``models.common.ATTENTION``) does not list NAM yet; the classifiers of
``models/classify.py`` take it from here when the registry lacks it.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class NAM(nn.Module):
    """Normalization-based Attention Module, channel part (Liu et al., 2021).

    The input is batch-normalised and each channel's response is weighted by its share of the BatchNorm scale factors,
    ``|gamma_c| / sum |gamma|``; the sigmoid of that is the gate. As in the authors' code, the shares are constants for
    backpropagation (gamma still learns through the normalisation itself).
    """

    def __init__(self, c1: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.bn.weight.detach().abs()
        share = (gamma / gamma.sum()).view(1, -1, 1, 1)
        return x * (share * self.bn(x)).sigmoid()
