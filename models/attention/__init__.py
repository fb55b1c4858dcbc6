"""Attention modules that plug into YOLOv5 YAMLs, and their one registry.

Every module takes the input channel count first (``EMA(c1, ...)``) and returns a tensor of the input's shape, at
any input size. ``ATTENTION`` maps the names a YAML may use (aliases included: the spellings of the original forks)
to the classes; ``build_attention("cbam", 256)`` builds one by name, case-insensitively.

Each class says whether its output is its input times a weight (``gate = True``: ``utils/visualize.py`` draws that
weight as a heat map) or a new feature map (``gate = False``: residual self-attention, mixtures of branches).
"""

from __future__ import annotations

import torch.nn as nn

from models.attention.bam import BAM
from models.attention.ca import CA
from models.attention.caa import CAA
from models.attention.cbam import CBAM, ChannelGate, SpatialGate
from models.attention.cot import CoT
from models.attention.cpca import CPCA
from models.attention.criss_cross import CrissCross
from models.attention.danet import CAM, PAM, DANet
from models.attention.double_attention import DoubleAttention
from models.attention.eca import ECA, eca_kernel_size
from models.attention.ela import ELA
from models.attention.ema import EMA
from models.attention.gam import GAM
from models.attention.gc import GC
from models.attention.ge import GE
from models.attention.lsk import LSKA, LSKBlock
from models.attention.mhsa import MHSA, BoT
from models.attention.mlca import MLCA
from models.attention.nam import NAM
from models.attention.parnet import ParNet
from models.attention.polarized import PolarizedSA, SequentialPolarizedSA
from models.attention.s2 import S2
from models.attention.sa import SA
from models.attention.se import SE, EffectiveSE
from models.attention.sge import SGE
from models.attention.simam import SimAM
from models.attention.sk import SK
from models.attention.soca import SOCA
from models.attention.triplet import Triplet, ZPoolGate

# Name -> class. Aliases are the names the original forks and toolboxes use in their YAMLs.
ATTENTION: dict[str, type[nn.Module]] = {
    "EMA": EMA,
    "CA": CA, "CoordAtt": CA, "CoordAttention": CA,
    "CBAM": CBAM,
    "SA": SA, "ShuffleAttention": SA,
    "ECA": ECA, "ECAAttention": ECA,
    "SE": SE, "SEAttention": SE,
    "EffectiveSE": EffectiveSE, "ESE": EffectiveSE, "EffectiveSEModule": EffectiveSE,
    "NAM": NAM, "NAMAttention": NAM,
    "SimAM": SimAM,
    "SK": SK, "SKAttention": SK,
    "Triplet": Triplet, "TripletAttention": Triplet,
    "GAM": GAM, "GAMAttention": GAM, "GAM_Attention": GAM,
    "GC": GC, "GlobalContext": GC, "GlobalContextBlock": GC, "ContextBlock": GC,
    "SGE": SGE, "SpatialGroupEnhance": SGE,
    "BAM": BAM,
    "GE": GE, "GatherExcite": GE,
    "PolarizedSA": PolarizedSA, "PolarizedSelfAttention": PolarizedSA, "ParallelPolarizedSelfAttention": PolarizedSA,
    "SequentialPolarizedSA": SequentialPolarizedSA, "SequentialPolarizedSelfAttention": SequentialPolarizedSA,
    "S2": S2, "S2Attention": S2, "S2MLPv2": S2,
    "ParNet": ParNet, "ParNetAttention": ParNet,
    "CrissCross": CrissCross, "CrissCrossAttention": CrissCross, "CCA": CrissCross,
    "DoubleAttention": DoubleAttention, "A2": DoubleAttention, "A2Attention": DoubleAttention,
    "CoT": CoT, "CoTAttention": CoT,
    "MHSA": MHSA,
    "BoT": BoT, "BoTBlock": BoT, "BottleneckTransformer": BoT,
    "ELA": ELA,
    "CPCA": CPCA,
    "MLCA": MLCA,
    "LSKA": LSKA,
    "LSKBlock": LSKBlock,
    "CAA": CAA,
    "SOCA": SOCA,
    "PAM": PAM, "PAM_Module": PAM, "DANetPAM": PAM,
    "CAM": CAM, "CAM_Module": CAM, "DANetCAM": CAM,
    "DANet": DANet,
}


def build_attention(name: str, channels: int, *args, **options) -> nn.Module:
    """Build an attention module by name (case-insensitive): ``build_attention("ema", 256, factor=16)``."""
    lookup = {k.lower(): v for k, v in ATTENTION.items()}
    if name.lower() not in lookup:
        raise ValueError(f"unknown attention module '{name}'; known modules: {', '.join(sorted(ATTENTION))}")
    return lookup[name.lower()](channels, *args, **options)


__all__ = ["ATTENTION", "build_attention", "eca_kernel_size", "BAM", "BoT", "CA", "CAA", "CAM", "CBAM", "ChannelGate",
           "CoT", "CPCA", "CrissCross", "DANet", "DoubleAttention", "ECA", "EffectiveSE", "ELA", "EMA", "GAM", "GC",
           "GE", "LSKA", "LSKBlock", "MHSA", "MLCA", "NAM", "PAM", "ParNet", "PolarizedSA", "S2", "SA", "SE",
           "SequentialPolarizedSA", "SGE", "SimAM", "SK", "SOCA", "SpatialGate", "Triplet", "ZPoolGate"]
