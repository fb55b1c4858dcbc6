"""SOCA: second-order channel attention of SAN (Dai et al., CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention.util import check_ratio


def covariance_sqrt(x: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Square root of each (b, c, c) covariance matrix by coupled Newton-Schulz iterations after trace normalisation."""
    eye = torch.eye(x.shape[1], device=x.device, dtype=x.dtype).expand_as(x)
    trace = (x * eye).sum((1, 2), keepdim=True).clamp(min=torch.finfo(x.dtype).eps)  # 0 for a flat map
    y, z = x / trace, eye
    for _ in range(iterations):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    return y * trace.sqrt()


class SOCA(nn.Module):
    """Second-Order Channel Attention (Dai et al., SAN, CVPR 2019): SE on covariance instead of average pooling.

    The channels' covariance over the pixels is normalised by its matrix square root (Newton-Schulz, 5 iterations);
    the mean of each row feeds an SE bottleneck (``ratio`` 8) whose sigmoid gates the channels. Cost grows as C^3.
    """

    gate = True

    def __init__(self, c1: int, ratio: int = 8, iterations: int = 5):
        super().__init__()
        c_ = check_ratio("SOCA", c1, ratio)
        self.iterations = iterations
        self.conv_du = nn.Sequential(nn.Conv2d(c1, c_, 1), nn.ReLU(), nn.Conv2d(c_, c1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(2)
        f = f - f.mean(2, keepdim=True)
        cov = f @ f.transpose(1, 2) / f.shape[2]  # (b, c, c)
        s = covariance_sqrt(cov, self.iterations).mean(2)  # (b, c)
        return x * self.conv_du(s[..., None, None]).sigmoid()
