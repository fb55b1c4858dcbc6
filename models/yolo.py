"""YOLOv5 (v6.0) detection model built from a YAML: the anchor-based ``Detect`` head, ``Model`` and ``parse_model``.

Usage:
    python models/yolo.py --cfg models/yolov5s-ema.yaml            # layer table + summary line
    python models/yolo.py --cfg models/yolov5s-ema.yaml --profile  # time each layer
    python models/yolo.py --cfg models/yolov5s.yaml --attention SimAM --save-yaml yolov5s-simam.yaml
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import inspect
import math
import sys
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # `python models/yolo.py`: import from the repository, utils/ first (it keeps the engine offline)
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    importlib.import_module("utils")

import torch
import torch.nn as nn
import yaml
from ultralytics.nn.tasks import BaseModel
from ultralytics.utils import LOGGER
from ultralytics.utils.ops import make_divisible
from ultralytics.utils.torch_utils import fuse_conv_and_bn, initialize_weights, scale_img

from models import paper_blocks as pb
from models.attention import ATTENTION
from models.common import (
    C3,
    C3SPP,
    C3TR,
    SPP,
    SPPF,
    Bottleneck,
    BottleneckCSP,
    C3Ghost,
    C3x,
    Concat,
    Contract,
    Conv,
    CrossConv,
    DWConv,
    Expand,
    Focus,
    GhostBottleneck,
    GhostConv,
)
from models.resnet import ConvAct, ResBasicBlock, ResBottleneck
from utils import offline
from utils.autoanchor import check_anchor_order

ROOT = Path(__file__).resolve().parents[1]
offline.configure()


class Detect(nn.Module):
    """Anchor-based YOLOv5 head: one 1x1 conv per level predicting ``na`` boxes of ``nc + 5`` values per cell.

    Training returns the raw maps ``[(bs, na, ny, nx, nc + 5), ...]`` for the loss. Inference returns
    ``(y, raw)``, ``y`` of shape ``(bs, 4 + nc, n_anchors)``: xywh in input pixels and class scores
    multiplied by objectness, the layout Ultralytics' NMS consumes.

    With ``export = True`` (set by the exporter, as YOLOv5 does) inference returns YOLOv5's output alone:
    ``(bs, n_anchors, 5 + nc)``, xywh in input pixels, objectness, then class probabilities (not multiplied),
    anchors ordered level by level, then anchor, row (y), column (x).
    """

    export = False  # True: YOLOv5's export output (bs, anchors, 5 + nc) instead of the engine's (y, raw)

    def __init__(self, nc: int = 80, anchors: list | tuple = (), ch: list | tuple = (), inplace: bool = True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.inplace = inplace  # kept for checkpoint compatibility; decoding never writes in place
        # anchors in stride units (Model divides the pixel values by the stride once strides are known)
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self._grids: dict = {}  # (ny, nx, device, dtype) -> grid; a plain dict so .to() never touches it

    def forward(self, x: list[torch.Tensor]):
        raw, z = [], []
        for i in range(self.nl):
            bs, _, ny, nx = x[i].shape
            p = self.m[i](x[i]).view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            raw.append(p)
            if not self.training:
                z.append(self._decode(p, i))
        if self.training:
            return raw
        y = torch.cat(z, 1)  # (bs, n, 5 + nc): YOLOv5's layout
        if self.export:
            return y
        return torch.cat((y[..., :4], y[..., 5:] * y[..., 4:5]), -1).transpose(1, 2), raw

    def _decode(self, p: torch.Tensor, i: int) -> torch.Tensor:
        """Raw level-i map -> (bs, na*ny*nx, 5 + nc): xy = (2σ - 0.5 + grid)·s, wh = (2σ)²·anchor, σ(obj), σ(cls)."""
        bs, _, ny, nx, _ = p.shape
        grid = self._grid(ny, nx, p)
        anchor_px = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(p.dtype)
        y = p.sigmoid()
        xy = (y[..., :2] * 2 - 0.5 + grid) * self.stride[i]
        wh = (y[..., 2:4] * 2) ** 2 * anchor_px
        return torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no)

    def _grid(self, ny: int, nx: int, like: torch.Tensor) -> torch.Tensor:
        """Cell offsets (1, 1, ny, nx, 2) as (x, y); cached per size/device/dtype, rebuilt while tracing."""
        key = (ny, nx, like.device, like.dtype)
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if tracing or key not in self._grids:
            yv, xv = torch.meshgrid(torch.arange(ny, device=like.device, dtype=like.dtype),
                                    torch.arange(nx, device=like.device, dtype=like.dtype), indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)
            if tracing:
                return grid
            self._grids[key] = grid
        return self._grids[key]

    def _apply(self, fn, *args, **kwargs):
        self._grids = {}  # device or dtype may change: rebuild lazily
        return super()._apply(fn, *args, **kwargs)


class Model(BaseModel):
    """A YOLOv5 detection model built from a YAML file or dict.

    ``Model("models/yolov5s-ema.yaml", ch=3, nc=None, anchors=None)``: ``nc``/``anchors`` override the YAML.
    Derives from Ultralytics' ``BaseModel`` so the engine can train it (``model(batch_dict)`` is the loss).
    """

    def __init__(self, cfg: str | Path | dict = "yolov5s.yaml", ch: int = 3, nc: int | None = None,
                 anchors: list | int | None = None, verbose: bool = True):
        super().__init__()
        if isinstance(cfg, dict):
            self.yaml = deepcopy(cfg)
            self.yaml_file = self.yaml.get("yaml_file", "")
        else:
            self.yaml_file = str(resolve_cfg(cfg))
            self.yaml = load_model_yaml(self.yaml_file)
            self.yaml["yaml_file"] = self.yaml_file
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        if anchors:
            LOGGER.info(f"Overriding model.yaml anchors with anchors={anchors}")
            self.yaml["anchors"] = anchors
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch], verbose=verbose)
        self.nc = self.yaml["nc"]
        self.names = {i: str(i) for i in range(self.nc)}
        self.inplace = self.yaml.get("inplace", True)

        m = self.model[-1]
        if not isinstance(m, Detect):
            raise ValueError(f"{self.yaml_file or 'model'}: the last layer must be Detect, got {type(m).__name__}")
        m.stride = self._probe_strides(ch)
        m.anchors /= m.stride.view(-1, 1, 1)
        check_anchor_order(m)
        self.stride = m.stride.clone()
        self._initialize_biases()
        initialize_weights(self)
        if verbose:
            self.info()
            LOGGER.info("")

    def _probe_strides(self, ch: int, s: int = 256) -> torch.Tensor:
        """Run a blank image once (eval mode, so BatchNorm statistics stay untouched) and read the strides.

        A layer whose inputs do not fit (a ``Concat`` of maps of different sizes...) is named with its YAML file.
        """
        training = self.training
        self.eval()
        x, y = torch.zeros(1, ch, s, s), []
        with torch.no_grad():
            for m in self.model:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                try:
                    x = m(x)
                except RuntimeError as e:
                    shapes = [tuple(t.shape) for t in x] if isinstance(x, list) else tuple(x.shape)
                    raise ModelYAMLError(f"{self.yaml_file or 'model YAML'}: layer {m.i} ({m.type}, from {m.f}) cannot "
                                         f"take inputs of shape {shapes} on a {s}x{s} image: "
                                         f"{str(e).splitlines()[0].rstrip('.')}; check its 'from' indices") from None
                y.append(x if m.i in self.save else None)
        self.train(training)
        return torch.tensor([s / r.shape[-3] for r in x[1]])

    def _predict_once(self, x: torch.Tensor, *args, **kwargs):
        """Ultralytics' layer loop; a failure on an image whose sides are not multiples of the largest stride (the
        upsampled and lateral maps of the head then differ in size) is reported as such."""
        try:
            return super()._predict_once(x, *args, **kwargs)
        except RuntimeError as e:
            gs = int(self.stride.max()) if isinstance(getattr(self, "stride", None), torch.Tensor) else 0
            h, w = x.shape[-2:]
            if gs and (h % gs or w % gs):
                raise RuntimeError(f"input of {h}x{w} pixels: this model needs heights and widths that are "
                                   f"multiples of its largest stride {gs}, e.g. "
                                   f"{math.ceil(h / gs) * gs}x{math.ceil(w / gs) * gs} (letterbox or resize the image)"
                                   ) from e
            raise

    def _initialize_biases(self, cf: torch.Tensor | None = None) -> None:
        """Objectness prior of ~8 objects per 640 image, class prior 0.6/nc (YOLOv5's initialisation)."""
        m = self.model[-1]
        for mi, s in zip(m.m, m.stride):
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            b.data[:, 5:] += math.log(0.6 / (m.nc - 0.99)) if cf is None else torch.log(cf / cf.sum())
            mi.bias = nn.Parameter(b.view(-1), requires_grad=True)

    # ----- inference helpers ------------------------------------------------------------------------
    def _predict_augment(self, x: torch.Tensor):
        """Test-time augmentation: full scale, 0.83x flipped left-right and 0.67x; predictions merged."""
        img_size = x.shape[-2:]
        scales, flips = (1, 0.83, 0.67), (None, 3, None)  # flip dim 3 = left-right
        gs = int(self.stride.max())
        y = []
        for si, fi in zip(scales, flips):
            xi = scale_img(x.flip(fi) if fi else x, si, gs=gs)
            yi = self._predict_once(xi)[0]  # (bs, 4 + nc, n)
            y.append(self._descale_pred(yi, fi, si, img_size))
        y = self._clip_augmented(y)
        return torch.cat(y, 2), None

    @staticmethod
    def _descale_pred(p: torch.Tensor, flips: int | None, scale: float, img_size) -> torch.Tensor:
        p = p.clone()
        p[:, :4] /= scale
        if flips == 2:
            p[:, 1] = img_size[0] - p[:, 1]
        elif flips == 3:
            p[:, 0] = img_size[1] - p[:, 0]
        return p

    def _clip_augmented(self, y: list[torch.Tensor]) -> list[torch.Tensor]:
        """Drop the coarsest level from the full-scale pass and the finest from the smallest-scale pass.

        Large objects are seen better downscaled and small ones at full scale, so these are the weakest
        duplicates. Levels hold 4**k times fewer predictions per step down in resolution.
        """
        nl = self.model[-1].nl
        units = sum(4 ** k for k in range(nl))  # level sizes relative to the coarsest level
        n_coarsest = y[0].shape[2] // units
        y[0] = y[0][:, :, : y[0].shape[2] - n_coarsest]
        n_finest = (y[-1].shape[2] // units) * 4 ** (nl - 1)
        y[-1] = y[-1][:, :, n_finest:]
        return y

    # ----- fusing and summary -----------------------------------------------------------------------
    def fuse(self, verbose: bool = True, imgsz: int = 640) -> "Model":
        """Fold every Conv's BatchNorm into its convolution (inference only)."""
        for m in self.model.modules():
            if isinstance(m, (Conv,)) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        if verbose:
            self.info(imgsz=imgsz)
        return self

    def is_fused(self, thresh: int = 10) -> bool:
        return not any(isinstance(m, Conv) and hasattr(m, "bn") for m in self.modules())

    def info(self, detailed: bool = False, verbose: bool = True, imgsz: int = 640):
        """Print YOLOv5's summary line: ``<name> summary: L layers, P parameters, G gradients, F GFLOPs``."""
        n_p = sum(p.numel() for p in self.parameters())
        n_g = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_l = len(list(self.modules()))
        flops = count_flops(self, imgsz)
        name = Path(self.yaml_file).stem if self.yaml_file else "Model"
        fused = " (fused)" if self.is_fused() else ""
        if verbose:
            LOGGER.info(f"{name} summary{fused}: {n_l} layers, {n_p} parameters, {n_g} gradients, {flops:.1f} GFLOPs")
        return n_l, n_p, n_g, flops

    def init_criterion(self):
        from utils.loss import ComputeLoss

        return ComputeLoss(self)

    def set_head_attr(self, **kwargs) -> None:
        """Called by the Ultralytics 8.4 trainer on every model; set matching attributes on the head."""
        head = self.model[-1]
        for k, v in kwargs.items():
            if hasattr(head, k):
                setattr(head, k, v)


def count_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs (2 x multiply-adds, counted by thop) of one forward pass at the full image size.

    Profiling at the real size rather than extrapolating from a stride-sized image keeps the count exact
    for attention modules, whose pooled branches do not scale with the image area.
    """
    try:
        import thop
    except ImportError:
        return 0.0
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    im = torch.zeros(1, model.yaml.get("ch", 3) if hasattr(model, "yaml") else 3, h, w, device=p.device, dtype=p.dtype)
    with torch.no_grad():
        macs = thop.profile(deepcopy(model).eval(), inputs=(im,), verbose=False)[0]
    return macs / 1e9 * 2


# ----------------------------------------------------------------------------------------------------
# YAML parsing
# ----------------------------------------------------------------------------------------------------

# Our blocks by the name a YAML gives them (torch layers are written ``nn.<Name>``).
MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv, "DWConv": DWConv, "GhostConv": GhostConv, "CrossConv": CrossConv, "Focus": Focus,
    "Bottleneck": Bottleneck, "BottleneckCSP": BottleneckCSP, "GhostBottleneck": GhostBottleneck,
    "C3": C3, "C3x": C3x, "C3TR": C3TR, "C3SPP": C3SPP, "C3Ghost": C3Ghost, "SPP": SPP, "SPPF": SPPF,
    "Concat": Concat, "Contract": Contract, "Expand": Expand, "Detect": Detect, **ATTENTION,
    "ConvAct": ConvAct, "ResBottleneck": ResBottleneck, "ResBasicBlock": ResBasicBlock,  # ResNet backbones
}
# Layers built as ``m(c1, c2, *args)``: the YAML's first argument is the output channel count, scaled by
# ``width_multiple`` and rounded up to a multiple of 8 (or of the YAML's ``channel_multiple``).
CHANNEL_BLOCKS: set[type[nn.Module]] = {
    Conv, DWConv, GhostConv, CrossConv, Focus, Bottleneck, BottleneckCSP, GhostBottleneck,
    C3, C3x, C3TR, C3SPP, C3Ghost, SPP, SPPF, nn.ConvTranspose2d, ConvAct, ResBottleneck, ResBasicBlock,
}
# Of those, the blocks whose YAML ``number`` (scaled by ``depth_multiple``) is their inner repeat count, passed as the
# third constructor argument. Any other layer with a number n > 1 is stacked n times in an nn.Sequential.
REPEAT_BLOCKS: set[type[nn.Module]] = {BottleneckCSP, C3, C3x, C3TR, C3Ghost}
# Stage blocks ``m(c1, c2, s, ...)``: a number n > 1 builds a ResNet stage, the first block with the row's stride and
# channel change, the other n - 1 stride 1 from c2 to c2 (as models/classify.py builds them).
STAGE_BLOCKS: set[type[nn.Module]] = {ResBottleneck, ResBasicBlock}
# Layers built from their input channel count alone.
INPUT_CHANNEL_LAYERS: set[type[nn.Module]] = {nn.BatchNorm2d}


def _gain(args: list) -> int:
    gain = args[0] if args else 2
    if not isinstance(gain, int) or gain < 1:
        raise ValueError(f"the gain must be a positive integer, got {gain!r}")
    return gain


def _expand_channels(c_in: list[int], args: list) -> int:
    g2 = _gain(args) ** 2
    if c_in[0] % g2:
        raise ValueError(f"Expand: {c_in[0]} input channels cannot be spread over {g2} positions; "
                         f"give it a multiple of {g2} channels")
    return c_in[0] // g2


# Output channels of the layers built from their YAML arguments as written (any other such layer: its input's).
OUTPUT_CHANNELS: dict[type[nn.Module], Callable[[list[int], list], int]] = {
    Concat: lambda c_in, args: sum(c_in),
    Contract: lambda c_in, args: c_in[0] * _gain(args) ** 2,
    Expand: _expand_channels,
}
REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


@dataclass(frozen=True)
class BlockSet:
    """What a YAML's module names mean and how ``parse_model`` passes them their YAML arguments.

    ``channel_blocks`` are built as ``m(c1, c2, *args)`` from a first YAML argument ``c2`` scaled by
    ``width_multiple``; ``repeat_blocks`` take the YAML ``number`` as their inner repeat count; ``width_blocks`` also
    take the unpruned scaled width as third argument (before the repeats); with ``prune_exempt`` set, a trailing float
    argument of any other channel block multiplies its output channels (the pruned YAMLs of the EMA paper's code).
    """

    name: str
    modules: dict[str, type[nn.Module]]
    channel_blocks: frozenset[type[nn.Module]]
    repeat_blocks: frozenset[type[nn.Module]]
    width_blocks: frozenset[type[nn.Module]] = frozenset()
    prune_exempt: frozenset[type[nn.Module]] | None = None


YOLOV5_BLOCKS = BlockSet("yolov5", MODULES, frozenset(CHANNEL_BLOCKS), frozenset(REPEAT_BLOCKS))
# The EMA paper's repository (YOLOonMe/EMA-attention-module): its own blocks under its names (models/paper_blocks.py)
_REPLACED = {MODULES[k] for k in pb.PAPER_BLOCKS if k in MODULES}
PAPER_BLOCK_SET = BlockSet(
    "EMA-attention-module",
    {**MODULES, **pb.PAPER_BLOCKS},
    frozenset(CHANNEL_BLOCKS - _REPLACED - {nn.ConvTranspose2d}
              | {m for m in pb.PAPER_BLOCKS.values() if m is not pb.SeBlock}),
    frozenset(REPEAT_BLOCKS - _REPLACED | {pb.PrunableC3, pb.C3TPH, pb.C3STR}),
    width_blocks=frozenset({pb.PrunableC3}),
    prune_exempt=frozenset({SPP, SPPF, pb.MBConvBlock}),
)
BLOCK_SETS = {b.name: b for b in (YOLOV5_BLOCKS, PAPER_BLOCK_SET)}
PAPER_ONLY_NAMES = frozenset(pb.PAPER_BLOCKS) - frozenset(MODULES)
PAPER_HINT = (f"if this YAML comes from the EMA paper's repository (YOLOonMe/EMA-attention-module), add "
              f"'blocks: {PAPER_BLOCK_SET.name}' to it")


def _yaml_arity(m: type[nn.Module]) -> int:
    """How many YAML arguments YOLOv5's parse_model can pass to block ``m`` (its positional parameters after ``c1``,
    less the repeat count it inserts itself)."""
    params = [p for p in inspect.signature(m.__init__).parameters.values()
              if p.kind == p.POSITIONAL_OR_KEYWORD][2:]  # self, c1
    return len(params) - (m in REPEAT_BLOCKS)


_YOLOV5_ARITY = {name: _yaml_arity(MODULES[name]) for name in {"Conv", *pb.PAPER_BLOCKS} & set(MODULES)}


def _paper_row(row) -> bool:
    """A layer only the paper repository's code can build: a block only it defines, more arguments than YOLOv5's
    block of that name takes (its GhostBottleneck, its pruned C3), or a Conv ending in a float (a pruning factor)."""
    _, _, name, args = row
    args = args if isinstance(args, (list, tuple)) else [args]
    if name in PAPER_ONLY_NAMES or len(args) > _YOLOV5_ARITY.get(name, len(args)):
        return True
    return name == "Conv" and bool(args) and isinstance(args[-1], float)


def block_set_of(d: dict, where: str = "model YAML") -> BlockSet:
    """The block set a YAML dict is written for: its ``blocks:`` key; else the paper repository's when a layer is one
    only its code can build (``_paper_row``); else YOLOv5's."""
    name = d.get("blocks")
    if name is not None:
        if name not in BLOCK_SETS:
            raise ModelYAMLError(f"{where}: 'blocks: {name}' is not one of {', '.join(BLOCK_SETS)}")
        return BLOCK_SETS[name]
    rows = [r for r in list(d.get("backbone") or []) + list(d.get("head") or [])
            if isinstance(r, (list, tuple)) and len(r) == 4]
    if any(_paper_row(r) for r in rows):
        return PAPER_BLOCK_SET
    return YOLOV5_BLOCKS


class ModelYAMLError(ValueError):
    """A model YAML that cannot be built; the message names the file, the line and the fix."""


def resolve_cfg(cfg: str | Path) -> Path:
    """Find a model YAML given a path, or a bare name looked up in ``models/``, ``models/hub/`` and its subfolders."""
    p = Path(cfg)
    names = [p.name] if p.suffix in (".yaml", ".yml") else [p.name, f"{p.name}.yaml"]
    candidates = [p]
    for folder in (ROOT / "models", ROOT / "models" / "hub", *sorted((ROOT / "models" / "hub").glob("*/"))):
        candidates += [folder / name for name in names]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"model YAML '{cfg}' not found (looked in the working directory, {ROOT / 'models'} and "
                            f"{ROOT / 'models' / 'hub'} with its subfolders)")


def load_model_yaml(path: str | Path) -> dict:
    """Read a model YAML and check its top-level keys before anything is built."""
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ModelYAMLError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ModelYAMLError(f"{path}: expected a mapping with keys {', '.join(REQUIRED_KEYS)}")
    check_required_keys(d, str(path))
    return d


def check_required_keys(d: dict, where: str) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ModelYAMLError(f"{where}: missing key(s) {', '.join(missing)}; a YOLOv5 model YAML needs "
                             f"{', '.join(REQUIRED_KEYS)}")


def kernel_names(d: dict, where_file: str) -> dict[str, int]:
    """The optional ``k_size`` key (odd kernel sizes, e.g. ECA-Net's per stage) as the names ``k1``, ``k2``...
    that rows may use as arguments (``[256, 1, ECA, k1]``)."""
    ks = d.get("k_size")
    if ks is None:
        return {}
    if not (isinstance(ks, list) and ks and all(_is_int(k) and k >= 1 and k % 2 for k in ks)):
        raise ModelYAMLError(f"{where_file}: 'k_size' must be a list of positive odd kernel sizes such as "
                             f"[3, 5, 5, 7], got {ks!r}")
    return {f"k{i + 1}": int(k) for i, k in enumerate(ks)}


def _resolve_module(name, where: str, modules: dict[str, type[nn.Module]]) -> type[nn.Module]:
    if isinstance(name, str):
        if name in modules:
            return modules[name]
        if name.startswith("nn.") and isinstance(getattr(nn, name[3:], None), type):
            return getattr(nn, name[3:])
    known = ", ".join(sorted(modules))
    raise ModelYAMLError(f"{where}: unknown module '{name}'; known modules: {known}, or any torch 'nn.<Name>'")


def _resolve_arg(a, names: dict):
    """YAML args may name ``nc``/``anchors`` or hold Python literals written as strings ('None', '[5, 9]')."""
    if isinstance(a, str):
        if a in names:
            return names[a]
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(a)
    return a


def _attention_args(m: type[nn.Module], args: list, c1: int, gw: float) -> list:
    """Input channels go first; a leading channel count as the forks write it (``[512]``) is recognised and dropped.

    A first argument counts as a channel count when it equals the input channels either as written in the YAML
    (before ``width_multiple``) or after scaling.
    """
    if args and isinstance(args[0], int) and c1 in (args[0], make_divisible(args[0] * gw, 8)):
        args = args[1:]
    return [c1, *args]


ACTIVATION_HELP = "write e.g. 'activation: nn.LeakyReLU(0.1)': a torch.nn activation layer with literal arguments"


def parse_activation(spec: str, where: str = "model YAML") -> Callable[[], nn.Module]:
    """The top-level ``activation:`` key (``nn.LeakyReLU(0.1)``, ``nn.SiLU()``...) as a factory of that layer.

    The text is parsed, never evaluated: the name must be an activation layer of ``torch.nn`` (or ``nn.Identity``) and
    the arguments literals.
    """
    text = str(spec).strip()
    try:
        node = ast.parse(text, mode="eval").body
        args, kwargs = [], {}
        if isinstance(node, ast.Call):
            if any(k.arg is None for k in node.keywords):
                raise ValueError("** arguments")
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            node = node.func
        name = ast.unparse(node)
    except (SyntaxError, ValueError, TypeError) as e:
        raise ModelYAMLError(f"{where}: activation '{text}' cannot be read ({e}); {ACTIVATION_HELP}") from None
    nn_name = name.removeprefix("torch.").removeprefix("nn.") if name.startswith(("nn.", "torch.nn.")) else None
    cls = getattr(nn, nn_name, None) if nn_name else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)
            and (cls.__module__ == "torch.nn.modules.activation" or cls is nn.Identity)):
        raise ModelYAMLError(f"{where}: activation '{text}' is not a torch.nn activation layer; {ACTIVATION_HELP}")
    factory = functools.partial(cls, *args, **kwargs)
    try:
        factory()
    except (TypeError, ValueError) as e:
        raise ModelYAMLError(f"{where}: activation '{text}': {e}; {ACTIVATION_HELP}") from None
    return factory


