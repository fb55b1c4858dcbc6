"""SimAM: a simple, parameter-free attention module (Yang et al., ICML 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn


class SimAM(nn.Module):
    """SimAM (Yang et al., ICML 2021): parameter-free 3D weights from an energy function.

    A neuron that stands out from the other neurons of its channel (low energy) gets a large weight:
    ``x * sigmoid((x - mu)^2 / (4 (var + lambda)) + 0.5)``, ``var`` over the ``h*w - 1`` other pixels.
    """

    gate = True

    def __init__(self, c1: int, e_lambda: float = 1e-4):
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        n = (x.new_ones(()) * (h * w - 1)).clamp(min=1)  # a tensor, so traced exports follow the input size
        d = (x - x.mean((2, 3), keepdim=True)).square()
        y = d / (4 * (d.sum((2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * y.sigmoid()
