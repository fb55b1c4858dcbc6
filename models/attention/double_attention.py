"""DoubleAttention: the A^2 block (Chen et al., NeurIPS 2018)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


class DoubleAttention(nn.Module):
    """Double Attention (Chen et al., A^2-Nets, NeurIPS 2018): gather global descriptors, then distribute them.

    Gather: ``c_n`` softmax-over-pixels maps pool ``c_m`` features into ``c_m x c_n`` second-order descriptors;
    distribute: each pixel mixes them with a softmax over ``c_n``; a 1x1 conv restores C, added to the input.
    """

    gate = False

    def __init__(self, c1: int, reduction: int = 4):
        super().__init__()
        c_ = check_ratio("DoubleAttention", c1, reduction, "reduction")
        self.convA = nn.Conv2d(c1, c_, 1)
        self.convB = nn.Conv2d(c1, c_, 1)
        self.convV = nn.Conv2d(c1, c_, 1)
        self.conv_reconstruct = nn.Conv2d(c_, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        a = self.convA(x).flatten(2)  # (b, m, hw) features
        attention_maps = self.convB(x).flatten(2).softmax(-1)  # (b, n, hw)
        attention_vectors = self.convV(x).flatten(2).softmax(1)  # (b, n, hw)
        descriptors = a @ attention_maps.transpose(1, 2)  # (b, m, n)
        z = descriptors @ attention_vectors  # (b, m, hw)
        return x + self.conv_reconstruct(z.reshape(b, -1, h, w))
