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

from models.ema_factored import factored_ema


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
# Attention modules
# ----------------------------------------------------------------------------------------------------


def _check_divisible(name: str, channels: int, divisor: int, what: str) -> None:
    if channels < divisor or channels % divisor:
        raise ValueError(
            f"{name}: {channels} input channels cannot be split into {what}; "
            f"use a channel count that is a multiple of {divisor}, or change the module's option")


class EMA(nn.Module):
    """Efficient Multi-Scale Attention (Ouyang et al., ICASSP 2023).

    Channels are split into ``factor`` groups; a shared 1x1 branch (directional pooling) and a 3x3
    branch are combined by cross-spatial learning into one per-pixel gate for each group.

    Two exact formulations of the same function (the tests assert they agree, forward and gradients):

    * ``forward_dense``, the paper's: groups folded into the batch, both branches materialised;
    * ``forward_factored``, which never runs the dense ``c x c`` 3x3 conv of each group (``c = C / factor``):
      the GroupNorm branch ``x1`` normalises every channel, so its channel means are ``gn.bias`` and its softmax
      descriptor ``d1`` is ``softmax(gn.bias)``; the 3x3 branch ``x2`` then enters only through (a) its channel
      means, which are the kernel applied to the per-tap window means of the input, and (b) its ``d1``-weighted
      channel sum, one depthwise 3x3 conv with the ``d1``-combined kernel summed over each group. That costs 9
      multiply-adds per input value instead of ``9 c``. ``models/ema_factored.py`` runs it, forward and backward,
      as fused C kernels on float32 CPU tensors (``models/ema_kernel.c``: one pass per group of one image, in
      cache) and as PyTorch ops with a hand-written backward elsewhere (CUDA, other dtypes, no C compiler).

    ``forward`` picks the dense form on feature maps of fewer than ``DENSE_BELOW`` positions (batch x height x
    width: 5x5 maps and smaller, where the factored form's PyTorch ops cost as much as they save) and the factored
    one above (2-5x faster than the dense form at yolov5s's and yolov5x-p2's shapes on CPU with the C kernels,
    1.1-1.6x with PyTorch ops; ``python benchmarks.py --modules``).
    Traced exports take ``TRACED`` (the dense form, valid for every input size): runtimes fuse its few large
    operations well and INT8 quantizers (NNCF) handle its convolutions, while the factored form uses constants
    cached per feature-map size and is meant for eager PyTorch.
    """

    DENSE_BELOW = 36
    TRACED = "dense"  # exports (ONNX, TorchScript, OpenVINO) get the paper's graph, which runtimes fuse and quantize

    def __init__(self, c1: int, factor: int = 32):
        super().__init__()
        _check_divisible("EMA", c1, factor, f"factor={factor} groups")
        self.groups = factor
        c = c1 // factor
        self.gn = nn.GroupNorm(c, c)
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def formulation(self, x: torch.Tensor) -> str:
        """``dense`` or ``factored``: the form ``forward`` uses for an input shaped like ``x`` (``TRACED`` if traced)."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.TRACED
        b, _, h, w = x.shape
        return "dense" if b * h * w < self.DENSE_BELOW else "factored"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_dense(x) if self.formulation(x) == "dense" else self.forward_factored(x)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's formulation."""
        b, ch, h, w = x.shape
        g = x.reshape(b * self.groups, ch // self.groups, h, w)
        # 1x1 branch: pool along W and along H, encode both with one shared 1x1 conv
        pooled = torch.cat((g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)), 2)
        gate_h, gate_w = self.conv1x1(pooled).split((h, w), 2)
        x1 = self.gn(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(g)
        # cross-spatial learning: each branch's global descriptor weights the other branch's pixels
        d1 = x1.mean((2, 3)).softmax(-1).unsqueeze(1)  # (bg, 1, c)
        d2 = x2.mean((2, 3)).softmax(-1).unsqueeze(1)
        weights = d1 @ x2.flatten(2) + d2 @ x1.flatten(2)  # (bg, 1, hw)
        return (g * weights.reshape(-1, 1, h, w).sigmoid()).reshape(b, ch, h, w)

    def forward_factored(self, x: torch.Tensor) -> torch.Tensor:
        """The same function without the dense 3x3 conv, with a hand-written backward (``models/ema_factored.py``)."""
        return factored_ema(x, self.conv1x1.weight, self.conv1x1.bias, self.gn.weight, self.gn.bias, self.gn.eps,
                            self.conv3x3.weight, self.conv3x3.bias, self.groups)


def count_ema_ops(m: EMA, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
    """``thop`` rule for ``EMA``: the multiply-adds its submodules do not already count.

    thop counts each submodule it sees called: in the dense form the GroupNorm and both convs. The factored form
    calls none of them, so this counts its work as thop would count the modules: the 1x1 conv on the pooled
    descriptors (a batched matmul), the GroupNorm (4 per value, thop's rule for an affine norm), the depthwise 3x3
    conv (9 per value) and the ``d2``-weighted channel sum (1 per value). Pass ``custom_ops=THOP_CUSTOM_OPS`` to
    ``thop.profile``.
    """
    x = inputs[0]
    if m.formulation(x) == "factored":
        b, ch, h, w = x.shape
        m.total_ops += torch.DoubleTensor([b * ch * (h + w) * m.gn.num_channels + (4 + 9 + 1) * x.numel()])


# thop rules for modules whose forward uses functional ops (count_flops passes these to thop.profile)
THOP_CUSTOM_OPS: dict[type[nn.Module], object] = {EMA: count_ema_ops}

# Straightforward formulation of each module whose forward may use a faster equivalent one (tests and
# ``benchmarks.py --modules`` compare the two); the other modules' forward is their straightforward formula.
REFERENCE_FORWARD: dict[type[nn.Module], object] = {EMA: EMA.forward_dense}


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
