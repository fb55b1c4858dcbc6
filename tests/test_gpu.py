"""What a user with a GPU runs (``pytest -m gpu``; skipped without CUDA): AMP training, fp16 validation, deterministic
mode, TensorRT. About 5 minutes on one modern GPU. ``benchmarks.py --device 0 --half --train`` gives the speed table.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pytest
import torch

import train
import val
from models.attention import ATTENTION
from tests.helpers import shapes_data

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m gpu on a GPU)")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def amp_run(tmp_path_factory) -> Path:
    """yolov5s-ema trained with AMP (the engine's default on CUDA) for a few hundred iterations on the shapes data."""
    root = tmp_path_factory.mktemp("gpu")
    data = shapes_data(root, n_train=400, n_val=100, imgsz=256)
    trainer = train.run(device="0", data=str(data), cfg="models/yolov5s-ema.yaml", imgsz=256, batch_size=16,
                        epochs=12, hyp="data/hyps/hyp.shapes.yaml", optimizer="AdamW", project=str(root / "runs"),
                        workers=4)
    assert trainer.amp, "AMP is on by default on CUDA"
    return Path(trainer.save_dir)


def test_amp_training_loss_falls_without_nan(amp_run):
    rows = list(csv.DictReader((amp_run / "results.csv").open()))
    assert len(rows) == 12  # 25 iterations per epoch: 300 AMP iterations
    rows = [{k.strip(): float(v) for k, v in row.items()} for row in rows]
    losses = [sum(v for k, v in row.items() if k.startswith("train/")) for row in rows]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]
    assert rows[-1]["metrics/mAP_0.5"] > 0.1  # YOLOv5's column names


def test_fp16_validation_matches_fp32(amp_run):
    data = str(amp_run.parents[1] / "shapes.yaml")
    best = str(amp_run / "weights" / "best.pt")
    project = str(amp_run.parent / "val")
    fp32, fp16 = (val.run(weights=best, data=data, imgsz=256, device="0", half=half, project=project)[0]
                  for half in (False, True))
    for key in ("metrics/mAP50(B)", "metrics/mAP50-95(B)"):  # within 0.5 points
        assert abs(fp16[key] - fp32[key]) < 0.005, key


@pytest.mark.parametrize("name", sorted({cls.__name__ for cls in ATTENTION.values()}))
def test_modules_train_deterministically_on_cuda(name):
    """The engine trains with deterministic algorithms (warn_only): no module may raise; an op without a
    deterministic kernel only warns."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        m = ATTENTION[name](128).cuda().train()
        x = torch.randn(2, 128, 20, 20, device="cuda", requires_grad=True)
        with warnings.catch_warnings(record=True), torch.autocast("cuda", dtype=torch.float16):
            y = m(x)
        y.float().square().mean().backward()
        assert torch.isfinite(x.grad).all()
    finally:
        torch.use_deterministic_algorithms(False)


def test_tensorrt_export_matches_pytorch(amp_run):
    pytest.importorskip("tensorrt")
    import export
    from utils.checkpoint import load_backend

    best = amp_run / "weights" / "best.pt"
    export.run(weights=str(best), include=["engine"], imgsz=(256, 256), device="0", half=True)
    engine_file = best.with_suffix(".engine")
    im = torch.rand(1, 3, 256, 256, device="cuda")
    y_pt = load_backend(best, device="cuda:0")(im)
    y_trt = load_backend(engine_file, device="cuda:0")(im.half())
    raw = load_backend(engine_file, device="cuda:0", raw=True)(im.half())  # the engine's own output: YOLOv5's
    raw = raw[0] if isinstance(raw, (list, tuple)) else raw
    assert raw.shape == (1, y_trt.shape[2], y_trt.shape[1] + 1)  # (batch, anchors, 5 + nc)
    y_pt = y_pt[0] if isinstance(y_pt, (list, tuple)) else y_pt
    y_trt = y_trt[0] if isinstance(y_trt, (list, tuple)) else y_trt
    conf = y_pt[:, 4:].amax(1) > 0.25
    assert torch.allclose(y_trt.float()[:, :4][conf.expand_as(y_pt[:, :4])],
                          y_pt[:, :4][conf.expand_as(y_pt[:, :4])], atol=2.0)
