"""Every attention module exports to ONNX (static and dynamic axes) and OpenVINO, with outputs equal to PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_attention import CASES, CHANNELS, IDS, randomize

ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

SHAPES = [(1, CHANNELS, 13, 17), (3, CHANNELS, 8, 24)]


def close(y: np.ndarray, ref: torch.Tensor) -> bool:
    return y.shape == tuple(ref.shape) and float(np.abs(y - ref.numpy()).max()) <= 1e-4 * max(1.0, ref.abs().max())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based ONNX exporter, which export.py uses
@pytest.mark.parametrize("name, build, reference", CASES, ids=IDS)
def test_exports_to_onnx_and_openvino(name, build, reference, tmp_path):
    m = randomize(build(CHANNELS))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(*s, generator=g) for s in SHAPES]
    with torch.no_grad():
        refs = [m(x) for x in xs]
    for dynamic in (False, True):
        f = tmp_path / f"{name}-{'dynamic' if dynamic else 'static'}.onnx"
        torch.onnx.export(m, (xs[0],), str(f), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}} if dynamic else None)
        session = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        for x, r in list(zip(xs, refs))[: 2 if dynamic else 1]:
            assert close(session.run(None, {"x": x.numpy()})[0], r), f"ONNX ({'dynamic' if dynamic else 'static'})"
    ov_model = ov.convert_model(m, example_input=xs[0], input=[ov.PartialShape([-1, CHANNELS, -1, -1])])
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    for x, r in zip(xs, refs):
        assert close(compiled(x.numpy())[0], r), "OpenVINO"
