"""Blocks of the EMA paper's repository (YOLOonMe/EMA-attention-module), under the names its YAMLs use.

That repository is a YOLOv5 v6.0 fork whose ``models/accModels``, ``lightModels`` and ``prunModels`` YAMLs name blocks
YOLOv5 does not have (a Swin-transformer C3, MobileNetV3 / ShuffleNetV2 / EfficientNet-lite / PP-LCNet backbone
blocks) and give some YOLOv5 names a different block: its ``C3TR`` is TPH-YOLOv5's transformer (LayerNorms and a 4x
feed-forward), its ``GhostConv``/``GhostBottleneck`` follow GhostNet's own code, and its ``C3`` takes the unpruned
width (pruned YAMLs). ``models/yolo.py`` builds a YAML with these blocks when it says ``blocks: EMA-attention-module``
or names a block only that repository defines (``PAPER_BLOCKS``). Attribute names follow that repository, so its
state_dicts load with ``strict=True``. Its attention modules (CA, CBAM, EMA) are the ones in ``models/common.py``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.common import C3, Conv, TransformerBlock


def _no_op() -> nn.Module:
    """An empty ``nn.Sequential``: the repository keeps one where an optional layer is off, so indices stay put."""
    return nn.Sequential()


class SeBlock(nn.Module):
    """Squeeze-and-excitation as the repository writes it: global average, 1x1 conv down by ``reduction``, ReLU,
    1x1 conv up, sigmoid gate (in an ``Excitation`` sequence with named layers)."""

    def __init__(self, c1: int, reduction: int = 4):
        super().__init__()
        self.Excitation = nn.Sequential(OrderedDict([
            ("FC1", nn.Conv2d(c1, c1 // reduction, 1)), ("ReLU", nn.ReLU()),
            ("FC2", nn.Conv2d(c1 // reduction, c1, 1)), ("Sigmoid", nn.Sigmoid()),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.Excitation(x.mean((2, 3), keepdim=True))


# ----------------------------------------------------------------------------------------------------
# C3 variants
# ----------------------------------------------------------------------------------------------------


class PrunableC3(C3):
    """The repository's C3: ``C3(c1, c2, c2o, n, shortcut, g, e=(0.5, 0.5), rate)``; the hidden widths are fractions
    ``e`` of the unpruned width ``c2o``, each bottleneck has its own expansion ``rate`` (1.0 unless pruned)."""

    def __init__(self, c1: int, c2: int, c2o: int, n: int = 1, shortcut: bool = True, g: int = 1,
                 e: float | tuple[float, float] = (0.5, 0.5), rate: list[float] | None = None):
        super().__init__(c1, c2, n, shortcut, g, e, base=c2o, rates=rate)


class TPHTransformerLayer(nn.Module):
    """TPH-YOLOv5's transformer layer (Zhu et al., 2021): pre-LayerNorm multi-head attention on q/k/v projections,
    then a pre-LayerNorm 4x feed-forward with ReLU and dropout 0.1, each with a residual."""

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        if c % num_heads:
            raise ValueError(f"C3TR: {c} channels cannot be split into {num_heads} heads; "
                             f"use a channel count that is a multiple of {num_heads}")
        self.layernorm1 = nn.LayerNorm(c)
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.layernorm2 = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 4 * c, bias=False)
        self.fc2 = nn.Linear(4 * c, c, bias=False)
        self.dropout = nn.Dropout(0.1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layernorm1(x)
        x = x + self.ma(self.q(y), self.k(y), self.v(y), need_weights=False)[0]
        y = self.dropout(self.act(self.fc1(self.layernorm2(x))))
        return x + self.dropout(self.fc2(y))


class C3TPH(C3):
    """The repository's ``C3TR``: C3 whose bottlenecks are a TransformerBlock of ``n`` TPH layers (4 heads)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n, layer=TPHTransformerLayer)