@contextlib.contextmanager
def default_activation(factory: Callable[[], nn.Module] | None):
    """Within the block, ``Conv(..., act=True)`` layers get ``factory()`` (``None``: leave the default alone)."""
    previous = Conv.default_act
    if factory is not None:
        Conv.default_act = factory
    try:
        yield
    finally:
        Conv.default_act = previous


def _layer_args(m: type[nn.Module], args: list, c_in: list[int], n: int, gw: float, ch_mul: int, no: int,
                blocks: BlockSet = YOLOV5_BLOCKS) -> tuple[list, int, int]:
    """Constructor arguments, output channels and stack count of one YAML layer with input channels ``c_in``."""
    c1 = c_in[0]
    if m in blocks.channel_blocks:
        if len(c_in) != 1:
            raise ValueError(f"{m.__name__} takes one input, got {len(c_in)}")
        if not args or not isinstance(args[0], int) or isinstance(args[0], bool):
            raise ValueError(f"{m.__name__}'s first argument must be its output channel count, got {args}")
        c2 = width = args[0] if args[0] == no else make_divisible(args[0] * gw, ch_mul)  # Detect-sized: as is
        if (blocks.prune_exempt is not None and c2 != no and isinstance(args[-1], float)
                and m not in blocks.prune_exempt):
            c2 = max(make_divisible(args[0] * args[-1] * gw, ch_mul), ch_mul)  # pruned: a fraction of the channels
            args = args[:-1]
        args = [c1, c2, *args[1:]]
        if m in blocks.width_blocks:
            args.insert(2, width)
        if m in blocks.repeat_blocks:
            args.insert(3 if m in blocks.width_blocks else 2, n)
            n = 1
        return args, c2, n
    if m in INPUT_CHANNEL_LAYERS:
        return [c1], c1, n
    if m is Detect:
        args = [*args, c_in]
        if isinstance(args[1], int):  # anchor count only: placeholders until AutoAnchor computes them
            args[1] = [list(range(args[1] * 2))] * len(c_in)
        return args, c1, n
    if m in ATTENTION.values():
        return _attention_args(m, args, c1, gw), c1, n
    return args, OUTPUT_CHANNELS.get(m, lambda c, a: c[0])(c_in, args), n


