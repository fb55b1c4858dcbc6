"""Image classifiers built from a YAML: ResNet (CIFAR configuration), MobileNetV2 and YOLOv5's ``-cls`` models, each
able to take any attention module of the registry, as in the EMA paper's Tables 1, 3 and 4.

A classification YAML has the detection YAML's layout without anchors: ``nc``, ``depth_multiple``,
``width_multiple``, ``backbone`` and ``head`` rows ``[from, number, module, args]``, the last one a classification
head. Optional keys: ``imgsz`` (the size FLOPs are counted at) and ``paper`` (a note printed next to the summary).

Attention inside a residual block is named in the block's arguments, e.g. ``[-1, 3, ResBottleneck, [256, 1, EMA]]``
(arguments after the module name are the module's own options: ``[256, 1, EMA, 16]`` = ``EMA(c, factor=16)``). A
mapping as the last argument holds the block's keyword options (``[512, 2, ECA, 5, {down: avg}]``). ``k_size: [3, 5,
5, 7]`` defines the names ``k1``...``k4`` for rows (ECA-Net's per-stage ECA kernels; ``--ksize`` replaces them), and
``attention_at: projection`` moves InvertedResidual's attention after its projection (ECA-Net's MobileNetV2).

Usage:
    python models/classify.py --cfg models/cls/resnet50-cifar100-ema.yaml   # layer table, params, FLOPs vs paper
    python models/yolo.py --cfg models/cls/mobilenetv2-ca.yaml               # the same (yolo.py hands it over)
"""

from __future__ import annotations

import argparse
import sys
from copy import deepcopy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # so `python models/classify.py` finds the `models` package

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from ultralytics.nn.tasks import BaseModel  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402
from ultralytics.utils.ops import make_divisible  # noqa: E402
from ultralytics.utils.torch_utils import initialize_weights  # noqa: E402

from models.attention import ATTENTION  # noqa: E402
from models.common import C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus  # noqa: E402
from models.resnet import ACTIVATIONS, ConvAct, ResBasicBlock, ResBottleneck, make_attention  # noqa: E402,F401
from models.yolo import (  # noqa: E402
    MAX_CLASSES,
    Model,
    ModelYAMLError,
    _is_int,
    check_layer_size,
    check_multiples,
    check_size_keys,
    kernel_names,
    read_row,
    resolve_cfg,
)
from utils import offline  # noqa: E402,F401  (keeps the engine offline before it is imported)

REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "backbone", "head")