class WindowAttention(nn.Module):
    """Swin's window attention (Liu et al., ICCV 2021): multi-head self-attention inside each window, plus a learned
    bias per relative position of the two tokens."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        yx = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        rel = yx.flatten(1)[:, :, None] - yx.flatten(1)[:, None, :] + (window_size - 1)  # (2, N, N) offsets >= 0
        self.register_buffer("relative_position_index", rel[0] * (2 * window_size - 1) + rel[1])
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (windows x batch, N tokens, C); ``mask``: (windows, N, N) additive, or None."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b // nw, nw, self.num_heads, n, n) + mask[None, :, None]).view(b, self.num_heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class SwinMlp(nn.Module):
    """The feed-forward of a Swin layer: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerLayer(nn.Module):
    """One Swin layer on a feature map: LayerNorm, (shifted) window attention, LayerNorm, 4x MLP, with residuals.

    The map is zero-padded on the right and bottom to whole windows and cropped back. With ``shift_size > 0`` the map
    is rolled by it first and tokens from different regions of the roll are masked from each other.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 8, shift_size: int = 0, mlp_ratio: float = 4.0):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"SwinTransformerLayer: shift_size {shift_size} must be in [0, window_size {window_size})")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (windows x B, window_size**2, C)."""
        b, h, w, c = x.shape
        ws = self.window_size
        return x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)

    def _shift_mask(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """(windows, N, N): -100 between tokens of different regions of the rolled map, 0 within a region (device and
        dtype of ``like``)."""
        ws, s = self.window_size, self.shift_size

        def regions(size: int) -> torch.Tensor:
            i = torch.arange(size, device=like.device)
            return (i >= size - ws).long() + (i >= size - s).long()

        label = regions(h)[:, None] * 3 + regions(w)[None, :]
        win = self._windows(label[None, :, :, None]).squeeze(-1)  # (windows, N)
        return (win[:, None, :] != win[:, :, None]).to(like.dtype) * -100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h0, w0 = x.shape
        ws = self.window_size
        x = F.pad(x, (0, (ws - w0 % ws) % ws, 0, (ws - h0 % ws) % ws))
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        y = self.norm1(tokens).view(b, h, w, c)
        if self.shift_size:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        mask = self._shift_mask(h, w, y) if self.shift_size else None
        y = self.attn(self._windows(y), mask)
        y = y.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift_size:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        tokens = tokens + y.reshape(b, h * w, c)
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.permute(0, 2, 1).reshape(b, c, h, w)[:, :, :h0, :w0]


class SwinTransformerBlock(nn.Module):
    """``num_layers`` Swin layers alternating plain and half-window-shifted windows (a 1x1 Conv first if c1 != c2)."""

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int, window_size: int = 8):
        super().__init__()
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.blocks = nn.Sequential(*(SwinTransformerLayer(c2, num_heads, window_size, window_size // 2 if i % 2 else 0)
                                      for i in range(num_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x if self.conv is None else self.conv(x))


class C3STR(C3):
    """C3 whose bottlenecks are a SwinTransformerBlock of ``n`` layers, one head per 32 hidden channels, windows 8."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        if c_ < 32:
            raise ValueError(f"C3STR: {c_} hidden channels give no attention head (one per 32 channels); "
                             f"give it at least {2 * 32} output channels")
        self.m = SwinTransformerBlock(c_, c_, c_ // 32, n)


# ----------------------------------------------------------------------------------------------------
# GhostNet blocks (GhostNet's own layout, not YOLOv5's)
# ----------------------------------------------------------------------------------------------------


class GhostModule(nn.Module):
    """The repository's ``GhostConv`` (GhostNet, Han et al., CVPR 2020): a 1x1 Conv makes half the channels and a
    depth-wise 3x3 Conv makes the other half from them. ``k`` and ``s`` are accepted and ignored, as there."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        c_ = c2 // 2
        self.primary_conv = Conv(c1, c_, 1, 1, act=act)
        self.cheap_operation = Conv(c_, c_, 3, 1, 1, c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary_conv(x)
        return torch.cat((y, self.cheap_operation(y)), 1)


class GhostNetBottleneck(nn.Module):
    """The repository's ``GhostBottleneck(c1, c2, midc, k, s, use_se)``: GhostConv to ``midc`` channels, a depth-wise
    3x3 stride-2 Conv when ``s == 2``, optional squeeze-excitation, linear GhostConv to ``c2``; the shortcut is the
    input, or depth-wise 3x3 + 1x1 Convs when the shape changes. (``k`` is accepted and unused, as there.)"""

    def __init__(self, c1: int, c2: int, midc: int, k: int = 5, s: int = 1, use_se: bool = False):
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"GhostBottleneck: stride must be 1 or 2, got {s}")
        self.conv = nn.Sequential(
            GhostModule(c1, midc, 1, 1),
            Conv(midc, midc, 3, 2, 1, midc, act=False) if s == 2 else nn.Identity(),
            SeBlock(midc) if use_se else _no_op(),
            GhostModule(midc, c2, 1, 1, act=False),
        )
        self.shortcut = (nn.Identity() if c1 == c2 and s == 1 else
                         nn.Sequential(Conv(c1, c1, 3, s, 1, c1, act=False), Conv(c1, c2, 1, 1, act=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


# ----------------------------------------------------------------------------------------------------
# Light-weight backbones
# ----------------------------------------------------------------------------------------------------


def _conv_bn(c1: int, c2: int, k: int, s: int = 1, g: int = 1, bias: bool = False) -> list[nn.Module]:
    """[Conv2d with 'same' padding, BatchNorm2d]: the pair the backbone blocks below are sequences of."""
    return [nn.Conv2d(c1, c2, k, s, (k - 1) // 2, groups=g, bias=bias), nn.BatchNorm2d(c2)]


class conv_bn_hswish(nn.Module):  # noqa: N801  (the YAML name)
    """MobileNetV3's stem: 3x3 Conv2d (stride s) + BatchNorm + hard-swish."""

    def __init__(self, c1: int, c2: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MobileNetV3_InvertedResidual(nn.Module):  # noqa: N801
    """MobileNetV3's block (Howard et al., ICCV 2019): 1x1 expansion to ``hidden_dim`` (skipped when equal to the
    input), depth-wise k x k, optional squeeze-excitation, linear 1x1 projection; residual when stride 1 and
    ``c1 == c2``. ``use_hs`` picks hard-swish over ReLU."""

    def __init__(self, c1: int, c2: int, hidden_dim: int, kernel_size: int, stride: int, use_se: bool, use_hs: bool):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MobileNetV3_InvertedResidual: stride must be 1 or 2, got {stride}")
        self.identity = stride == 1 and c1 == c2
        act = nn.Hardswish if use_hs else nn.ReLU
        se = SeBlock(hidden_dim) if use_se else _no_op()
        dw = _conv_bn(hidden_dim, hidden_dim, kernel_size, stride, hidden_dim)
        project = _conv_bn(hidden_dim, c2, 1)
        if c1 == hidden_dim:
            layers = [*dw, act(), se, *project]
        else:
            layers = [*_conv_bn(c1, hidden_dim, 1), act(), *dw, se, act(), *project]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.identity else self.conv(x)


class Conv_maxpool(nn.Module):  # noqa: N801
    """ShuffleNetV2's stem: 3x3 stride-2 Conv2d + BatchNorm + ReLU, then a 3x3 stride-2 max-pool."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn(c1, c2, 3, 2), nn.ReLU())
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.conv(x))


class ShuffleNetV2_InvertedResidual(nn.Module):  # noqa: N801
    """ShuffleNetV2's unit (Ma et al., ECCV 2018): stride 1 splits the channels and transforms one half; stride 2
    transforms two copies of the input (depth-wise convs strided); halves are concatenated and shuffled."""

    def __init__(self, c1: int, c2: int, stride: int):
        super().__init__()
        half = c2 // 2
        if stride not in (1, 2):
            raise ValueError(f"ShuffleNetV2_InvertedResidual: stride must be 1 or 2, got {stride}")
        if stride == 1 and c1 != 2 * half:
            raise ValueError(f"ShuffleNetV2_InvertedResidual: with stride 1 the input ({c1}) and output ({c2}) "
                             f"channels must be equal and even")
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(*_conv_bn(c1, c1, 3, 2, c1, bias=True), *_conv_bn(c1, half, 1), nn.ReLU())
        else:
            self.branch1 = _no_op()
        self.branch2 = nn.Sequential(*_conv_bn(c1 if stride == 2 else half, half, 1), nn.ReLU(),
                                     *_conv_bn(half, half, 3, stride, half, bias=True),
                                     *_conv_bn(half, half, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, 1)
            y = torch.cat((x1, self.branch2(x2)), 1)
        else:
            y = torch.cat((self.branch1(x), self.branch2(x)), 1)
        b, c, h, w = y.shape
        return y.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)  # shuffle the two halves


class stem(nn.Module):  # noqa: N801
    """EfficientNet-lite's stem: 3x3 stride-2 Conv2d + BatchNorm + ReLU6."""

    def __init__(self, c1: int, c2: int, act: str = "ReLU6"):
        super().__init__()
        if act != "ReLU6":
            raise ValueError(f"stem: activation '{act}' is not supported; use 'ReLU6'")
        self.conv = nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConvBlock(nn.Module):
    """EfficientNet(-lite)'s mobile inverted bottleneck (Tan & Le, ICML 2019): 1x1 expansion by ``expand_ratio``
    (none when 1), depth-wise k x k, optional squeeze-excitation, linear 1x1 projection, ReLU6; residual when stride 1
    and ``c1 == c2``. ``drop_connect_rate`` is kept for the YAML; the repository never applies it in a forward."""

    def __init__(self, c1: int, c2: int, k: int, s: int, expand_ratio: int, drop_connect_rate: float = 0.0,
                 has_se: bool = False):
        super().__init__()
        mid = c1 * expand_ratio
        self.expand_ratio, self.has_se, self.drop_connect_rate = expand_ratio, has_se, drop_connect_rate
        self.residual = s == 1 and c1 == c2
        if expand_ratio != 1:
            self._expand_conv = nn.Conv2d(c1, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, momentum=0.01, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, s, (k - 1) // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, momentum=0.01, eps=1e-3)
        if has_se:
            self.se = SeBlock(mid, 4)
        self._project_conv = nn.Conv2d(mid, c2, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c2, momentum=0.01, eps=1e-3)
        self._relu = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._relu(self._bn0(self._expand_conv(x))) if self.expand_ratio != 1 else x
        y = self._relu(self._bn1(self._depthwise_conv(y)))
        if self.has_se:
            y = self.se(y)
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class DepthSepConv(nn.Module):
    """PP-LCNet's block (Cui et al., 2021): depth-wise k x k Conv2d + BatchNorm + hard-swish, optional
    squeeze-excitation (reduction 16), 1x1 Conv2d + BatchNorm + hard-swish."""

    def __init__(self, c1: int, c2: int, dw_size: int, stride: int, use_se: bool):
        super().__init__()
        self.dw_sp = nn.Sequential(*_conv_bn(c1, c1, dw_size, stride, c1), nn.Hardswish(),
                                   SeBlock(c1, reduction=16) if use_se else _no_op(),
                                   *_conv_bn(c1, c2, 1), nn.Hardswish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw_sp(x)


# Name in the repository's YAMLs -> block. Names shared with YOLOv5 whose block differs there: C3, C3TR, GhostConv,
# GhostBottleneck. The others exist only there.
PAPER_BLOCKS: dict[str, type[nn.Module]] = {
    "C3": PrunableC3, "C3TR": C3TPH, "C3STR": C3STR,
    "GhostConv": GhostModule, "GhostBottleneck": GhostNetBottleneck,
    "conv_bn_hswish": conv_bn_hswish, "MobileNetV3_InvertedResidual": MobileNetV3_InvertedResidual,
    "Conv_maxpool": Conv_maxpool, "ShuffleNetV2_InvertedResidual": ShuffleNetV2_InvertedResidual,
    "stem": stem, "MBConvBlock": MBConvBlock, "DepthSepConv": DepthSepConv, "SeBlock": SeBlock,
}
