"""Polarized self-attention (Liu et al., 2021): parallel and sequential layouts."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible


class PolarizedSA(nn.Module):
    """Polarized Self-Attention, parallel layout (Liu et al., 2021): ``x * gate_channel + x * gate_spatial``.

    Channel-only: a softmax over pixels of a 1-channel query pools C/2 values into one vector, expanded back to C with
    LayerNorm and sigmoid. Spatial-only: a softmax over C/2 channels of the pooled query weights C/2 values per pixel.
    """

    gate = True
    sequential = False

    def __init__(self, c1: int):
        super().__init__()
        check_divisible(type(self).__name__, c1, 2, "two halves")
        c_ = c1 // 2
        self.ch_wv = nn.Conv2d(c1, c_, 1)
        self.ch_wq = nn.Conv2d(c1, 1, 1)
        self.ch_wz = nn.Conv2d(c_, c1, 1)
        self.ln = nn.LayerNorm([c1, 1, 1])
        self.sp_wv = nn.Conv2d(c1, c_, 1)
        self.sp_wq = nn.Conv2d(c1, c_, 1)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        q = self.ch_wq(x).flatten(2).softmax(-1)  # (b, 1, hw)
        z = (self.ch_wv(x).flatten(2) @ q.transpose(1, 2)).unsqueeze(-1)  # (b, c/2, 1, 1)
        return self.ln(self.ch_wz(z)).sigmoid()

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        q = self.sp_wq(x).mean((2, 3)).softmax(-1).unsqueeze(1)  # (b, 1, c/2)
        z = q @ self.sp_wv(x).flatten(2)  # (b, 1, hw)
        return z.view_as(x[:, :1]).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sequential:
            x = x * self.channel_gate(x)
            return x * self.spatial_gate(x)
        return x * self.channel_gate(x) + x * self.spatial_gate(x)


class SequentialPolarizedSA(PolarizedSA):
    """Polarized Self-Attention, sequential layout (Liu et al., 2021): the channel gate, then the spatial gate.

    Same branches as ``PolarizedSA``; the spatial gate is computed on the channel-gated tensor.
    """

    sequential = True
