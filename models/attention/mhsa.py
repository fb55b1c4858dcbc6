"""MHSA and BoT: the multi-head self-attention of Bottleneck Transformers (Srinivas et al., CVPR 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_divisible
from models.common import Conv


class MHSA(nn.Module):
    """Multi-head self-attention with 2D relative position logits (Srinivas et al., BoTNet, CVPR 2021).

    ``softmax((q k^T + q r^T) / sqrt(d)) v`` over all pixels, ``r = r_h(dy) + r_w(dx)`` learned per relative offset.
    Offsets are computed for the map at hand; beyond ``max_offset`` they share the edge embedding (Shaw et al.'s
    clipping), so any input size works.
    """

    gate = False

    def __init__(self, c1: int, heads: int = 4, max_offset: int = 31):
        super().__init__()
        check_divisible("MHSA", c1, heads, f"heads={heads}")
        d = c1 // heads
        self.heads, self.max_offset, self.scale = heads, max_offset, d ** -0.5
        self.query = nn.Conv2d(c1, c1, 1)
        self.key = nn.Conv2d(c1, c1, 1)
        self.value = nn.Conv2d(c1, c1, 1)
        self.rel_h = nn.Parameter(torch.randn(2 * max_offset + 1, d) * d ** -0.5)  # offsets -max..max
        self.rel_w = nn.Parameter(torch.randn(2 * max_offset + 1, d) * d ** -0.5)

    def relative(self, table: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
        """(n, n, d): the embedding of offset ``j - i`` for query position i and key position j."""
        pos = torch.arange(n, device=table.device)
        return table[(pos[None, :] - pos[:, None]).clamp(-self.max_offset, self.max_offset) + self.max_offset]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).reshape(b, self.heads, -1, h, w) * self.scale  # (b, n, d, h, w)
        k = self.key(x).reshape(b, self.heads, -1, h * w)
        v = self.value(x).reshape(b, self.heads, -1, h * w)
        logits = torch.einsum("bndyx,bndk->bnyxk", q, k).reshape(b, self.heads, h, w, h, w)
        rel_h = torch.einsum("bndyx,yzd->bnyxz", q, self.relative(self.rel_h, h).to(q.dtype))  # (b, n, h, w, h')
        rel_w = torch.einsum("bndyx,xzd->bnyxz", q, self.relative(self.rel_w, w).to(q.dtype))  # (b, n, h, w, w')
        logits = logits + rel_h[..., :, None] + rel_w[..., None, :]
        attention = logits.reshape(b, self.heads, h * w, h * w).softmax(-1)
        return torch.einsum("bnqk,bndk->bndq", attention, v).reshape(b, c, h, w)


class BoT(nn.Module):
    """Bottleneck Transformer block (Srinivas et al., BoTNet, CVPR 2021): a ResNet bottleneck with MHSA for its 3x3.

    ``x + cv2(MHSA(cv1(x)))``: 1x1 Conv down to ``e * C`` channels, multi-head self-attention, 1x1 Conv back up.
    """

    gate = False

    def __init__(self, c1: int, heads: int = 4, e: float = 0.25, max_offset: int = 31):
        super().__init__()
        c_ = int(c1 * e)
        check_divisible("BoT", c_, heads, f"heads={heads} (its inner width is {c_} = e * {c1})")
        self.cv1 = Conv(c1, c_, 1)
        self.mhsa = MHSA(c_, heads, max_offset)
        self.cv2 = Conv(c_, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.mhsa(self.cv1(x)))
