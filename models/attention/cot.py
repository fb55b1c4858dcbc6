"""CoT: Contextual Transformer block (Li, Yao, Pan & Mei, TPAMI 2022)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention.util import check_divisible


class CoT(nn.Module):
    """Contextual Transformer (Li et al., CoTNet, TPAMI 2022): attention from static context, over a local window.

    Keys get a grouped k x k conv (static context ``k1``); two 1x1 convs on ``[x, k1]`` give per-pixel k x k weights
    (shared by channel groups of ``share``) that aggregate the values over each pixel's window (dynamic context);
    the two contexts are fused by split attention (softmax over the two of per-channel weights from their pooled sum).
    """

    gate = False
    min_batch = 2  # BatchNorm over pooled (B, C, 1, 1) vectors: 2+ images per training batch, none of one

    def __init__(self, c1: int, kernel_size: int = 3, share: int = 8):
        super().__init__()
        check_divisible("CoT", c1, max(4, share), f"4 key groups and weights shared by {share} channels")
        if kernel_size % 2 == 0:
            raise ValueError(f"CoT: kernel_size must be odd, got {kernel_size}")
        k2, cw = kernel_size * kernel_size, c1 // share  # window size, weight channels
        self.kernel_size, self.cw = kernel_size, cw
        self.key_embed = nn.Sequential(nn.Conv2d(c1, c1, kernel_size, padding=kernel_size // 2, groups=4, bias=False),
                                       nn.BatchNorm2d(c1), nn.ReLU())
        self.embed = nn.Sequential(nn.Conv2d(2 * c1, c1 // 2, 1, bias=False), nn.BatchNorm2d(c1 // 2), nn.ReLU(),
                                   nn.Conv2d(c1 // 2, k2 * cw, 1), nn.GroupNorm(cw, k2 * cw))
        self.conv1x1 = nn.Sequential(nn.Conv2d(c1, c1, 1, bias=False), nn.BatchNorm2d(c1))
        self.bn = nn.BatchNorm2d(c1)
        self.act = nn.SiLU()
        attn_chs = max(c1 // 2, 32)
        self.se = nn.Sequential(nn.Conv2d(c1, attn_chs, 1), nn.BatchNorm2d(attn_chs), nn.ReLU(),
                                nn.Conv2d(attn_chs, 2 * c1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k, p = self.kernel_size, self.kernel_size // 2
        k1 = self.key_embed(x)
        weights = self.embed(torch.cat((x, k1), 1)).reshape(b, 1, -1, k * k, h, w)  # (b, 1, cw, k*k, h, w)
        v = F.pad(self.conv1x1(x), (p, p, p, p))
        # local aggregation: channel ch uses weight channel ch % cw, as in the paper's shared local matrix product
        y = sum(v[..., i:i + h, j:j + w].reshape(b, -1, self.cw, h, w) * weights[:, :, :, i * k + j]
                for i in range(k) for j in range(k))
        k2 = self.act(self.bn(y.reshape(b, c, h, w)))
        a = self.se((k1 + k2).mean((2, 3), keepdim=True)).reshape(b, c, 2).softmax(-1)  # per channel over the two
        return k2 * a[..., :1, None] + k1 * a[..., 1:, None]
