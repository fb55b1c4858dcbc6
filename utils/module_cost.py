"""What an attention module costs at a given input: parameters and GFLOPs with every matrix product counted.

``thop`` counts only the layers it has hooks for, so a module whose work is a functional matmul or einsum (EMA's
cross-spatial product, self-attention, covariance pooling) would come out nearly free. PyTorch's ``FlopCounterMode``
counts at the operator level instead: every convolution, ``mm``/``bmm``/``einsum`` product and fused attention,
as 2 FLOPs per multiply-add (the convention of the model table's ``2 x thop MACs``). Element-wise arithmetic,
normalisation, pooling and softmax are not counted (the latency columns show them).
"""

from __future__ import annotations

from copy import deepcopy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from models.attention import ATTENTION, build_attention


def catalogue_names() -> list[str]:
    """One registry name per attention class (its class name), in registry order."""
    return list(dict.fromkeys(cls.__name__ for cls in ATTENTION.values()))


def forward_gflops(module: nn.Module, x: torch.Tensor) -> float:
    """GFLOPs of one forward pass of ``module`` on ``x`` (convolutions and all matrix products)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / 1e9


def module_cost(name: str, channels: int, size: int | tuple[int, int], batch: int = 1, **options) -> dict:
    """Parameters, forward GFLOPs and whether it trains at this batch size, of ``build_attention(name, channels,
    **options)`` on a ``(batch, channels, *size)`` input: ``{"params": n, "gflops": g, "trains": bool}``."""
    h, w = (size, size) if isinstance(size, int) else size
    module = build_attention(name, channels, **options).eval()
    x = torch.zeros(batch, channels, h, w)
    return {"params": sum(p.numel() for p in module.parameters()), "gflops": forward_gflops(module, x),
            "trains": trains_at(module, x)}


def trains_at(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` runs in training mode on ``x``: BatchNorm over pooled vectors (SK, BAM, CoT, as in their
    papers) needs at least two images per batch. Checked on a copy, so running statistics stay untouched."""
    try:
        with torch.no_grad():
            deepcopy(module).train()(x)
    except ValueError:
        return False
    return True