ATTENTION_AT = ("expanded", "projection")  # InvertedResidual: after the depthwise conv, or after the projection


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion by ``t``, 3x3 depthwise conv, linear 1x1 projection; residual when shapes
    allow. An optional attention module acts on the expanded features after the depthwise conv (``at="expanded"``,
    where Coordinate Attention's MobileNetV2 places it) or on the projection's BatchNorm output before the residual
    sum (``at="projection"``, ECA-Net's MobileNetV2); a YAML chooses with its top-level key ``attention_at``."""

    def __init__(self, c1: int, c2: int, s: int = 1, t: float = 6, attention: str | None = None, *args,
                 at: str = "expanded"):
        super().__init__()
        if at not in ATTENTION_AT:
            raise ValueError(f"attention_at must be one of {', '.join(ATTENTION_AT)}, got {at!r}")
        c_ = int(round(c1 * t))
        self.cv1 = ConvAct(c1, c_, 1, 1, "relu6") if t != 1 else nn.Identity()
        self.cv2 = ConvAct(c_, c_, 3, s, "relu6", g=c_)
        self.at = at
        self.att = make_attention(attention, c_ if at == "expanded" else c2, *args)
        self.cv3 = ConvAct(c_, c2, 1, 1, "none")
        self.add = s == 1 and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.at == "expanded":
            y = self.cv3(self.att(self.cv2(self.cv1(x))))
        else:
            y = self.att(self.cv3(self.cv2(self.cv1(x))))
        return x + y if self.add else y


class ClassifierHead(nn.Module):
    """Common output of the heads: logits while training, ``(probabilities, logits)`` in eval mode (what the
    engine's validator, predictor and loss read; exports keep the probabilities)."""

    def _out(self, logits: torch.Tensor):
        return logits if self.training else (logits.softmax(1), logits)


class Classify(ClassifierHead):
    """YOLOv5's classification head: 1x1 Conv to 1280 channels, global average pool, dropout, linear."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 dropout_p: float = 0.0):
        super().__init__()
        c_ = 1280  # efficientnet_b0 size, as in YOLOv5
        self.conv = Conv(c1, c_, k, s, p, g)
        self.drop = nn.Dropout(p=dropout_p, inplace=True)
        self.linear = nn.Linear(c_, c2)

    def forward(self, x: torch.Tensor | list[torch.Tensor]):
        if isinstance(x, list):
            x = torch.cat(x, 1)
        return self._out(self.linear(self.drop(self.conv(x).mean((2, 3)))))


class LinearHead(ClassifierHead):
    """Global average pool, dropout and one fully connected layer: the ResNet and MobileNetV2 classifier."""

    def __init__(self, c1: int, c2: int, dropout_p: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(p=dropout_p)
        self.linear = nn.Linear(c1, c2)

    def forward(self, x: torch.Tensor):
        return self._out(self.linear(self.drop(x.mean((2, 3)))))


class ClassificationLoss:
    """Cross-entropy (with optional label smoothing) on the head's logits; returns ``(loss, {"loss": ...})``."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = preds[1] if isinstance(preds, (list, tuple)) else preds
        loss = F.cross_entropy(logits, batch["cls"], label_smoothing=self.label_smoothing)
        return loss, {"loss": loss.detach()}


# Blocks whose first argument is the output channel count (scaled by width_multiple).
CHANNEL_BLOCKS = {"Conv": Conv, "ConvAct": ConvAct, "Bottleneck": Bottleneck, "C3": C3, "SPP": SPP, "SPPF": SPPF,
                  "Focus": Focus, "ResBottleneck": ResBottleneck, "ResBasicBlock": ResBasicBlock,
                  "InvertedResidual": InvertedResidual}
# Stage blocks: ``n`` blocks whose first one takes the row's stride (third argument) and channel change, the others
# stride 1 from c2 to c2 (ResNet's and MobileNetV2's stages).
STAGE_BLOCKS = (ResBottleneck, ResBasicBlock, InvertedResidual)
HEADS = {"Classify": Classify, "LinearHead": LinearHead}
MODULES: dict[str, type[nn.Module]] = {**CHANNEL_BLOCKS, **HEADS, "Concat": Concat, **ATTENTION}
YOLOV5_BLOCKS = (Conv, Bottleneck, C3, SPP, SPPF, Focus, Classify)  # initialised as YOLOv5 does (BN eps/momentum)


def is_classification_yaml(d: dict) -> bool:
    """Whether a model dict describes a classifier: no anchors, and a classification head as its last layer."""
    rows = list(d.get("backbone") or []) + list(d.get("head") or [])
    last = rows[-1] if rows else None
    return "anchors" not in d and isinstance(last, (list, tuple)) and len(last) == 4 and last[2] in HEADS


def load_cls_yaml(path: str | Path) -> dict:
    """Read a classification YAML and check its top-level keys before anything is built."""
    try:
        d = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ModelYAMLError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(d, dict) or (missing := [k for k in REQUIRED_KEYS if k not in d]):
        raise ModelYAMLError(f"{path}: a classification YAML is a mapping with keys {', '.join(REQUIRED_KEYS)}"
                             + (f"; missing {', '.join(missing)}" if isinstance(d, dict) else ""))
    return d


def cls_yaml_from_detection(d: dict, nc: int, cutoff: int = 10) -> dict:
    """The classifier YOLOv5 makes from a detection YAML: its first ``cutoff - 1`` layers and a ``Classify`` head in
    place of layer ``cutoff - 1`` (for v6.0 models with the default cutoff 10: the backbone without SPPF)."""
    rows = list(d["backbone"]) + list(d["head"])
    if not 2 <= cutoff <= len(rows):
        raise ModelYAMLError(f"{d.get('yaml_file', 'model YAML')}: --cutoff {cutoff} must lie in 2..{len(rows)}")
    out = {k: d[k] for k in ("depth_multiple", "width_multiple") if k in d}
    stem = Path(d.get("yaml_file") or "model").stem
    out.update(nc=nc, backbone=rows[: cutoff - 1], head=[[rows[cutoff - 1][0], 1, "Classify", ["nc"]]],
               yaml_file=f"{stem}-cls (cutoff {cutoff})")
    return out


def yolov5_cls_yaml(sd: dict[str, torch.Tensor]) -> dict | None:
    """The classification YAML of an official YOLOv5 ``yolov5?-cls.pt`` from its state_dict (those checkpoints store
    no YAML): width from the stem's channels, depth from the first C3's bottlenecks, ``nc`` from the head; ``None``
    when the weights are not a YOLOv5 backbone (cut at 10) with a ``Classify`` head."""
    try:
        width = sd["model.0.conv.weight"].shape[0] / 64
        n2 = len({k.split(".")[3] for k in sd if k.startswith("model.2.m.")})
        nc = sd["model.9.linear.weight"].shape[0]
    except (KeyError, AttributeError, IndexError):
        return None
    depth = {1: 0.33, 2: 0.67, 3: 1.0, 4: 1.33}.get(n2)
    if depth is None or "model.9.conv.conv.weight" not in sd:
        return None
    d = load_cls_yaml(ROOT / "models" / "cls" / "yolov5s-cls.yaml")
    d.update(nc=nc, depth_multiple=depth, width_multiple=width, yaml_file="yolov5-cls (official checkpoint)")
    return d


def parse_ksize(ksize: str | list[int] | tuple[int, ...]) -> list[int]:
    """ECA kernel sizes per stage from ECA-Net's ``--ksize`` form (``"3557"``: one digit per stage) or a list."""
    if isinstance(ksize, str):
        parts = ksize.replace(" ", "").split(",") if "," in ksize else list(ksize.strip())
        if not parts or not all(x.isdigit() for x in parts):
            raise ValueError(f"--ksize {ksize!r}: give one odd kernel size per stage as digits, e.g. 3557 "
                             f"(or comma-separated: 3,5,5,7)")
        ks = [int(x) for x in parts]
    else:
        ks = [int(k) for k in ksize]
    if not ks or any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(f"--ksize {ksize!r}: ECA kernel sizes must be positive odd numbers, e.g. 3557")
    return ks


def with_ksize(d: dict, ksize: str | list[int] | None) -> dict:
    """The model dict ``d`` with its ``k_size`` list replaced by ``ksize`` (ECA-Net's ``--ksize 3557``)."""
    if ksize is None or ksize == "":
        return d
    where = d.get("yaml_file") or "model YAML"
    ks = parse_ksize(ksize)
    if "k_size" not in d:
        raise ValueError(f"--ksize {ksize}: {where} has no 'k_size' key (only the ECA-Net YAMLs, e.g. "
                         f"models/cls/eca-resnet50.yaml, take per-stage kernel sizes)")
    if len(ks) != len(d["k_size"]):
        raise ValueError(f"--ksize {ksize}: {where} has {len(d['k_size'])} kernel sizes (k_size: {d['k_size']}), "
                         f"got {len(ks)}")
    return {**d, "k_size": ks}


def parse_cls_model(d: dict, ch: list[int], verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a classification YAML dict; returns ``(nn.Sequential of layers, saved layer indices)``."""
    where_file = d.get("yaml_file") or "model YAML"
    nc, gd, gw = d["nc"], d["depth_multiple"], d["width_multiple"]
    names = {"nc": nc, **kernel_names(d, where_file)}
    at = d.get("attention_at", "expanded")
    if at not in ATTENTION_AT:
        raise ModelYAMLError(f"{where_file}: 'attention_at' must be one of {', '.join(ATTENTION_AT)}, got {at!r}")
    rows = list(d["backbone"]) + list(d["head"])
    check_size_keys(d, where_file)
    check_multiples(d, where_file, rows)
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    # every row's arguments and size first, so that a layer too large fails before any layer is built
    layer_specs, c2 = [], ch[-1]
    for i, row in enumerate(rows):
        f, froms, n_yaml, m, args, where = read_row(row, i, where_file, MODULES, names)
        n = max(round(n_yaml * gd), 1) if n_yaml > 1 else n_yaml
        check_layer_size(where, row[2], n, n_yaml, gd)
        shown = list(args)  # the layer table lists the YAML's arguments
        kwargs = dict(args.pop()) if args and isinstance(args[-1], dict) else {}  # a trailing mapping: options
        if m is InvertedResidual and at != "expanded":
            kwargs.setdefault("at", at)
        try:
            c1 = sum(ch[x] for x in froms) if m in HEADS.values() else ch[f if isinstance(f, int) else froms[0]]
            if m in CHANNEL_BLOCKS.values():
                c2 = make_divisible(args[0] * gw, 8) if gw != 1 else args[0]
                args = [c1, c2, *args[1:]]
                if m is C3:
                    args.insert(2, n)
                    n = 1
            elif m in HEADS.values():
                c2 = args[0]
                args = [c1, *args]
            elif m is Concat:
                c2 = sum(ch[x] for x in froms)
            elif m in set(ATTENTION.values()):
                c2, args = c1, [c1, *args]
            else:
                c2 = c1
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise ModelYAMLError(f"{where}: {e}") from e
        if m in HEADS.values() and _is_int(c2) and c2 > MAX_CLASSES:
            raise ModelYAMLError(f"{where}: {m.__name__} would have {c2:,} outputs, more than {MAX_CLASSES:,} "
                                 f"classes; check nc")
        check_layer_size(where, row[2], n, n_yaml, gd, None if m in HEADS.values() else c2, args, m, c1)
        rest = [c2, c2, 1, *args[3:]] if m in STAGE_BLOCKS and n > 1 else None
        if rest:
            check_layer_size(where, row[2], n, n_yaml, gd, c2, rest, m, c2)
        layer_specs.append((i, f, froms, n, m, args, kwargs, rest, where, shown))
        ch = [c2] if i == 0 else [*ch, c2]

    layers, save = [], []
    for i, f, froms, n, m, args, kwargs, rest, where, shown in layer_specs:
        try:
            if rest:  # a stage: the first block strides and changes width, the rest keep both
                m_ = nn.Sequential(m(*args, **kwargs), *(m(*rest, **kwargs) for _ in range(n - 1)))
            else:
                m_ = nn.Sequential(*(m(*args, **kwargs) for _ in range(n))) if n > 1 else m(*args, **kwargs)
        except ModelYAMLError:
            raise
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise ModelYAMLError(f"{where}: {e}") from e
        m_.i, m_.f, m_.type, m_.np = i, f, m.__name__, sum(p.numel() for p in m_.parameters())
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>18}{n:>3}{m_.np:10.0f}  {m_.type:<40}{str(shown):<30}")
        save.extend(x % i for x in froms if x != -1)
        layers.append(m_)
    if not isinstance(layers[-1], tuple(HEADS.values())):
        raise ModelYAMLError(f"{where_file}: the last layer must be a classification head "
                             f"({', '.join(HEADS)}), got {type(layers[-1]).__name__}")
    return nn.Sequential(*layers), sorted(set(save))


class ClassificationModel(BaseModel):
    """A classifier built from a classification YAML (path, bare name in ``models/cls/``, or dict).

    ``ClassificationModel("models/cls/resnet50-cifar100-ema.yaml", ch=3, nc=None)``; ``nc`` overrides the YAML's.
    Derives from Ultralytics' ``BaseModel`` so the engine can train it (``model(batch_dict)`` is the loss). Training
    forwards return logits, eval forwards ``(probabilities, logits)``.
    """

    is_fused = Model.is_fused

    def __init__(self, cfg: str | Path | dict = "yolov5s-cls.yaml", ch: int = 3, nc: int | None = None,
                 verbose: bool = True):
        super().__init__()
        file = None if isinstance(cfg, dict) else str(resolve_cls_cfg(cfg))
        self.yaml = deepcopy(cfg) if file is None else {**load_cls_yaml(file), "yaml_file": file}
        self.yaml_file = self.yaml.get("yaml_file", "")
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        self.model, self.save = parse_cls_model(deepcopy(self.yaml), ch=[ch], verbose=verbose)
        self.nc = self.yaml["nc"]
        self.names = {i: str(i) for i in range(self.nc)}
        self.stride = torch.tensor([1.0])  # global pooling: any input size works
        self.label_smoothing = 0.0  # read by the loss (the trainer sets it)
        for m in self.model:
            if type(m) in YOLOV5_BLOCKS:
                initialize_weights(m)  # YOLOv5's BatchNorm eps/momentum for YOLOv5 blocks only
        if verbose:
            self.info()
            LOGGER.info("")

    @property
    def imgsz(self) -> int:
        """The image size of the YAML (``imgsz``; 224 when absent), at which FLOPs are reported."""
        return int(self.yaml.get("imgsz", 224))

    def info(self, detailed: bool = False, verbose: bool = True, imgsz: int | None = None):
        """YOLOv5's summary line (GFLOPs by thop) plus the multiply-adds of the conv and FC layers (what the paper's
        "FLOPs"/"M-Adds" columns count) at the YAML's image size, and the paper's note."""
        imgsz = imgsz or self.imgsz
        n_l, n_p, n_g, flops = Model.info(self, verbose=False, imgsz=imgsz)
        name = Path(self.yaml_file).stem if self.yaml_file else "Model"
        fused = " (fused)" if self.is_fused() else ""
        if verbose:
            paper = f"; paper: {self.yaml['paper']}" if self.yaml.get("paper") else ""
            LOGGER.info(f"{name} summary{fused}: {n_l} layers, {n_p} parameters, {n_g} gradients, {flops:.2f} GFLOPs; "
                        f"{count_macs(self, imgsz) / 1e9:.3f}G conv/FC multiply-adds at {imgsz}x{imgsz}{paper}")
        return n_l, n_p, n_g, flops

    def fuse(self, verbose: bool = True, imgsz: int | None = None) -> "ClassificationModel":
        """Fold every Conv's BatchNorm into its convolution (inference only; ConvAct is a Conv)."""
        Model.fuse(self, verbose=False)
        if verbose:
            self.info(imgsz=imgsz)
        return self

    def init_criterion(self) -> ClassificationLoss:
        return ClassificationLoss(self.label_smoothing)

    def reshape_outputs(self, nc: int) -> None:
        """Give the head ``nc`` outputs (a new, untrained linear layer) if it has another count."""
        head = self.model[-1]
        if head.linear.out_features != nc:
            head.linear = nn.Linear(head.linear.in_features, nc).to(head.linear.weight.device)
            self.nc = self.yaml["nc"] = nc
            self.names = {i: str(i) for i in range(nc)}


def resolve_cls_cfg(cfg: str | Path) -> Path:
    """A classification YAML by path, or by bare name in ``models/cls/`` (``resnet50-cifar100-ema``)."""
    p = Path(cfg)
    folder = ROOT / "models" / "cls"
    for candidate in (p, folder / p.name, (folder / p.name).with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    return resolve_cfg(cfg)  # same error as for detection YAMLs when not found anywhere


def count_params(model: nn.Module, norms: bool = True) -> int:
    """Parameters of ``model``; ``norms=False`` leaves out BatchNorm/GroupNorm ones (how the paper counted its CA and
    EMA rows of Tables 1 and 4, see the README)."""
    skip = () if norms else (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    return sum(p.numel() for m in model.modules() if not isinstance(m, skip) for p in m.parameters(recurse=False))


def count_macs(model: nn.Module, imgsz: int = 224) -> int:
    """Multiply-adds of every Conv2d and Linear layer in one forward pass of a ``1 x ch x imgsz x imgsz`` image.

    The count papers report as "FLOPs" or "M-Adds" for ResNet and MobileNetV2 (thop adds BatchNorm, activations and
    pooling on top). Grouped and batch-folded convolutions count what runs: EMA's convolutions over its G groups count
    G times.
    """
    total = [0]

    def conv(m: nn.Conv2d, x, y: torch.Tensor) -> None:
        total[0] += y.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: nn.Linear, x, y: torch.Tensor) -> None:
        total[0] += y.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    p = next(model.parameters())
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, getattr(model, "yaml", {}).get("ch", 3), imgsz, imgsz, device=p.device,
                                     dtype=p.dtype))
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return total[0]


def main(argv: list[str] | None = None) -> ClassificationModel:
    parser = argparse.ArgumentParser(description="Build a classification YAML; print its layer table and summary")
    parser.add_argument("--cfg", type=str, default="yolov5s-cls.yaml", help="model.yaml")
    parser.add_argument("--imgsz", type=int, default=None, help="image size for FLOPs (default: the YAML's imgsz)")
    parser.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or cpu")
    parser.add_argument("--ksize", type=str, default=None, help="ECA kernel size per stage of an ECA-Net YAML (3557)")
    opt = parser.parse_args(argv)
    device = torch.device("cpu" if opt.device == "cpu" else f"cuda:{opt.device}")
    cfg = opt.cfg
    if opt.ksize:
        file = resolve_cls_cfg(cfg)
        cfg = with_ksize({**load_cls_yaml(file), "yaml_file": str(file)}, opt.ksize)
    model = ClassificationModel(cfg).to(device)  # layer table and summary at the YAML's image size
    if opt.imgsz and opt.imgsz != model.imgsz:
        model.info(imgsz=opt.imgsz)
    n, n_wo = count_params(model), count_params(model, norms=False)
    LOGGER.info(f"parameters: {n / 1e6:.2f}M ({n_wo / 1e6:.2f}M without BatchNorm/GroupNorm parameters)")
    return model


if __name__ == "__main__":
    main()