# ----- consistency checks: a YAML that does not describe one consistent model fails before anything is built -----

ANCHORS_EXAMPLE = "[[10,13, 16,30, 33,23], [30,61, 62,45, 59,119], [116,90, 156,198, 373,326]]"

# Size limits: a slip such as 'depth_multiple: 1000' must fail at once instead of building a model of billions of
# parameters. Every YAML of this repository and every official YOLOv5, hub and EMA-paper YAML lies far inside them: the
# largest multiples are yolov5x's (depth 1.33, width 1.25), the most repeats of one row 23 (ResNet-101's third stage;
# ResNet-1001, the deepest bottleneck ResNet published, has 111), the widest layer 2048 channels (ResNet's last stage;
# yolov5x: 1280), the largest kernel 7 (ResNet's stem; large-kernel CNNs such as RepLKNet/SLaK use 31-51), the most
# classes 21,843 (ImageNet-21k) and the most anchors per level 3 (forks use up to 9).
MAX_MULTIPLE = 10  # depth_multiple, width_multiple: 7.5x yolov5x's
MAX_REPEATS = 128  # number x depth_multiple of one row
MAX_CHANNELS = 16384  # channels of any layer (input ch, outputs, hidden widths, Detect's na x (nc + 5) outputs)
MAX_KERNEL = 64  # Conv/Focus kernel size
MAX_CLASSES = 100_000  # nc
MAX_ANCHORS = 100  # anchors per detection level
# Constructor arguments that set a block's hidden width: name -> width from (input, output channels, value)
HIDDEN_WIDTH: dict[str, Callable[[int, int, float], float]] = {
    "e": lambda c1, c2, v: c2 * v,  # C3, Bottleneck, CrossConv... expansion
    "t": lambda c1, c2, v: c1 * v,  # InvertedResidual expansion
}


