"""CrissCross: criss-cross attention of CCNet (Huang et al., ICCV 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


class CrissCross(nn.Module):
    """Criss-Cross Attention (Huang et al., CCNet, ICCV 2019): each pixel attends to its row and its column.

    One softmax over the ``H + W - 1`` positions of the cross (the pixel itself counted once) weights the values;
    ``x + gamma * out`` with ``gamma`` starting at 0. Query and key have ``C / ratio`` channels.
    """

    gate = False

    def __init__(self, c1: int, ratio: int = 8):
        super().__init__()
        c_ = check_ratio("CrissCross", c1, ratio)
        self.query = nn.Conv2d(c1, c_, 1)
        self.key = nn.Conv2d(c1, c_, 1)
        self.value = nn.Conv2d(c1, c1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        q, k, v = self.query(x), self.key(x), self.value(x)
        e_h = torch.einsum("bcyx,bczx->byxz", q, k)  # (b, h, w, h): the pixel's column
        rows = torch.arange(h, device=x.device)
        e_h = e_h.masked_fill((rows[:, None] == rows[None, :])[:, None, :], float("-inf"))  # self counted in the row
        e_w = torch.einsum("bcyx,bcyz->byxz", q, k)  # (b, h, w, w): the pixel's row
        a_h, a_w = torch.cat((e_h, e_w), 3).softmax(3).split((h, w), 3)
        out = torch.einsum("byxz,bczx->bcyx", a_h, v) + torch.einsum("byxz,bcyz->bcyx", a_w, v)
        return x + self.gamma * out
