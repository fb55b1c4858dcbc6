"""Helpers shared by the test files: random weights that a bug cannot hide behind, and stand-in detection heads."""

from __future__ import annotations

import math
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.yolo import Model, resolve_cfg
from utils.loss import DEFAULT_HYP

ROOT = Path(__file__).resolve().parents[1]
COCO_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


def randomize(module: nn.Module, seed: int = 1, fan_in: bool = False) -> nn.Module:
    """Give every parameter and BN statistic a random value, so an identity-like init cannot hide a bug; eval mode.

    Weights are N(0, 0.5), or with ``fan_in`` N(0, 1/sqrt(fan-in)) so that deep stacks keep unit-scale activations.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = 1 / math.sqrt(p[0].numel()) if fan_in and p.ndim > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return module.eval()


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial normalisation statistics and affine terms, so that fusing, exporting or loading that folded or
    dropped them would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            n = m.weight.numel()
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def build(cfg: str, seed: int = 0, **kwargs) -> Model:
    """A random model of ``cfg`` (a YAML path or a name in models/) in eval mode, with random normalisation and
    scores of O(1) (head biases near 0), so that output differences are meaningful."""
    torch.manual_seed(seed)
    model = randomise_bn(Model(resolve_cfg(cfg), verbose=False, **kwargs), seed).eval()
    for conv in model.model[-1].m:
        conv.bias.data.normal_(0, 0.5)
    return model


class StubDetect(nn.Module):
    """Anchor-based head stand-in with ``Detect``'s attributes only: nc, no, nl, na, stride, anchors (nl, na, 2) in
    stride units, m. ``anchors`` are in pixels, one row (or ``na`` pairs) per level."""

    def __init__(self, nc: int = 80, anchors=COCO_ANCHORS, stride=(8, 16, 32)):
        super().__init__()
        nl = len(stride)
        px = torch.tensor(np.asarray(anchors, dtype=np.float32)).view(nl, -1, 2)
        self.nc, self.no, self.nl, self.na = nc, nc + 5, nl, px.shape[1]
        self.register_buffer("stride", torch.tensor(stride, dtype=torch.float32))
        self.register_buffer("anchors", px / self.stride.view(-1, 1, 1))
        self.m = nn.ModuleList(nn.Conv2d(4, self.na * self.no, 1) for _ in range(self.nl))


class StubModel(nn.Module):
    """A model whose only layer is a ``StubDetect``, with loss hyperparameters ``hyp`` (default ``DEFAULT_HYP``)."""

    def __init__(self, hyp: dict | None = None, **det_kwargs):
        super().__init__()
        self.model = nn.Sequential(StubDetect(**det_kwargs))
        self.hyp = dict(DEFAULT_HYP) if hyp is None else hyp


SHAPES_NAMES = {0: "circle", 1: "rectangle", 2: "triangle", 3: "star"}


def shapes_data(root: Path, n_train: int, n_val: int, imgsz: int, seed: int = 0) -> Path:
    """A generated shapes dataset under ``root/shapes`` and its data YAML ``root/shapes.yaml`` (absolute paths, so
    nothing is written into the repository); returns the YAML's path."""
    import yaml

    from utils.dataprep import make_shapes_dataset

    make_shapes_dataset(root / "shapes", n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed)
    f = root / "shapes.yaml"
    f.write_text(yaml.safe_dump({"path": str(root / "shapes"), "train": "images/train", "val": "images/val",
                                 "names": SHAPES_NAMES}))
    return f


def one_error(main, argv: list[str], capsys) -> str:
    """Run a CLI expecting exit code 1, no traceback and exactly one ``ERROR:`` line on stderr; return that line."""
    import pytest

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("ERROR:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def varied_boxes_model(cfg, names: dict[int, str], obj_bias: float):
    """A model with random weights that still gives varied boxes: BatchNorm statistics set from one batch (so
    features do not fade through the random layers), class biases apart and the objectness bias ``obj_bias``."""
    import torch

    from models.yolo import Model

    torch.manual_seed(0)
    model = Model(cfg, nc=len(names), verbose=False)
    det = model.model[-1]
    for conv in det.m:
        b = conv.bias.data.view(det.na, -1)
        b[:, 4] = obj_bias
        b[:, 5:] = torch.linspace(1.0, -1.0, len(names))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0  # running statistics := the next batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 96, 128, generator=torch.Generator().manual_seed(0)))
    model.names = dict(names)
    return model.eval()


def onnx_relative_error(model, file: Path, hw: tuple[int, int], **session_options) -> float:
    """Export ``model`` (eval mode) to ONNX next to ``file`` and run it on ONNX Runtime on ``probe_input``: checks
    that the export holds YOLOv5's layout (batch, anchors, 5 + nc) and returns its largest difference from the
    PyTorch model's (batch, 4 + nc, anchors) output, relative to each channel's scale (pixels for boxes, 1 for
    scores)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    import export
    from tests.fingerprint import probe_input
    from utils.backend import yolov5_to_engine

    out = export.export_model(deepcopy(model), file, include=["onnx"], imgsz=list(hw), check=False)
    x = probe_input(*hw)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    session = ort.InferenceSession(str(out["onnx"]["file"]), providers=["CPUExecutionProvider"], **session_options)
    y = session.run(None, {"images": x.numpy()})[0]  # YOLOv5's layout (batch, anchors, 5 + nc)
    assert y.shape == (ref.shape[0], ref.shape[2], ref.shape[1] + 1)
    y = yolov5_to_engine(torch.from_numpy(y)).numpy()  # boxes, obj x cls: the PyTorch model's (batch, 4 + nc, anchors)
    assert y.shape == ref.shape
    scale = np.abs(ref).max(axis=(0, 2), keepdims=True) + 1
    return float((np.abs(y - ref) / scale).max())
