"""Building blocks of YOLOv5 (v6.0 numerics) and the plug-in attention modules.

Every block is an ``nn.Module`` whose constructor starts with the input channel count ``c1``.
Attribute names follow YOLOv5 (``conv``/``bn``/``act``, ``cv1``..``cv3``, ``m``) so that state dicts
saved by the original code load with ``strict=True``.

Attention modules keep the tensor shape, take ``c1`` first and are listed in ``ATTENTION`` so that a
model YAML (``[-1, 1, EMA, []]``) or a string (``build_attention("cbam", 256)``) can pick one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn



def autopad(k: int | tuple, p: int | tuple | None = None, d: int = 1) -> int | list:
    """Padding that keeps the spatial size for stride 1 ('same' padding)."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU: the standard YOLOv5 convolution."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else (act if isinstance(act, nn.Module) else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward after ``fuse_conv_and_bn`` folded the BatchNorm into ``conv``."""
        return self.act(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 then 3x3 convolution, with a residual connection when shapes allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convolutions: two 1x1 branches, n bottlenecks on one, fused by a 1x1."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv3/v5.0): parallel max-pools of several kernel sizes."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP (v6.0): three chained k x k max-pools, equal to SPP(k, 2k-1, 3k-2); cv1 keeps its SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):
    """Space-to-depth stem (v5.0): four pixel-phase slices stacked on channels, then a Conv."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension (channels by default)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


# ----------------------------------------------------------------------------------------------------
# Attention modules
# ----------------------------------------------------------------------------------------------------


def _check_divisible(name: str, channels: int, divisor: int, what: str) -> None:
    if channels < divisor or channels % divisor:
        raise ValueError(
            f"{name}: {channels} input channels cannot be split into {what}; "
            f"use a channel count that is a multiple of {divisor}, or change the module's option")


class EMA(nn.Module):
    """Efficient Multi-Scale Attention (Ouyang et al., ICASSP 2023).

    Channels are split into ``factor`` groups folded into the batch; a shared 1x1 branch (directional pooling) and
    a 3x3 branch are combined by cross-spatial learning into one per-pixel gate for each group.

    ``cross_spatial=False`` is the paper's ablation "EMA_no" (Table 4): same branches and parameters, but instead of
    each branch's global descriptor weighting the other branch's pixels, the two branch outputs are simply averaged
    (our reading of the paper's contrast with modules that "aggregate attention weights by simple averaging"), giving
    a per-channel, per-pixel gate ``sigmoid((x1 + x2) / 2)``. Chosen at construction, so tracing sees one graph.
    """

    def __init__(self, c1: int, factor: int = 32, cross_spatial: bool = True):
        super().__init__()
        _check_divisible("EMA", c1, factor, f"factor={factor} groups")
        self.groups = factor
        self.cross_spatial = bool(cross_spatial)
        c = c1 // factor
        self.gn = nn.GroupNorm(c, c)
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        g = x.reshape(b * self.groups, ch // self.groups, h, w)
        # 1x1 branch: pool along W and along H, encode both with one shared 1x1 conv
        pooled = torch.cat((g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)), 2)
        gate_h, gate_w = self.conv1x1(pooled).split((h, w), 2)
        x1 = self.gn(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(g)
        if not self.cross_spatial:  # ablation EMA_no: branches averaged, no cross-spatial learning
            return (g * ((x1 + x2) / 2).sigmoid()).reshape(b, ch, h, w)
        # cross-spatial learning: each branch's global descriptor weights the other branch's pixels
        d1 = x1.mean((2, 3)).softmax(-1).unsqueeze(1)  # (bg, 1, c)
        d2 = x2.mean((2, 3)).softmax(-1).unsqueeze(1)
        weights = d1 @ x2.flatten(2) + d2 @ x1.flatten(2)  # (bg, 1, hw)
        return (g * weights.reshape(-1, 1, h, w).sigmoid()).reshape(b, ch, h, w)


class CA(nn.Module):
    """Coordinate Attention (Hou et al., CVPR 2021).

    Pooling along each spatial axis keeps positions on the other; a shared 1x1 bottleneck then two
    1x1 convs give direction-aware gates ``a_h`` and ``a_w``.
    """

    def __init__(self, c1: int, reduction: int = 32):
        super().__init__()
        mip = max(8, c1 // reduction)
        self.conv1 = nn.Conv2d(c1, mip, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, c1, kernel_size=1)
        self.conv_w = nn.Conv2d(mip, c1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        pooled = torch.cat((x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)), 2)
        y_h, y_w = self.act(self.bn1(self.conv1(pooled))).split((h, w), 2)
        return x * self.conv_h(y_h).sigmoid() * self.conv_w(y_w.transpose(2, 3)).sigmoid()


class ChannelGate(nn.Module):
    """CBAM's channel attention: a shared bias-free MLP over average- and max-pooled descriptors."""

    def __init__(self, c1: int, ratio: int = 16):
        super().__init__()
        if c1 < ratio:
            raise ValueError(f"CBAM: {c1} input channels are fewer than ratio={ratio}; use ratio <= {c1}")
        self.fc1 = nn.Conv2d(c1, c1 // ratio, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(c1 // ratio, c1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.relu(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * (avg + mx).sigmoid()


class SpatialGate(nn.Module):
    """CBAM's spatial attention: a k x k conv over the channel-mean and channel-max maps."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv(torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)).sigmoid()


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018).

    A channel gate (shared MLP over avg- and max-pooling) followed by a spatial gate (7x7 conv).
    """

    def __init__(self, c1: int, ratio: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel_attention = ChannelGate(c1, ratio)
        self.spatial_attention = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))


class SA(nn.Module):
    """Shuffle Attention (Zhang & Yang, ICASSP 2021).

    Per group, half the channels get a channel gate (global average) and half a spatial gate
    (GroupNorm); the halves are concatenated and channels shuffled so groups exchange information.
    """

    def __init__(self, c1: int, groups: int = 64):
        super().__init__()
        _check_divisible("SA", c1, 2 * groups, f"{groups} groups of two halves")
        self.groups = groups
        c = c1 // (2 * groups)
        self.gn = nn.GroupNorm(c, c)
        self.cweight = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, c, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        x_c, x_s = x.reshape(b * self.groups, ch // self.groups, h, w).chunk(2, 1)
        x_c = x_c * (self.cweight * x_c.mean((2, 3), keepdim=True) + self.cbias).sigmoid()
        x_s = x_s * (self.sweight * self.gn(x_s) + self.sbias).sigmoid()
        out = torch.cat((x_c, x_s), 1).reshape(b, 2, ch // 2, h, w)
        return out.transpose(1, 2).reshape(b, ch, h, w)  # channel shuffle, 2 groups


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: the odd size nearest to |log2(C) + b| / gamma (rounded up to odd)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al., CVPR 2020).

    Global average pooling then a 1D convolution across neighbouring channels (kernel adapted to C),
    without dimensionality reduction, gives the channel gate.
    """

    def __init__(self, c1: int, k_size: int | None = None):
        super().__init__()
        k = eca_kernel_size(c1) if k_size is None else k_size
        if k % 2 == 0 or k < 1:
            raise ValueError(f"ECA: k_size must be a positive odd number, got {k}")
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # (b, 1, c): convolve along channels
        return x * y.transpose(1, 2).unsqueeze(-1).sigmoid()


class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018): global average -> bottleneck MLP -> channel gate."""

    def __init__(self, c1: int, ratio: int = 16):
        super().__init__()
        if c1 < ratio:
            raise ValueError(f"SE: {c1} input channels are fewer than ratio={ratio}; use ratio <= {c1}")
        self.fc1 = nn.Conv2d(c1, c1 // ratio, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(c1 // ratio, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))).sigmoid()


# Name -> class. Aliases are the names the original forks use in their YAMLs.
ATTENTION: dict[str, type[nn.Module]] = {
    "EMA": EMA,
    "CA": CA, "CoordAtt": CA,
    "CBAM": CBAM,
    "SA": SA, "ShuffleAttention": SA,
    "ECA": ECA, "ECAAttention": ECA,
    "SE": SE, "SEAttention": SE,
}


def build_attention(name: str, c1: int, *args, **kwargs) -> nn.Module:
    """Build an attention module by name (case-insensitive): ``build_attention("ema", 256)``."""
    lookup = {k.lower(): v for k, v in ATTENTION.items()}
    if name.lower() not in lookup:
        raise ValueError(f"unknown attention module '{name}'; choose one of {sorted(set(ATTENTION))}")
    return lookup[name.lower()](c1, *args, **kwargs)
