"""S2: the attention of S^2-MLPv2 (Yu et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible, full_precision


def _shift(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Shift by one pixel along H (``dim=2``) or W (``dim=3``); the vacated border keeps its own value."""
    if dim == 2:
        return torch.cat((x[:, :, :1], x[:, :, :-1]), 2) if step > 0 else torch.cat((x[:, :, 1:], x[:, :, -1:]), 2)
    return torch.cat((x[..., :1], x[..., :-1]), 3) if step > 0 else torch.cat((x[..., 1:], x[..., -1:]), 3)


def _spatial_shift(x: torch.Tensor, moves: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Shift each quarter of the channels by one of the four (dim, step) moves."""
    return torch.cat([_shift(q, dim, step) for q, (dim, step) in zip(x.chunk(4, 1), moves)], 1)


SHIFT1 = ((2, 1), (2, -1), (3, 1), (3, -1))
SHIFT2 = ((3, 1), (3, -1), (2, 1), (2, -1))


class S2(nn.Module):
    """S^2-MLPv2 attention (Yu, Xu, Li & Li, 2021): spatial-shift MLP with split attention.

    A 1x1 expansion to 3C; two thirds are shifted one pixel in four directions (two orders), one third kept; split
    attention (an MLP on the sum over branches and pixels, softmax over the 3 branches) mixes them; a 1x1 projects back.
    """

    gate = False

    def __init__(self, c1: int):
        super().__init__()
        check_divisible("S2", c1, 4, "four shift directions")
        self.mlp1 = nn.Conv2d(c1, 3 * c1, 1)
        self.split_attention = nn.Sequential(nn.Conv2d(c1, c1, 1, bias=False), nn.GELU(),
                                             nn.Conv2d(c1, 3 * c1, 1, bias=False))
        self.mlp2 = nn.Conv2d(c1, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = self.mlp1(x).chunk(3, 1)
        x_all = torch.stack((_spatial_shift(x1, SHIFT1), _spatial_shift(x2, SHIFT2), x3), 1)  # (b, 3, c, h, w)
        s = x_all.sum(1)
        a = s.to(torch.promote_types(s.dtype, torch.float32)).sum((2, 3), keepdim=True)  # pixel sums in float32
        weights = full_precision(self.split_attention, a).unflatten(1, (3, -1)).softmax(1)  # (b, 3, c, 1, 1)
        return self.mlp2((x_all * weights).sum(1))
