"""Attention modules that plug into YOLOv5 YAMLs, and their one registry.

Every module takes the input channel count first (``EMA(c1, ...)``) and returns a tensor of the input's shape, at
any input size. ``ATTENTION`` maps the names a YAML may use (aliases included: the spellings of the original forks)
to the classes; ``build_attention("cbam", 256)`` builds one by name, case-insensitively.

Each class says whether its output is its input times a weight (``gate = True``: ``utils/visualize.py`` draws that
weight as a heat map) or a new feature map (``gate = False``: residual self-attention, mixtures of branches).
"""

from __future__ import annotations

import torch.nn as nn

from models.attention.ca import CA
from models.attention.cbam import CBAM, ChannelGate, SpatialGate
from models.attention.eca import ECA, eca_kernel_size
from models.attention.ema import EMA
from models.attention.sa import SA
from models.attention.se import SE

# Name -> class. Aliases are the names the original forks and toolboxes use in their YAMLs.
ATTENTION: dict[str, type[nn.Module]] = {
    "EMA": EMA,
    "CA": CA, "CoordAtt": CA, "CoordAttention": CA,
    "CBAM": CBAM,
    "SA": SA, "ShuffleAttention": SA,
    "ECA": ECA, "ECAAttention": ECA,
    "SE": SE, "SEAttention": SE,
}


def build_attention(name: str, channels: int, *args, **options) -> nn.Module:
    """Build an attention module by name (case-insensitive): ``build_attention("ema", 256, factor=16)``."""
    lookup = {k.lower(): v for k, v in ATTENTION.items()}
    if name.lower() not in lookup:
        raise ValueError(f"unknown attention module '{name}'; known modules: {', '.join(sorted(ATTENTION))}")
    return lookup[name.lower()](channels, *args, **options)


__all__ = ["ATTENTION", "build_attention", "eca_kernel_size", "CA", "CBAM", "ChannelGate", "ECA", "EMA", "SA", "SE",
           "SpatialGate"]