def check_multiples(d: dict, where: str, rows: list | None = None) -> None:
    """``depth_multiple`` and ``width_multiple``: positive numbers, at most ``MAX_MULTIPLE``; an excessive one is named
    with the first layer it would blow up."""
    for key in ("depth_multiple", "width_multiple"):
        v = d[key]
        if not _is_number(v) or v <= 0:
            raise ModelYAMLError(f"{where}: {key}: {v!r} must be a positive number (yolov5s: depth_multiple "
                                 f"0.33, width_multiple 0.50)")
        if v > MAX_MULTIPLE:
            raise ModelYAMLError(f"{where}: {key}: {v!r} is more than {MAX_MULTIPLE}, the largest multiple a model "
                                 f"may have (yolov5x: depth_multiple 1.33, width_multiple 1.25)"
                                 f"{_multiple_effect(key, v, rows or [])}; check the YAML's {key}")


def _multiple_effect(key: str, v: float, rows: list) -> str:
    """'; layer 2 (C3) would ...': what the excessive multiple does to the first layer it scales."""
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            continue
        _, n, name, args = row
        args = args if isinstance(args, (list, tuple)) else [args]
        if key == "depth_multiple" and _is_int(n) and n > 1:
            return f"; layer {i} ({name}) would repeat {max(round(n * v), 1):,} times instead of {n}"
        if key == "width_multiple" and args and _is_int(args[0]) and name not in ("Detect", "Classify", "LinearHead"):
            return f"; layer {i} ({name}) would have {make_divisible(args[0] * v, 8):,} channels instead of {args[0]}"
    return ""


