"""ResNet blocks shared by the classifiers (models/classify.py) and the detectors (models/yolo.py): YOLOv5's Conv with
a named activation, the ResNet bottleneck and basic block, each with an optional attention module of the registry on
its last BatchNorm output before the residual sum (where ECA-Net, NAM and CBAM place it)."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.attention import build_attention
from models.common import Conv


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish}


def make_attention(name: str | None, c1: int, *args) -> nn.Module:
    """An attention module of the registry by name (``None`` or ``''``: identity), for ``c1`` channels."""
    if not name:
        return nn.Identity()
    if not isinstance(name, str):
        raise ValueError(f"attention must be a module name such as EMA or CA, got {name!r}")
    return build_attention(name, c1, *args)


class ConvAct(Conv):
    """YOLOv5's Conv (conv, BatchNorm) with a named activation: ``relu``, ``relu6``, ``silu``, ``hardswish`` or
    ``none``, for networks that are not built on SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: str = "relu", g: int = 1):
        if str(act).lower() not in (*ACTIVATIONS, "none"):
            raise ValueError(f"unknown activation '{act}'; choose one of {', '.join(ACTIVATIONS)}, none")
        super().__init__(c1, c2, k, s, None, g, act=ACTIVATIONS[act.lower()]() if act.lower() != "none" else False)


class ResBottleneck(nn.Module):
    """ResNet bottleneck (v1.5: the stride on the 3x3), with an optional attention module on the block's last
    convolution output, before the residual sum (where the NAM/CBAM code used for Table 1 places it).

    Keyword options (a trailing mapping in the YAML row, e.g. ``[2048, 2, ECA, 7, {down: avg}]``): ``down="avg"``
    makes the projection shortcut ResNet-D's (a 2x2 average pool with the stride, then a stride-1 1x1 conv + BN;
    timm's ``avg_down``) instead of a strided 1x1 conv; ``widths=[c_a, c_b]`` sets the two hidden widths (after the
    first 1x1 and the 3x3 conv; default ``c2 * e`` both), as pruned networks have them."""

    def __init__(self, c1: int, c2: int, s: int = 1, attention: str | None = None, *args, e: float = 0.25,
                 down: str = "conv", widths: list[int] | None = None):
        super().__init__()
        if down not in ("conv", "avg"):
            raise ValueError(f"down must be conv or avg, got {down!r}")
        if widths is not None and not (isinstance(widths, (list, tuple)) and len(widths) == 2
                                       and all(_is_int(w) and w > 0 for w in widths)):
            raise ValueError(f"widths must be two positive hidden channel counts [c_a, c_b], got {widths!r}")
        ca, cb = widths or (int(c2 * e),) * 2
        self.cv1 = ConvAct(c1, ca, 1, 1, "relu")
        self.cv2 = ConvAct(ca, cb, 3, s, "relu")
        self.cv3 = ConvAct(cb, c2, 1, 1, "none")
        self.att = make_attention(attention, c2, *args)
        if s == 1 and c1 == c2:
            self.shortcut = nn.Identity()
        elif down == "avg":
            pool = nn.AvgPool2d(2, s, ceil_mode=True, count_include_pad=False) if s != 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, ConvAct(c1, c2, 1, 1, "none"))
        else:
            self.shortcut = ConvAct(c1, c2, 1, s, "none")
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.att(self.cv3(self.cv2(self.cv1(x)))) + self.shortcut(x))


class ResBasicBlock(nn.Module):
    """ResNet-18/34 basic block: two 3x3 convolutions (the stride on the first), an optional attention module on the
    second one's BatchNorm output before the residual sum (where ECA-Net puts its ECA module)."""

    def __init__(self, c1: int, c2: int, s: int = 1, attention: str | None = None, *args):
        super().__init__()
        self.cv1 = ConvAct(c1, c2, 3, s, "relu")
        self.cv2 = ConvAct(c2, c2, 3, 1, "none")
        self.att = make_attention(attention, c2, *args)
        self.shortcut = ConvAct(c1, c2, 1, s, "none") if s != 1 or c1 != c2 else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.att(self.cv2(self.cv1(x))) + self.shortcut(x))
