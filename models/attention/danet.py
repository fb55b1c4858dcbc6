"""DANet's position and channel attention modules (Fu et al., CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


class PAM(nn.Module):
    """Position Attention Module of DANet (Fu et al., Dual Attention Network, CVPR 2019): non-local over pixels.

    ``x + gamma * V softmax(Q^T K)^T`` with ``Q, K`` of ``C / ratio`` channels and ``gamma`` starting at 0.
    """

    gate = False

    def __init__(self, c1: int, ratio: int = 8):
        super().__init__()
        c_ = check_ratio("PAM", c1, ratio)
        self.query_conv = nn.Conv2d(c1, c_, 1)
        self.key_conv = nn.Conv2d(c1, c_, 1)
        self.value_conv = nn.Conv2d(c1, c1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query_conv(x).flatten(2)  # (b, c', hw)
        k = self.key_conv(x).flatten(2)
        attention = (q.transpose(1, 2) @ k).softmax(-1)  # (b, hw, hw): row i = where pixel i looks
        out = self.value_conv(x).flatten(2) @ attention.transpose(1, 2)  # (b, c, hw)
        return x + self.gamma * out.view_as(x)


class CAM(nn.Module):
    """Channel Attention Module of DANet (Fu et al., CVPR 2019): attention between channels, no projections.

    ``x + gamma * softmax(max(E) - E) X`` with ``E = X X^T`` the channels' Gram matrix and ``gamma`` starting at 0.
    ``E`` sums over all pixels, so it is computed in float32 under autocast (fp16 overflows, bf16 blurs the softmax).
    """

    gate = False

    def __init__(self, c1: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(2)  # (b, c, hw)
        with torch.autocast(x.device.type, enabled=False):
            f32 = f.to(torch.promote_types(f.dtype, torch.float32))
            energy = f32 @ f32.transpose(1, 2)  # (b, c, c)
            attention = (energy.amax(-1, keepdim=True) - energy).softmax(-1)
        return x + self.gamma * (attention.to(f.dtype) @ f).view_as(x)


class DANet(nn.Module):
    """Dual attention (Fu et al., DANet, CVPR 2019): position and channel attention in parallel, summed.

    ``x + gamma_p * PAM-term + gamma_c * CAM-term``: the two modules' outputs added, the input counted once.
    """

    gate = False

    def __init__(self, c1: int, ratio: int = 8):
        super().__init__()
        self.pam = PAM(c1, ratio)
        self.cam = CAM(c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pam(x) + self.cam(x) - x
