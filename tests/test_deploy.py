"""INT8 export (export.py --int8: OpenVINO via NNCF, ONNX Runtime QDQ) and the deployment helpers of bench/deploy.py:
loadable with metadata, right output shape, close to fp32 on real images; timing and mAP rows have their keys."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import export
from bench import deploy, model_bench, paper
from models.yolo import Model
from utils import quantize
from utils.checkpoint import load_backend
from utils.quantize import calibration_images

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "circle", 1: "rectangle", 2: "triangle", 3: "star"}
IMGSZ = 128


def random_model(images: list[np.ndarray], seed: int = 0) -> Model:
    """yolov5n for the 4 shapes classes whose output depends on its input without being chaotic, so that INT8 can
    stay close to it and a broken graph shows: small BatchNorm gains (SiLU near its linear range) with statistics
    measured on ``images``, and head weights that turn features into scores of varying size."""
    torch.manual_seed(seed)
    model = Model(ROOT / "models" / "yolov5n.yaml", nc=4, verbose=False)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(0.1 * (torch.rand(m.num_features, generator=g) + 0.5))
            m.bias.data.zero_()
            m.momentum = None  # running statistics = plain average over the batches below
            m.reset_running_stats()
    for conv in model.model[-1].m:
        conv.weight.data.normal_(0, 0.2, generator=g)
        conv.bias.data.zero_()
    model.train()
    with torch.no_grad():
        for x in images:
            model(torch.from_numpy(x))
    model.names = dict(NAMES)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One PyTorch thread in this module (the runners set it too): tiny models gain nothing from more, and two busy
    OpenMP threads on a 2-core machine that another process also loads slow down by orders of magnitude."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    from utils.dataprep import make_shapes_dataset

    tmp = tmp_path_factory.mktemp("deploy")
    make_shapes_dataset(tmp / "shapes", n_train=16, n_val=8, imgsz=IMGSZ)
    data = tmp / "shapes.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp / "shapes"), "train": "images/train", "val": "images/val",
                                    "names": NAMES}))
    model = random_model(calibration_images(data, [IMGSZ, IMGSZ], n=16))
    weights = tmp / "tiny.pt"
    torch.save({"epoch": 0, "model": None, "ema": model, "optimizer": None}, weights)
    results = export.run(weights=weights, include=["openvino", "onnx"], imgsz=[IMGSZ], int8=True, data=str(data),
                         calib_images=16)
    return {"tmp": tmp, "data": data, "model": model, "weights": weights, "results": results}


def test_calibration_images_are_letterboxed_like_inference(setup):
    batches = calibration_images(setup["data"], [IMGSZ, 96], n=5, batch_size=2)
    assert len(batches) == 2  # 5 images in batches of 2: the incomplete last batch is dropped
    for b in batches:
        assert b.shape == (2, 3, IMGSZ, 96) and b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1
        assert np.allclose(b[..., :16, :], 114 / 255)  # 128x128 images into 128x96: scaled to 96, grey bands


def test_int8_exports_load_with_metadata_and_stay_close_to_fp32(setup):
    res = setup["results"]
    files = {k: r["file"] for k, r in res.items()}
    assert files["openvino"] == setup["tmp"] / "tiny_int8_openvino_model"
    assert files["onnx"] == setup["tmp"] / "tiny_int8.onnx"
    assert (files["openvino"] / "tiny.xml").exists() and (files["openvino"] / "metadata.yaml").exists()

    # quantized for real: fake-quantize / QDQ nodes in the graphs, the decode tail left in float
    import onnx
    import openvino as ov

    ov_model, onnx_model = ov.Core().read_model(files["openvino"] / "tiny.xml"), onnx.load(str(files["onnx"]))
    ov_types = {op.get_friendly_name(): op.get_type_name() for op in ov_model.get_ops()}
    onnx_types = {nd.name: nd.op_type for nd in onnx_model.graph.node}
    assert "FakeQuantize" in ov_types.values() and "QuantizeLinear" in onnx_types.values()
    ov_tail, onnx_tail = [ov_types[n] for n in quantize.openvino_tail(ov_model)], [onnx_types[n] for n in
                                                                                  quantize.onnx_tail(onnx_model)]
    assert "Sigmoid" in ov_tail and "Sigmoid" in onnx_tail  # the decode tail was found...
    assert "FakeQuantize" not in ov_tail and not {"QuantizeLinear", "DequantizeLinear"} & set(onnx_tail)  # ...float

    x0, x1 = (torch.from_numpy(x) for x in calibration_images(setup["data"], [IMGSZ, IMGSZ], n=2, split="val"))
    with torch.no_grad():
        ref, other = (setup["model"](x)[0].numpy() for x in (x0, x1))
    signal = ref - other  # what a different image changes: INT8 must follow it and err far less
    for fmt, path in files.items():
        backend = load_backend(path)
        assert backend.names == NAMES and backend.stride == 32 and list(backend.imgsz) == [IMGSZ, IMGSZ], fmt
        y = backend(x0)
        y = np.asarray(y[0] if isinstance(y, (list, tuple)) else y)
        assert y.shape == ref.shape == (1, 8, 3 * (16 * 16 + 8 * 8 + 4 * 4)), fmt
        scores, boxes = slice(4, None), slice(0, 4)
        corr = np.corrcoef((y - other)[:, scores].ravel(), signal[:, scores].ravel())[0, 1]
        err = np.abs(y - ref)[:, scores].mean() / np.abs(signal)[:, scores].mean()
        wh = np.concatenate([ref[:, 2:4]] * 2, 1)  # box errors relative to the box's width and height
        box = (np.abs(y - ref)[:, boxes] / wh).max()
        box_signal = (np.abs(signal)[:, boxes] / wh).max()
        print(f"{fmt}: score corr {corr:.4f}, score error / image signal {err:.3f}, box error {box:.4f} "
              f"(image signal {box_signal:.4f}) of the box size")
        assert corr > 0.9 and err < 0.3 and box < 0.3 * box_signal, fmt
        assert res[fmt]["agreement"]["score_corr"] > 0.9, fmt  # export.py's own check on a calibration image


def test_int8_rejects_formats_it_cannot_quantize(setup, cli_error):
    err = cli_error(export.main, ["--weights", str(setup["weights"]), "--include", "torchscript", "--int8"])
    assert "--int8" in err and "TorchScript" in err


def test_deploy_timing_and_map_rows(setup):
    variants = ["pytorch", "onnxruntime", "openvino-f32", "openvino-int8", "onnxruntime-int8"]
    targets = deploy.export_variants(setup["model"], "tiny", variants[:3], IMGSZ, setup["tmp"] / "fp32")
    targets |= {"openvino-int8": setup["results"]["openvino"]["file"],
                "onnxruntime-int8": setup["results"]["onnx"]["file"]}
    assert set(targets) == set(variants) and isinstance(targets["pytorch"], nn.Module)
    im = calibration_images(setup["data"], [IMGSZ, IMGSZ], n=1, split="val")[0]
    outputs = {v: call() for v, call in deploy.variant_calls(targets, im, threads=1).items()}
    assert list(outputs) == variants
    ref = outputs["pytorch"]
    assert ref.shape == (1, 4 + len(NAMES), 3 * (16 * 16 + 8 * 8 + 4 * 4))  # every anchor of the three levels
    for v, y in outputs.items():
        assert y.shape == ref.shape
        scores = np.abs(y[:, 4:] - ref[:, 4:]).max()
        assert scores < (1e-4 if "int8" not in v else 0.1), f"{v}: class scores differ by {scores}"

    order = ["pytorch", "openvino-f32", "onnxruntime", "openvino-int8"]
    rows = deploy.map_rows(setup["weights"], setup["data"], IMGSZ, setup["tmp"], variants=order, targets=targets)
    assert [r["variant"] for r in rows] == order
    for r in rows:
        assert set(r) == {"variant", "file", "map50", "map50_95", "delta_map50_95", "delta_vs_fp32_export"}
        assert 0 <= r["map50_95"] <= r["map50"] <= 100
        assert r["delta_map50_95"] == r["map50_95"] - rows[0]["map50_95"]
    by = {r["variant"]: r for r in rows}
    assert by["pytorch"]["delta_vs_fp32_export"] is None and by["openvino-f32"]["delta_vs_fp32_export"] == 0
    for fp32 in ("onnxruntime", "openvino-f32"):  # scored on the same inputs as PyTorch: fp32 runtimes agree with it
        assert abs(by[fp32]["delta_map50_95"]) < 0.05
    int8, f32 = by["openvino-int8"], by["openvino-f32"]
    assert int8["delta_vs_fp32_export"] == int8["map50_95"] - f32["map50_95"]


def test_variants_for_formats():
    bf16 = ["openvino-bf16", "openvino-int8-bf16"] if deploy.bf16_supported() else []
    assert deploy.variants_for_formats(["onnx"]) == ["onnxruntime", "onnxruntime-int8"]
    assert deploy.variants_for_formats(["openvino"], int8=False) == ["openvino-f32"] + bf16[:1]
    assert set(deploy.variants_for_formats(["onnx", "openvino"])) == set(deploy.default_variants()) - {"pytorch"}
    with pytest.raises(ValueError, match="coreml"):
        deploy.variants_for_formats(["coreml"])


def test_openvino_precision_hint_applies_to_every_compile(setup):
    import openvino as ov

    original = ov.Core.compile_model
    xml = str(setup["results"]["openvino"]["file"] / "tiny.xml")
    with deploy.openvino_precision("f32"):  # as AutoBackend compiles: a config without a precision hint
        compiled = ov.Core().compile_model(xml, device_name="CPU", config={"PERFORMANCE_HINT": "LATENCY"})
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert ov.Core.compile_model is original


def test_formats_add_a_deployment_table_with_map(setup, tmp_path):
    rows = model_bench.run(["yolov5n"], imgsz=IMGSZ, repeats=2, warmup=0, project=tmp_path,
                           formats="onnxruntime,openvino-int8", map_weights=[setup["weights"]], data=str(setup["data"]),
                           calib_images=8, memory=False, stock_malloc=True)
    # the weights are named after the YAML they were built from, tagged with the file next to that YAML's own row
    assert [r["model"] for r in rows] == ["yolov5n", "yolov5n [tiny.pt]"]
    deployed = list(csv.DictReader((tmp_path / "exp" / "deploy.csv").open()))
    assert [(d["model"], d["variant"]) for d in deployed] == [
        (r["model"], v) for r in rows for v in ("pytorch", "onnxruntime", "openvino-int8")]
    assert (tmp_path / "exp" / "export" / "yolov5n_tiny_pt_int8_openvino_model").is_dir()
    by = {d["variant"]: d for d in deployed if d["model"] == "yolov5n [tiny.pt]"}
    assert float(by["pytorch"]["speedup"]) == 1.0 and float(by["onnxruntime"]["latency_ms"]) > 0
    assert float(by["pytorch"]["map50_95"]) >= 0 and rows[1]["map50_95"] >= 0  # val.py defaults vs export-like
    assert abs(float(by["onnxruntime"]["delta_map50_95"])) < 0.05  # same inputs, fp32: the same score
    assert by["openvino-int8"]["map50_95"] != ""
    text = (tmp_path / "exp" / "benchmarks.md").read_text()
    assert "Deployment" in text and "| openvino-int8 |" in text and "Δ mAP50-95 vs PyTorch" in text


def test_weights_of_a_listed_model_get_their_own_row(setup):
    specs = model_bench.resolve_models(["yolov5n", str(setup["weights"])])
    assert [s.name for s in specs] == ["yolov5n", "yolov5n [tiny.pt]"] and specs[1].weights
    assert paper.baseline_name(specs[1].name) == "yolov5n"
