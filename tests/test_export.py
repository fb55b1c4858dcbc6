"""export.py: every Table 2 attention type exports to ONNX and matches PyTorch; TorchScript/OpenVINO round trips;
metadata readable by Ultralytics' AutoBackend; clear errors for unknown or missing formats."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import export
from models.yolo import Model
from tests.helpers import build
from utils.backend import yolov5_to_engine
from utils.checkpoint import load_backend
from utils.exporters import export_model

ROOT = Path(__file__).resolve().parents[1]


def ort_run(path: Path, x: torch.Tensor) -> np.ndarray:
    """The export's output in YOLOv5's layout (bs, anchors, 5 + nc), converted to PyTorch's (bs, 4 + nc, anchors)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output0"]  # only the decoded tensor, no raw maps
    y = session.run(None, {"images": x.numpy()})[0]
    assert y.ndim == 3 and y.shape[2] == 85  # YOLOv5's layout: xywh, objectness, 80 class probabilities
    return yolov5_to_engine(torch.from_numpy(y)).numpy()


@pytest.mark.parametrize("cfg", ["yolov5s", "yolov5s-ema", "yolov5s-ca", "yolov5s-cbam", "yolov5s-sa", "yolov5s-eca"])
def test_onnx_matches_pytorch_for_each_attention_type(tmp_path, cfg):
    model = build(cfg)
    out = export_model(model, tmp_path / f"{cfg}.pt", include=["onnx"], imgsz=[160], check=False)
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    y = ort_run(out["onnx"]["file"], x)
    assert y.shape == ref.shape == (1, 84, 3 * (20 * 20 + 10 * 10 + 5 * 5))
    boxes, scores = float(np.abs(y - ref)[:, :4].max()), float(np.abs(y - ref)[:, 4:].max())
    print(f"{cfg}: ONNX max abs diff boxes {boxes:.2e} scores {scores:.2e}, export {out['onnx']['seconds']:.2f}s")
    assert boxes < 1e-3 and scores < 1e-3


def test_dynamic_onnx_runs_at_batch_1_and_3(tmp_path):
    model = build("yolov5s-ema", seed=3)
    out = export_model(model, tmp_path / "ema.pt", include=["onnx"], imgsz=[128], dynamic=True, simplify=True,
                              check=False)
    for b, hw in ((1, (128, 128)), (3, (128, 160))):
        x = torch.rand(b, 3, *hw)
        with torch.no_grad():
            ref = model(x)[0].numpy()
        y = ort_run(out["onnx"]["file"], x)
        assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Model]:
    model = build("yolov5n", seed=5)
    model.names = {i: f"cls{i}" for i in range(model.nc)}
    f = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save({"epoch": 0, "model": None, "ema": model.half(), "optimizer": None}, f)
    return f, model.float()


def test_cli_round_trips_and_metadata(checkpoint, cli_error):
    f, _ = checkpoint
    results = export.run(weights=f, include=["torchscript", "onnx", "openvino"], imgsz=[128, 96])
    assert set(results) == {"torchscript", "onnx", "openvino"}
    files = {k: v["file"] for k, v in results.items()}
    assert files["torchscript"] == f.with_suffix(".torchscript") and files["onnx"] == f.with_suffix(".onnx")
    assert files["openvino"] == f.parent / "tiny_openvino_model"
    assert (files["openvino"] / "tiny.xml").exists() and (files["openvino"] / "metadata.yaml").exists()
    for fmt, r in results.items():
        assert r["max_abs_diff"] < 1e-3, (fmt, r["max_abs_diff"])

    reference = load_backend(f)  # the .pt itself, through the same loader
    x = torch.rand(1, 3, 128, 96)
    y_ref = reference(x)[0]
    for fmt, path in files.items():
        backend = load_backend(path)
        assert backend.names == {i: f"cls{i}" for i in range(80)}, fmt
        assert backend.stride == 32 and backend.task == "detect" and list(backend.imgsz) == [128, 96], fmt
        assert backend.metadata["layout"] == "yolov5", fmt  # written as (batch, anchors, 5 + nc), read as below
        y = backend(x)
        y = y[0] if isinstance(y, (list, tuple)) else y
        assert y.shape == (1, 84, 3 * (16 * 12 + 8 * 6 + 4 * 3)), fmt
        # OpenVINO runs in bf16 by default on CPUs with bf16 units (the IR itself was checked at fp32 above)
        tol = 1e-3 + (1e-2 * float(y_ref.abs().max()) if fmt == "openvino" else 0)
        assert (y - y_ref).abs().max() < tol, fmt


def test_unknown_format_is_a_clear_error(checkpoint, cli_error):
    err = cli_error(export.main, ["--weights", str(checkpoint[0]), "--include", "coreml"])
    assert "unknown export format 'coreml'" in err and "onnx" in err and "Traceback" not in err


def test_missing_runtime_is_a_clear_error(checkpoint, cli_error, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if openvino were not installed
    err = cli_error(export.main, ["--weights", str(checkpoint[0]), "--include", "openvino"])
    assert "pip install openvino" in err


def test_half_on_cpu_and_engine_without_gpu(checkpoint, cli_error):
    err = cli_error(export.main, ["--weights", str(checkpoint[0]), "--include", "onnx", "--half"])
    assert "--half" in err and "CUDA" in err
    if not torch.cuda.is_available():
        err = cli_error(export.main, ["--weights", str(checkpoint[0]), "--include", "engine"])
        assert "needs a CUDA GPU" in err


def test_not_a_checkpoint(tmp_path, cli_error):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    err = cli_error(export.main, ["--weights", str(bad), "--include", "onnx"])
    assert str(bad) in err and "checkpoint" in err
