"""MLCA: Mixed Local Channel Attention (Wan et al., 2023)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.eca import eca_kernel_size


def adaptive_pool_matrix(n_in: int | torch.Tensor, n_out: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) matrix ``P`` with ``P @ v`` = ``adaptive_avg_pool1d(v, n_out)``, for any sizes (down or up).

    Bin i averages inputs ``floor(i n_in / n_out)`` to ``ceil((i + 1) n_in / n_out) - 1``, as PyTorch's adaptive
    pooling does; built from ``arange`` so that traced exports follow the input size.
    """
    i = torch.arange(n_out, device=like.device)[:, None]
    j = torch.arange(n_in, device=like.device)[None, :]
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    inside = ((j >= start) & (j < end)).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


class MLCA(nn.Module):
    """Mixed Local Channel Attention (Wan et al., 2023): ECA-style 1D convs on local and global pooled descriptors.

    Average pooling to ``local_size x local_size`` cells and to 1x1; a 1D conv along channels (ECA's adaptive kernel)
    on each (the local one over the cells' descriptors laid end to end); their sigmoids mixed by ``local_weight`` and
    spread back over the pixels by adaptive average pooling give the gate.
    """

    gate = True

    def __init__(self, c1: int, local_size: int = 5, local_weight: float = 0.5):
        super().__init__()
        k = eca_kernel_size(c1)
        self.local_size, self.local_weight = local_size, local_weight
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.conv_local = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.local_size
        ph, pw = adaptive_pool_matrix(h, s, x), adaptive_pool_matrix(w, s, x)
        local = ph @ x @ pw.T  # (b, c, s, s)
        y_local = self.conv_local(local.flatten(2).transpose(1, 2).reshape(b, 1, -1))  # cells end to end
        y_global = self.conv(local.mean((2, 3)).unsqueeze(1))  # (b, 1, c)
        att_local = y_local.reshape(b, s * s, c).transpose(1, 2).reshape(b, c, s, s).sigmoid()
        att_global = y_global.transpose(1, 2).unsqueeze(-1).sigmoid()  # (b, c, 1, 1)
        att = att_global * (1 - self.local_weight) + att_local * self.local_weight
        return x * (adaptive_pool_matrix(s, h, x) @ att @ adaptive_pool_matrix(s, w, x).T)
