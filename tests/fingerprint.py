"""Deterministic weights, a probe image and an output fingerprint, to compare a model with another implementation.

``tests/test_zoo.py`` checks our models against numbers recorded by running the original code (YOLOv5, the EMA
paper's repository) through these same functions. The module imports only torch so that it runs beside either code.
"""

from __future__ import annotations

import hashlib
import math
import zlib

import torch


def _renamed(key: str, rename: dict[str, str] | None) -> str:
    for old, new in (rename or {}).items():
        key = key.replace(old, new)
    return key


def fill_deterministic_(model: torch.nn.Module, rename: dict[str, str] | None = None) -> torch.nn.Module:
    """Overwrite every floating-point parameter and BatchNorm statistic with a fixed function of its name and shape.

    The values depend only on the state_dict key and shape, so two implementations with the same keys get the same
    weights (``rename``: substrings of our keys replaced by the other implementation's before hashing). Scales keep
    activations of order one through deep models: weights ~ sqrt(2 / fan_in), norm scales near 1, biases and running
    means near 0, running variances in [1, 1.5]. Detect's ``anchors`` are left alone.
    """
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point() or key.endswith(("anchors", "anchor_grid")):
                continue
            phase = zlib.crc32(_renamed(key, rename).encode()) % 997 / 97
            s = torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.7071 + phase).view(t.shape)
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "running_var":
                v = 1 + 0.5 * s.abs()
            elif leaf == "running_mean" or (t.dim() == 1 and leaf != "weight"):
                v = 0.1 * s
            elif t.dim() == 1:  # BatchNorm / LayerNorm / GroupNorm scale
                v = 1 + 0.2 * s
            else:
                v = s * math.sqrt(2.0 / t[0].numel())
            t.copy_(v.to(t.dtype))
    return model


def probe_input(h: int, w: int, ch: int = 3) -> torch.Tensor:
    """A smooth, deterministic image batch ``(1, ch, h, w)`` in [0, 1]."""
    return (torch.sin(torch.arange(ch * h * w, dtype=torch.float64) * 0.05) * 0.5 + 0.5).view(1, ch, h, w).float()


def fingerprint(raw: list[torch.Tensor]) -> list[list]:
    """Per output level: ``[shape, mean, std, four values at fixed flat positions]`` of the raw Detect maps."""
    out = []
    for r in raw:
        flat = r.detach().double().flatten()
        n = flat.numel()
        picks = [float(flat[i]) for i in (0, n // 3, 2 * n // 3, n - 1)]
        out.append([list(r.shape), float(flat.mean()), float(flat.std()), picks])
    return out


def keys_digest(state_dict: dict[str, torch.Tensor], rename: dict[str, str] | None = None) -> str:
    """16 hex digits of SHA-256 over the sorted ``name shape`` lines of a state_dict (names and shapes, not values)."""
    lines = "\n".join(sorted(f"{_renamed(k, rename)} {tuple(v.shape)}" for k, v in state_dict.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]
