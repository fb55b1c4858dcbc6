"""Look inside a detector during inference: attention heat maps (the EMA paper's Figure 4 kind) and feature maps.

Both work by forward hooks, so they need the PyTorch model (``.pt`` weights), and both are generic:

* ``AttentionRecorder`` hooks every attention module whose output gates its input (``gate = True`` in
  ``models/attention``: EMA, CA, CBAM, SA, ECA, SE, SimAM, GAM, LSKA...) and derives a spatial map of its *effective
  gate*: per pixel, ``sum_c |out| / sum_c |in|``, i.e. the input-weighted mean of the multiplicative weights the
  module applied there. That works for gates of any shape (per pixel, per row/column, per channel) and is unaffected
  by channel shuffles (SA). Modules that compute new features (self-attention, branch mixtures: MHSA, CoT, SK...)
  have no such gate and get no map.
* ``FeatureRecorder`` hooks every layer of ``model.model`` and saves the first channels of its output as a grid.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.attention import ATTENTION
from utils.outputs import write_image

ATTENTION_TYPES = tuple(set(ATTENTION.values()))


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(label, module)`` for each gating attention module, labelled like ``layer7_EMA`` (nested ones by path)."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, ATTENTION_TYPES) and m.gate:
            parts = name.split(".")
            label = f"layer{'_'.join(parts[1:])}" if parts[0] == "model" else name.replace(".", "_")
            found.append((f"{label}_{type(m).__name__}", m))
    return found


class _Recorder:
    """Hooks on a set of modules; ``start()`` before a forward pass, read ``records``, ``remove()`` at the end."""

    def __init__(self, modules: list[tuple[str, nn.Module]]):
        self.records: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(label)) for label, m in modules]

    def _hook(self, label: str):
        def hook(module, inputs, output):
            if label not in self.records:  # keep the first call per pass (test-time augmentation calls again)
                x = inputs[0] if isinstance(inputs, (tuple, list)) and inputs else inputs
                self.records[label] = self.summarise(x, output)

        return hook

    def summarise(self, x, y) -> torch.Tensor:  # overridden
        raise NotImplementedError

    def start(self) -> None:
        self.records = {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class AttentionRecorder(_Recorder):
    """Records, per attention module, the spatial map ``(bs, h, w)`` of its effective gate ``sum|out| / sum|in|``."""

    def __init__(self, model: nn.Module):
        super().__init__(attention_modules(model))

    def summarise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.detach().float(), y.detach().float()
        return y.abs().sum(1) / x.abs().sum(1).clamp_min(1e-6)


class FeatureRecorder(_Recorder):
    """Records the first ``n`` channels of every layer's output (``stage{i}_{type}``), Detect excluded."""

    def __init__(self, model: nn.Module, n: int = 32):
        self.n = n
        layers = [(f"stage{i}_{getattr(m, 'type', type(m).__name__).split('.')[-1]}", m)
                  for i, m in enumerate(model.model) if type(m).__name__ != "Detect"]
        super().__init__(layers)

    def summarise(self, x, y) -> torch.Tensor:
        return y[:, : self.n].detach().float().cpu() if isinstance(y, torch.Tensor) and y.ndim == 4 else None


def unletterbox(m: np.ndarray, shape0: tuple[int, int]) -> np.ndarray:
    """Undo the letterbox: crop the padding off a map of the network input's size and resize it to ``shape0`` (h, w)."""
    h1, w1 = m.shape[:2]
    h0, w0 = shape0
    gain = min(h1 / h0, w1 / w0)
    nh, nw = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    top, left = max(round((h1 - nh) / 2 - 0.1), 0), max(round((w1 - nw) / 2 - 0.1), 0)
    return cv2.resize(m[top: top + nh, left: left + nw], (w0, h0), interpolation=cv2.INTER_LINEAR)


def heatmap_overlay(gate: torch.Tensor, input_hw: tuple[int, int], im0: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend one ``(h, w)`` gate map, min-max normalised and upsampled, as a JET heat map over the BGR image ``im0``."""
    g = gate[None, None].float()
    g = F.interpolate(g, size=input_hw, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
    g = unletterbox(g, im0.shape[:2])
    lo, hi = float(g.min()), float(g.max())
    g = (g - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(g)
    heat = cv2.applyColorMap((g * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = im0 if im0.ndim == 3 and im0.shape[2] == 3 else cv2.cvtColor(im0, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(base, 1 - alpha, heat, alpha, 0)


def save_attention_maps(records: dict[str, torch.Tensor], index: int, input_hw: tuple[int, int], im0: np.ndarray,
                        save_dir: Path, stem: str) -> list[Path]:
    """Write ``<save_dir>/<stem>_<layer>_<Type>.jpg`` for batch element ``index``; returns the files written."""
    save_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for label, maps in records.items():
        f = save_dir / f"{stem}_{label}.jpg"
        files.append(write_image(f, heatmap_overlay(maps[index], input_hw, im0)))
    return files


def feature_grid(x: torch.Tensor, cols: int = 8, cell: int = 96) -> np.ndarray:
    """Tile the channels of ``x`` (c, h, w) into one colour image, each channel min-max normalised (viridis)."""
    c, h, w = x.shape
    scale = cell / max(h, w)
    ch, cw = max(int(h * scale), 1), max(int(w * scale), 1)
    rows = (c + cols - 1) // cols
    grid = np.full((rows * (ch + 2), min(c, cols) * (cw + 2)), 0, np.uint8)
    for i in range(c):
        a = x[i].numpy()
        a = (a - a.min()) / (a.max() - a.min() + 1e-12)
        a = cv2.resize((a * 255).astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST)
        r, k = divmod(i, cols)
        grid[r * (ch + 2): r * (ch + 2) + ch, k * (cw + 2): k * (cw + 2) + cw] = a
    return cv2.applyColorMap(grid, cv2.COLORMAP_VIRIDIS)


def save_feature_maps(records: dict[str, torch.Tensor], index: int, save_dir: Path) -> list[Path]:
    """Write ``<save_dir>/stage{i}_{type}_features.png`` (first channels of each layer) for batch element ``index``."""
    save_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for label, x in records.items():
        if x is None:
            continue
        f = save_dir / f"{label}_features.png"
        files.append(write_image(f, feature_grid(x[index])))
    return files