def check_layer_size(where: str, name: str, n: int, n_yaml: int, gd: float, c2: int | None = None,
                     args: list | None = None, m: type[nn.Module] | None = None, c1: int | None = None) -> None:
    """One layer's size, before it is built: its repeats, output channels and hidden width within the limits."""
    if n > MAX_REPEATS:
        raise ModelYAMLError(f"{where}: {name} would repeat {n:,} times (number {n_yaml} x depth_multiple {gd}), "
                             f"more than {MAX_REPEATS}; lower the row's number or depth_multiple")
    if c2 is not None and _is_int(c2) and c2 > MAX_CHANNELS:
        raise ModelYAMLError(f"{where}: {name} would have {c2:,} output channels, more than {MAX_CHANNELS:,}; "
                             f"lower its channel argument or width_multiple")
    if m is None or args is None or c1 is None:
        return
    try:
        bound = inspect.signature(m).bind_partial(*args).arguments
    except (TypeError, ValueError):
        return  # the wrong arguments are reported when the layer is built
    if m in (Conv, Focus) and "k" in bound:
        k = bound["k"]
        if any(_is_int(x) and x > MAX_KERNEL for x in (k if isinstance(k, (list, tuple)) else [k])):
            raise ModelYAMLError(f"{where}: {name} kernel {k!r} is larger than {MAX_KERNEL}; check its kernel argument")
    for key, width in HIDDEN_WIDTH.items():
        v = bound.get(key)
        if _is_number(v) and _is_int(c2) and width(c1, c2, v) > MAX_CHANNELS:
            raise ModelYAMLError(f"{where}: {name} would have {int(width(c1, c2, v)):,} hidden channels ({key}={v} "
                                 f"with {c1} input and {c2} output channels), more than {MAX_CHANNELS:,}; check its "
                                 f"'{key}' argument")


