"""Building blocks of YOLOv5 (v6.0 numerics).

Every block is an ``nn.Module`` whose constructor starts with the input channel count ``c1``.
Attribute names follow YOLOv5 (``conv``/``bn``/``act``, ``cv1``..``cv3``, ``m``) so that state dicts
saved by the original code load with ``strict=True``.

The attention modules are in ``models/attention/`` (one registry, ``ATTENTION``); their names remain importable
from this module for older code.
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
    """Conv2d (no bias) + BatchNorm2d + SiLU: the standard YOLOv5 convolution.

    ``act=True`` gives each layer its own ``Conv.default_act()`` (SiLU; ``parse_model`` swaps the factory while it
    builds a YAML with an ``activation:`` key), ``False`` no activation, a module that module.
    """

    default_act = nn.SiLU  # factory called once per layer

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = Conv.default_act() if act is True else (act if isinstance(act, nn.Module) else nn.Identity())

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
    """CSP bottleneck with three convolutions: two 1x1 branches, n bottlenecks on one, fused by a 1x1.

    Pruned models (the EMA paper's repository) set the branch widths apart: ``e`` may be a pair (bottleneck branch,
    other branch) of fractions of ``base`` (default ``c2``), and ``rates`` gives each bottleneck's own expansion.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
                 e: float | tuple[float, float] = 0.5, *, base: int | None = None, rates: list[float] | None = None):
        super().__init__()
        e1, e2 = (e, e) if isinstance(e, (int, float)) else e
        base = c2 if base is None else base
        c_, c_side = int(base * e1), int(base * e2)
        rates = [1.0] * n if rates is None else rates
        if len(rates) < n:
            raise ValueError(f"C3: {len(rates)} bottleneck rates for {n} bottlenecks")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_side, 1, 1)
        self.cv3 = Conv(c_ + c_side, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=rates[i]) for i in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv3/v5.0): parallel max-pools of several kernel sizes."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13), e: float = 0.5):
        super().__init__()
        c_ = int(c1 * e)  # e < 0.5 in pruned models
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP (v6.0): three chained k x k max-pools, equal to SPP(k, 2k-1, 3k-2); cv1 keeps its SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 5, e: float = 0.5):
        super().__init__()
        c_ = int(c1 * e)  # e < 0.5 in pruned models
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


# ----------------------------------------------------------------------------------------------------
# Further YOLOv5 blocks (the hub models: P6/P7, YOLOv3, Ghost, Transformer...); YOLOv5's names and layouts
# ----------------------------------------------------------------------------------------------------


class DWConv(Conv):
    """Depth-wise Conv: groups = gcd(c1, c2), so one filter group per channel when c1 == c2."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), act=act)


class CrossConv(nn.Module):
    """A k x k convolution factored into 1 x k then k x 1 (stride s on each axis), with an optional residual."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, e: float = 1.0, shortcut: bool = False):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, (1, k), (1, s))
        self.cv2 = Conv(c_, c2, (k, 1), (s, 1), g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    """The CSP bottleneck of YOLOv5 v1-v5 (Wang et al., CSPNet): bottlenecks on one branch, a bare 1x1 on the other.

    Both branches end in plain convolutions that share one BatchNorm + LeakyReLU(0.1) over their concatenation (the
    activation of v6.0 and earlier; v6.1 changed it to SiLU), then a Conv fuses them.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = nn.LeakyReLU(0.1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat((self.cv3(self.m(self.cv1(x))), self.cv2(x)), 1)
        return self.cv4(self.act(self.bn(y)))


class C3x(C3):
    """C3 whose bottlenecks are CrossConvs (1 x 3 then 3 x 1)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(CrossConv(c_, c_, 3, 1, g, 1.0, shortcut) for _ in range(n)))


class TransformerLayer(nn.Module):
    """A ViT encoder layer without LayerNorms (Dosovitskiy et al., 2021): q/k/v projections, multi-head attention and
    a two-layer linear feed-forward, each with a residual. Tokens are ``(sequence, batch, channels)``.
    """

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        if c % num_heads:
            raise ValueError(f"TransformerLayer: {c} channels cannot be split into {num_heads} heads; "
                             f"use a channel count that is a multiple of {num_heads}")
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ma(self.q(x), self.k(x), self.v(x), need_weights=False)[0]
        return x + self.fc2(self.fc1(x))


class TransformerBlock(nn.Module):
    """Feature map -> one token per pixel (plus a learned linear position embedding) -> transformer layers -> map.

    A 1x1 Conv first adapts the channels when ``c1 != c2``. ``layer`` is the class of the transformer layers.
    """

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int, layer: type[nn.Module] | None = None):
        super().__init__()
        layer = layer or TransformerLayer
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(layer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        tokens = x.flatten(2).permute(2, 0, 1)  # (h*w, b, c)
        return self.tr(tokens + self.linear(tokens)).permute(1, 2, 0).reshape(b, self.c2, h, w)


class C3TR(C3):
    """C3 whose bottlenecks are replaced by a TransformerBlock of ``n`` layers and 4 heads."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n)


class C3SPP(C3):
    """C3 whose bottlenecks are replaced by an SPP block (kernels ``k``)."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13), n: int = 1, shortcut: bool = True,
                 g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = SPP(c_, c_, k)


class GhostConv(nn.Module):
    """Ghost convolution (Han et al., GhostNet, CVPR 2020): half the output channels from a Conv, the other half
    generated cheaply from those by a depth-wise 5x5 Conv.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


class GhostBottleneck(nn.Module):
    """GhostNet's bottleneck: GhostConv -> (depth-wise k x k Conv when s == 2) -> linear GhostConv, plus a shortcut
    (identity, or depth-wise + 1x1 Convs when s == 2).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"GhostBottleneck: stride must be 1 or 2, got {s}")
        if s == 1 and c1 != c2:
            raise ValueError(f"GhostBottleneck: with stride 1 the input and output channels must match ({c1} != {c2})")
        c_ = c2 // 2
        self.conv = nn.Sequential(
            GhostConv(c1, c_, 1, 1),
            DWConv(c_, c_, k, s, act=False) if s == 2 else nn.Identity(),
            GhostConv(c_, c2, 1, 1, act=False),
        )
        self.shortcut = (nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False)) if s == 2
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


class C3Ghost(C3):
    """C3 whose bottlenecks are GhostBottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))


class Contract(nn.Module):
    """Space-to-depth by ``gain``: (b, c, h, w) -> (b, c * gain**2, h / gain, w / gain)."""

    def __init__(self, gain: int = 2):
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.gain
        x = x.reshape(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4)  # (b, s, s, c, h/s, w/s)
        return x.reshape(b, c * s * s, h // s, w // s)


class Expand(Contract):
    """Depth-to-space by ``gain``, the inverse of Contract: (b, c, h, w) -> (b, c / gain**2, h * gain, w * gain)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.gain
        x = x.reshape(b, s, s, c // s**2, h, w).permute(0, 3, 4, 1, 5, 2)  # (b, c/s^2, h, s, w, s)
        return x.reshape(b, c // s**2, h * s, w * s)


class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension (channels by default)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


# ----------------------------------------------------------------------------------------------------
# Attention modules live in models/attention/; these names stay importable from here for older code.
# ----------------------------------------------------------------------------------------------------


def __getattr__(name: str):
    """``from models.common import EMA`` (older code) resolves to ``models.attention.EMA`` on first use."""
    import models.attention

    if name in models.attention.__all__:
        return getattr(models.attention, name)
    raise AttributeError(f"module 'models.common' has no attribute '{name}'")
