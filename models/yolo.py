"""YOLOv5 (v6.0) detection model built from a YAML: the anchor-based ``Detect`` head, ``Model`` and ``parse_model``.

Usage:
    python models/yolo.py --cfg models/yolov5s-ema.yaml            # layer table + summary line
    python models/yolo.py --cfg models/yolov5s-ema.yaml --profile  # time each layer
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import math
import sys
from copy import deepcopy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # so `python models/yolo.py` finds the `models` package

from utils import offline  # noqa: E402  (keeps the engine offline before it is imported)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import yaml  # noqa: E402
from ultralytics.nn.tasks import BaseModel  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402
from ultralytics.utils.ops import make_divisible  # noqa: E402
from ultralytics.utils.torch_utils import fuse_conv_and_bn, initialize_weights, scale_img  # noqa: E402

from models.common import ATTENTION, C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus  # noqa: E402
from utils.autoanchor import check_anchor_order  # noqa: E402

offline.configure()


class Detect(nn.Module):
    """Anchor-based YOLOv5 head: one 1x1 conv per level predicting ``na`` boxes of ``nc + 5`` values per cell.

    Training returns the raw maps ``[(bs, na, ny, nx, nc + 5), ...]`` for the loss. Inference returns
    ``(y, raw)``, ``y`` of shape ``(bs, 4 + nc, n_anchors)``: xywh in input pixels and class scores
    multiplied by objectness, the layout Ultralytics' NMS consumes.
    """

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
        return torch.cat(z, 1).transpose(1, 2), raw

    def _decode(self, p: torch.Tensor, i: int) -> torch.Tensor:
        """Raw level-i map -> (bs, na*ny*nx, 4 + nc): xy = (2σ - 0.5 + grid)·s, wh = (2σ)²·anchor."""
        bs, _, ny, nx, _ = p.shape
        grid = self._grid(ny, nx, p)
        anchor_px = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(p.dtype)
        y = p.sigmoid()
        xy = (y[..., :2] * 2 - 0.5 + grid) * self.stride[i]
        wh = (y[..., 2:4] * 2) ** 2 * anchor_px
        cls = y[..., 5:] * y[..., 4:5]
        return torch.cat((xy, wh, cls), -1).view(bs, -1, 4 + self.nc)

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
        """Run a blank image once (eval mode, so BatchNorm statistics stay untouched) and read the strides."""
        training = self.training
        self.eval()
        with torch.no_grad():
            _, raw = self._predict_once(torch.zeros(1, ch, s, s))
        self.train(training)
        return torch.tensor([s / r.shape[-3] for r in raw])

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

# Blocks whose first argument is the output channel count (scaled by width_multiple).
CHANNEL_BLOCKS = {"Conv": Conv, "Bottleneck": Bottleneck, "C3": C3, "SPP": SPP, "SPPF": SPPF, "Focus": Focus}
# Blocks that repeat their inner bottleneck n times (depth_multiple scales n).
REPEAT_BLOCKS = {C3}
MODULES: dict[str, type[nn.Module]] = {**CHANNEL_BLOCKS, "Concat": Concat, "Detect": Detect, **ATTENTION}
REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


class ModelYAMLError(ValueError):
    """A model YAML that cannot be built; the message names the file, the line and the fix."""


def resolve_cfg(cfg: str | Path) -> Path:
    """Find a model YAML given a path, or a bare name looked up in ``models/``."""
    p = Path(cfg)
    for candidate in (p, ROOT / "models" / p.name, (ROOT / "models" / p.name).with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"model YAML '{cfg}' not found (looked in the working directory and {ROOT / 'models'})")


def load_model_yaml(path: str | Path) -> dict:
    """Read a model YAML and check its top-level keys before anything is built."""
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ModelYAMLError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ModelYAMLError(f"{path}: expected a mapping with keys {', '.join(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ModelYAMLError(f"{path}: missing key(s) {', '.join(missing)}; a YOLOv5 model YAML needs {', '.join(REQUIRED_KEYS)}")
    return d


def _resolve_module(name, where: str) -> type[nn.Module]:
    if isinstance(name, str):
        if name in MODULES:
            return MODULES[name]
        if name.startswith("nn.") and isinstance(getattr(nn, name[3:], None), type):
            return getattr(nn, name[3:])
    known = ", ".join(sorted(MODULES))
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


def parse_model(d: dict, ch: list[int], verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a YOLOv5 YAML dict; returns ``(nn.Sequential of layers, indices whose outputs are kept)``."""
    where_file = d.get("yaml_file") or "model YAML"
    nc, gd, gw = d["nc"], d["depth_multiple"], d["width_multiple"]
    anchors = d["anchors"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, (list, tuple)) else anchors
    no = na * (nc + 5)
    names = {"nc": nc, "anchors": anchors}
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save, c2 = [], [], ch[-1]
    rows = list(d["backbone"]) + list(d["head"])
    for i, row in enumerate(rows):
        where = f"{where_file}: layer {i} {row!r}"
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ModelYAMLError(f"{where}: each layer must be [from, number, module, args]")
        f, n, m_name, args = row
        m = _resolve_module(m_name, where)
        args = [_resolve_arg(a, names) for a in (args if isinstance(args, (list, tuple)) else [args])]
        froms = [f] if isinstance(f, int) else f
        if not (isinstance(froms, (list, tuple)) and froms and all(isinstance(x, int) for x in froms)):
            raise ModelYAMLError(f"{where}: 'from' must be an int or a list of ints")
        for x in froms:
            if not (x == -1 or -i <= x < i):
                raise ModelYAMLError(f"{where}: 'from' index {x} does not name an earlier layer (0..{i - 1} or -1..-{i})")
        if not isinstance(n, int) or n < 1:
            raise ModelYAMLError(f"{where}: 'number' must be a positive integer")
        n = max(round(n * gd), 1) if n > 1 else n

        try:
            if m in CHANNEL_BLOCKS.values():
                c1, c2 = ch[f], args[0]
                if c2 != no:
                    c2 = make_divisible(c2 * gw, 8)
                args = [c1, c2, *args[1:]]
                if m in REPEAT_BLOCKS:
                    args.insert(2, n)
                    n = 1
            elif m is nn.BatchNorm2d:
                args = [ch[f]]
            elif m is Concat:
                c2 = sum(ch[x] for x in froms)
            elif m is Detect:
                args.append([ch[x] for x in froms])
                if isinstance(args[1], int):  # anchor count only: placeholders until AutoAnchor
                    args[1] = [list(range(args[1] * 2))] * len(froms)
            elif m in ATTENTION.values():
                c2 = ch[f]
                args = _attention_args(m, args, c2, gw)
            else:
                c2 = ch[f]
            m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        except ModelYAMLError:
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise ModelYAMLError(f"{where}: {e}") from e

        m_.i, m_.f = i, f
        m_.type = f"nn.{m.__name__}" if m.__module__.startswith("torch.nn") else m.__name__
        m_.np = sum(p.numel() for p in m_.parameters())
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>18}{n:>3}{m_.np:10.0f}  {m_.type:<40}{str(args):<30}")
        save.extend(x % i for x in froms if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


def main(argv: list[str] | None = None) -> Model:
    parser = argparse.ArgumentParser(description="Build a model YAML and print its layer table and summary")
    parser.add_argument("--cfg", type=str, default="yolov5s.yaml", help="model.yaml")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size for --profile")
    parser.add_argument("--imgsz", type=int, default=640, help="image size for --profile")
    parser.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or cpu")
    parser.add_argument("--profile", action="store_true", help="time each layer")
    parser.add_argument("--test", action="store_true", help="build every models/yolo*.yaml")
    opt = parser.parse_args(argv)
    from models.classify import is_classification_yaml, load_cls_yaml, resolve_cls_cfg

    with contextlib.suppress(FileNotFoundError, ModelYAMLError):  # a classifier's YAML: classify.py prints it
        cfg = resolve_cls_cfg(opt.cfg)
        if is_classification_yaml(load_cls_yaml(cfg)):
            from models.classify import main as classify_main

            return classify_main(["--cfg", str(cfg), "--device", opt.device])
    device = torch.device("cpu" if opt.device == "cpu" else f"cuda:{opt.device}")
    model = Model(opt.cfg).to(device)
    if opt.profile:
        im = torch.rand(opt.batch_size, 3, opt.imgsz, opt.imgsz, device=device)
        model.eval()
        with torch.no_grad():
            model.predict(im, profile=True)
    if opt.test:
        for cfg in sorted((ROOT / "models").glob("yolo*.yaml")):
            Model(cfg, verbose=False).info()
    return model


if __name__ == "__main__":
    main()