def check_size_keys(d: dict, where: str) -> None:
    """``nc`` and ``ch`` within the limits (their type is checked by the caller)."""
    for key, limit, what in (("nc", MAX_CLASSES, "classes"), ("ch", MAX_CHANNELS, "input channels")):
        v = d.get(key)
        if _is_int(v) and v > limit:
            raise ModelYAMLError(f"{where}: {key}: {v:,} is more than {limit:,} {what}; check the YAML's {key}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_model_dict(d: dict, where: str) -> None:
    """The top-level keys parse_model relies on: required keys, ``nc``, ``ch``, the two multipliers, ``anchors``."""
    check_required_keys(d, where)
    for key, what in (("nc", "the number of classes"), ("ch", "input channels, 3 for RGB")):
        if key in d and (not _is_int(d[key]) or d[key] < 1):
            raise ModelYAMLError(f"{where}: {key}: {d[key]!r} must be a positive integer ({what})")
    check_size_keys(d, where)
    rows = [*(d["backbone"] if isinstance(d["backbone"], list) else []),
            *(d["head"] if isinstance(d["head"], list) else [])]
    check_multiples(d, where, rows)
    check_anchors(d["anchors"], f"{where}: anchors")
    for key in ("backbone", "head"):
        if not isinstance(d[key], list):
            raise ModelYAMLError(f"{where}: {key} must be a list of [from, number, module, args] rows")
    check_layers(d, where)


def check_layers(d: dict, where_file: str) -> None:
    """Before any layer is built: each ``Detect`` row against the anchors, each channel block's arguments.

    Rows malformed in themselves (shape, module name, 'from') are left to parse_model, which names their problem.
    """
    names = {"nc": d["nc"], "anchors": d["anchors"], **kernel_names(d, where_file)}
    blocks = block_set_of(d, where_file)
    for i, row in enumerate(d["backbone"] + d["head"]):
        if not (isinstance(row, (list, tuple)) and len(row) == 4 and isinstance(row[2], str)):
            continue
        f, _, m_name, args = row
        m, froms = blocks.modules.get(m_name), [f] if isinstance(f, int) else f
        if m is None or not isinstance(froms, (list, tuple)):
            continue
        args = [_resolve_arg(a, names) for a in (args if isinstance(args, (list, tuple)) else [args])]
        where = f"{where_file}: layer {i} {row!r}"
        if m is Detect:
            check_detect_args(args, froms, d["nc"], where)
        elif m in blocks.channel_blocks:
            check_block_args(m, args, froms, where)


def check_anchors(anchors, where: str) -> None:
    """A positive anchor count per level, or rows of positive w,h pixel pairs, every row as long as the first."""
    if _is_int(anchors):
        if anchors < 1:
            raise ModelYAMLError(f"{where}: {anchors} must be a positive number of anchors per level (or one row of "
                                 f"w,h pairs per level, e.g. {ANCHORS_EXAMPLE})")
        if anchors > MAX_ANCHORS:
            raise ModelYAMLError(f"{where}: {anchors:,} anchors per level is more than {MAX_ANCHORS} (YOLOv5 uses 3)")
        return
    if not (isinstance(anchors, (list, tuple)) and anchors and all(isinstance(r, (list, tuple)) for r in anchors)):
        raise ModelYAMLError(f"{where}: expected one row of w,h pixel pairs per detection level, e.g. "
                             f"{ANCHORS_EXAMPLE}, or an anchor count; got {anchors!r}")
    for j, row in enumerate(anchors, 1):
        if not row or len(row) % 2:
            raise ModelYAMLError(f"{where}: row {j} has {len(row)} values; each anchor is a w,h pair, so a row needs "
                                 f"an even number of values")
        if len(row) > 2 * MAX_ANCHORS:
            raise ModelYAMLError(f"{where}: row {j} has {len(row) // 2:,} anchors, more than {MAX_ANCHORS} per level "
                                 f"(YOLOv5 uses 3)")
        if len(row) != len(anchors[0]):
            raise ModelYAMLError(f"{where}: row {j} has {len(row)} values ({len(row) // 2} anchors) but row 1 has "
                                 f"{len(anchors[0])} ({len(anchors[0]) // 2}); every level needs the same number of "
                                 f"anchors")
        bad = [v for v in row if not _is_number(v) or v <= 0]
        if bad:
            raise ModelYAMLError(f"{where}: row {j}: {bad[0]!r} is not a positive width or height in pixels")


def check_detect_args(args: list, froms: list[int], nc: int, where: str) -> None:
    """``Detect`` gets ``[nc, anchors]`` with one anchor row per input layer."""
    if len(args) != 2 or args[0] != nc:
        raise ModelYAMLError(f"{where}: Detect takes [nc, anchors] (nc = {nc}), got {args!r}")
    check_anchors(args[1], f"{where}: anchors")
    if isinstance(args[1], (list, tuple)) and len(args[1]) != len(froms):
        raise ModelYAMLError(f"{where}: Detect takes {len(froms)} input layers {list(froms)} but anchors has "
                             f"{len(args[1])} row(s); give one anchor row per Detect input (P3, P4, P5...)")


def check_block_args(m: type[nn.Module], args: list, froms: list[int], where: str) -> None:
    """Blocks with channel arguments: one input, positive output channels, positive kernel/stride, odd pool kernels."""
    if len(froms) != 1:
        raise ModelYAMLError(f"{where}: {m.__name__} takes one input layer, got 'from' {list(froms)}; join layers "
                             f"with a Concat first")
    if not args or not _is_int(args[0]) or args[0] < 1:
        raise ModelYAMLError(f"{where}: {m.__name__}'s first argument is its output channel count and must be a "
                             f"positive integer, got {args[:1] or 'nothing'}")
    if m in (Conv, Focus):
        for name, v in zip(("kernel", "stride"), args[1:3]):
            values = list(v) if isinstance(v, (list, tuple)) else [v]
            if not values or not all(_is_int(x) and x >= 1 for x in values):
                raise ModelYAMLError(f"{where}: {m.__name__} {name} {v!r} must be a positive integer")
    if m in (SPP, SPPF) and len(args) > 1:
        values = list(args[1]) if isinstance(args[1], (list, tuple)) else [args[1]]
        if not values or not all(_is_int(x) and x >= 1 and x % 2 for x in values):
            raise ModelYAMLError(f"{where}: {m.__name__} pooling kernel {args[1]!r}: kernels must be odd positive "
                                 f"integers (an even kernel changes the map size)")


def read_row(row, i: int, where_file: str, modules: dict[str, type[nn.Module]],
             names: dict) -> tuple[int | list[int], list[int], int, type[nn.Module], list, str]:
    """Layer ``i`` of a YAML, ``[from, number, module, args]``, checked and resolved: ``(from, from indices, number,
    module class, arguments with names such as nc substituted, where)`` (``where`` names the file, layer and row)."""
    where = f"{where_file}: layer {i} {row!r}"
    if not (isinstance(row, (list, tuple)) and len(row) == 4):
        raise ModelYAMLError(f"{where}: each layer must be [from, number, module, args]")
    f, n, m_name, args = row
    m = _resolve_module(m_name, where, modules)
    args = [_resolve_arg(a, names) for a in (args if isinstance(args, (list, tuple)) else [args])]
    froms = [f] if isinstance(f, int) else f
    if not (isinstance(froms, (list, tuple)) and froms and all(isinstance(x, int) for x in froms)):
        raise ModelYAMLError(f"{where}: 'from' must be an int or a list of ints")
    for x in froms:
        if not (x == -1 or -i <= x < i):
            raise ModelYAMLError(f"{where}: 'from' index {x} does not name an earlier layer (0..{i - 1} or -1..-{i})")
    if not isinstance(n, int) or n < 1:
        raise ModelYAMLError(f"{where}: 'number' must be a positive integer")
    return f, list(froms), n, m, args, where


def parse_model(d: dict, ch: list[int], verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a YOLOv5 YAML dict; returns ``(nn.Sequential of layers, indices whose outputs are kept)``."""
    where_file = d.get("yaml_file") or "model YAML"
    check_model_dict(d, where_file)
    nc, gd, gw = d["nc"], d["depth_multiple"], d["width_multiple"]
    ch_mul = d.get("channel_multiple") or 8
    act = parse_activation(d["activation"], f"{where_file}: 'activation'") if d.get("activation") else None
    anchors = d["anchors"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, (list, tuple)) else anchors
    no = na * (nc + 5)
    names = {"nc": nc, "anchors": anchors, **kernel_names(d, where_file)}
    blocks = block_set_of(d, where_file)
    if verbose:
        if blocks is not YOLOV5_BLOCKS:
            LOGGER.info(f"blocks: {blocks.name}")
        if act is not None:
            LOGGER.info(f"activation: {d['activation']}")
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    if no > MAX_CHANNELS:
        raise ModelYAMLError(f"{where_file}: Detect would have {na} anchors x ({nc} classes + 5) = {no:,} output "
                             f"channels per level, more than {MAX_CHANNELS:,}; check nc and anchors")

    def failed(e: Exception, where: str, m_name) -> ModelYAMLError:
        hint = f"; {PAPER_HINT}" if "blocks" not in d and m_name in pb.PAPER_BLOCKS else ""
        return ModelYAMLError(f"{where}: {e}{hint}")

    # every row's arguments and size first, so that a layer too large or wrong fails before any layer is built
    layer_specs, c2 = [], ch[-1]
    for i, row in enumerate(list(d["backbone"]) + list(d["head"])):
        f, froms, n_yaml, m, args, where = read_row(row, i, where_file, blocks.modules, names)
        n = max(round(n_yaml * gd), 1) if n_yaml > 1 else n_yaml
        check_layer_size(where, row[2], n, n_yaml, gd)
        c_in = [ch[x] for x in froms]
        try:
            args, c2, n_build = _layer_args(m, args, c_in, n, gw, ch_mul, no, blocks)
        except ModelYAMLError:
            raise
        except (ValueError, TypeError, IndexError, AssertionError) as e:
            raise failed(e, where, row[2]) from e
        check_layer_size(where, row[2], n, n_yaml, gd, c2, args, m, c_in[0])
        if m in STAGE_BLOCKS and n_build > 1:
            check_layer_size(where, row[2], n, n_yaml, gd, c2, [c2, c2, 1, *args[3:]], m, c2)
        layer_specs.append((i, f, froms, n, n_build, m, args, where, row[2]))
        if i == 0:
            ch = []
        ch.append(c2)

    layers, save = [], []
    for i, f, froms, n_, n, m, args, where, m_name in layer_specs:
        try:
            with default_activation(act):
                if m in STAGE_BLOCKS and n > 1:  # a ResNet stage: only the first block strides and changes width
                    m_ = nn.Sequential(m(*args), *(m(args[1], args[1], 1, *args[3:]) for _ in range(n - 1)))
                else:
                    m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        except ModelYAMLError:
            raise
        except (ValueError, TypeError, IndexError, AssertionError) as e:
            raise failed(e, where, m_name) from e

        m_.i, m_.f = i, f
        m_.type = f"nn.{m.__name__}" if m.__module__.startswith("torch.nn") else m.__name__
        m_.np = sum(p.numel() for p in m_.parameters())
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>18}{n_:>3}{m_.np:10.0f}  {m_.type:<40}{str(args):<30}")
        save.extend(x % i for x in froms if x != -1)
        layers.append(m_)
    return nn.Sequential(*layers), sorted(set(save))


def run(cfg: str | Path | dict = "yolov5s.yaml", batch_size: int = 1, imgsz: int = 640, device: str = "cpu",
        profile: bool = False, test: bool = False, attention: str = "", save_yaml: str = "") -> Model:
    """Build ``cfg`` (printing its layer table and summary); ``profile`` times each layer on a ``batch_size`` x
    ``imgsz`` input, ``test`` also builds every ``models/yolo*.yaml``; ``attention`` inserts attention layers
    (``NAME[@i,j]``, ``models/insert.py``) and ``save_yaml`` writes that YAML. Returns the model."""
    from ultralytics.utils.torch_utils import select_device

    from utils.cli import check_device, check_image_size, check_number

    check_number("--batch-size", batch_size, 1)
    check_image_size("--imgsz", imgsz, max_values=1)
    check_device(device)
    if isinstance(cfg, (str, Path)):  # a classifier's YAML (models/cls/): models/classify.py builds and prints it
        from models.classify import is_classification_yaml, load_cls_yaml, resolve_cls_cfg
        from models.classify import main as classify_main

        with contextlib.suppress(FileNotFoundError, ModelYAMLError):
            cls_cfg = resolve_cls_cfg(cfg)
            if is_classification_yaml(load_cls_yaml(cls_cfg)):
                return classify_main(["--cfg", str(cls_cfg), "--device", str(device)])
    if save_yaml and not attention:
        raise ValueError("--save-yaml writes the model built with --attention; add --attention NAME")
    if attention:
        from models.insert import attention_cfg, write_attention_cfg

        if save_yaml:
            LOGGER.info(f"Saved {write_attention_cfg(cfg, attention, save_yaml)}")
        cfg = attention_cfg(cfg, attention)
    dev = select_device(device, verbose=False)
    model = Model(cfg).to(dev)
    if profile:
        im = torch.rand(batch_size, 3, imgsz, imgsz, device=dev)
        model.eval()
        with torch.no_grad():
            model.predict(im, profile=True)
    if test:
        for f in sorted((ROOT / "models").glob("yolo*.yaml")):
            Model(f, verbose=False).info()
    return model


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build a model YAML and print its layer table and summary")
    parser.add_argument("--cfg", type=str, default="yolov5s.yaml", help="model.yaml")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size for --profile")
    parser.add_argument("--imgsz", type=int, default=640, help="image size for --profile")
    parser.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or cpu")
    parser.add_argument("--profile", action="store_true", help="time each layer")
    parser.add_argument("--test", action="store_true", help="build every models/yolo*.yaml")
    parser.add_argument("--attention", default="", metavar="NAME[@i,j]",
                        help="insert an attention module after Table 2's sites (the P4 and P5 backbone C3s), or after "
                             "layers i, j of --cfg; later layer indices shift (models/insert.py)")
    parser.add_argument("--save-yaml", default="", metavar="FILE", help="write the --attention model YAML to FILE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and build; returns 0, or prints one ``ERROR:`` line and exits with code 1."""
    from utils.cli import user_errors

    opt = parse_opt(argv)
    with user_errors():
        run(**vars(opt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
