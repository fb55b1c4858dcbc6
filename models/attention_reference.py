"""Straightforward (unoptimised) forward passes of the attention modules whose ``forward`` was rewritten for speed.

``EMA.forward`` in ``models/common.py`` is an exact algebraic rewrite of ``ema_reference`` below. The other
modules' ``forward`` *is* their straightforward formula (a rewrite of SA without its copies was measured and was
slower on CPU; CA, CBAM, ECA and SE each cost well under 1% of a yolov5s forward pass).

This module keeps the formulation that reads like the paper (groups folded into the batch, every branch
materialised) so that

* the tests can assert that each optimised module equals its straightforward formula (forward and gradients),
* ``python benchmarks.py --modules`` can time each optimised module against it, so a regression shows as a number.

Each reference takes the module (for its parameters) and the input, and returns what the module's original
``forward`` returned. ``REFERENCE_FORWARD`` maps module classes to their reference.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from models.common import EMA


def ema_reference(m: EMA, x: torch.Tensor) -> torch.Tensor:
    """EMA as written in the paper's reference code: groups folded into the batch, both branches materialised."""
    b, ch, h, w = x.shape
    g = x.reshape(b * m.groups, ch // m.groups, h, w)
    # 1x1 branch: pool along W and along H, encode both with one shared 1x1 conv
    pooled = torch.cat((g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)), 2)
    gate_h, gate_w = m.conv1x1(pooled).split((h, w), 2)
    x1 = m.gn(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
    x2 = m.conv3x3(g)
    # cross-spatial learning: each branch's global descriptor weights the other branch's pixels
    d1 = x1.mean((2, 3)).softmax(-1).unsqueeze(1)  # (bg, 1, c)
    d2 = x2.mean((2, 3)).softmax(-1).unsqueeze(1)
    weights = d1 @ x2.flatten(2) + d2 @ x1.flatten(2)  # (bg, 1, hw)
    return (g * weights.reshape(-1, 1, h, w).sigmoid()).reshape(b, ch, h, w)


REFERENCE_FORWARD: dict[type[nn.Module], Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    EMA: ema_reference,
}
