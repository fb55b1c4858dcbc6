"""Exports write YOLOv5's output layout (batch, anchors, 5 + nc); val.py, detect.py and the hub read it, the older
layout (batch, 4 + nc, anchors) of this project's earlier exports, and exports shaped like the original YOLOv5's."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

import detect
import hubconf
from tests.helpers import COCO_ANCHORS, build
from utils.checkpoint import load_backend
from utils.dataprep import make_shapes_dataset
from utils.exporters import DetectOutput, build_metadata, export_model, export_onnx, export_output
from utils.validation import validate

NAMES = {0: "circle", 1: "rectangle", 2: "triangle"}
IMGSZ = 64
N_ANCHORS = 3 * (8 * 8 + 4 * 4 + 2 * 2)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("layout")
    make_shapes_dataset(tmp / "shapes", n_train=1, n_val=8, imgsz=IMGSZ)
    data = tmp / "shapes.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp / "shapes"), "train": "images/val", "val": "images/val",
                                    "names": NAMES}))
    model = build("yolov5n", seed=2, nc=len(NAMES))
    model.names = dict(NAMES)
    weights = tmp / "tiny.pt"
    torch.save({"epoch": 0, "model": None, "ema": model, "optimizer": None}, weights)
    out = export_model(model, weights, include=["onnx", "torchscript", "openvino"], imgsz=[IMGSZ])
    return {"tmp": tmp, "data": data, "model": model, "weights": weights, "out": out,
            "files": {k: v["file"] for k, v in out.items()}}


def yolov5_reference(model, x: torch.Tensor) -> torch.Tensor:
    """YOLOv5's export output, written here from the head's own convolutions: per level the map viewed as
    (bs, na, no, ny, nx) and permuted to (bs, na, ny, nx, no); sigmoid; xy = (2σ - 0.5 + grid)·stride,
    wh = (2σ)²·anchor (pixels); levels concatenated as (bs, -1, no)."""
    head = model.model[-1]
    inputs = []
    hook = head.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    anchors = torch.tensor(COCO_ANCHORS, dtype=torch.float32).view(3, 3, 2)  # yolov5n.yaml's, in pixels
    z = []
    with torch.no_grad():
        for i, (conv, stride) in enumerate(zip(head.m, (8, 16, 32))):
            bs, _, ny, nx = inputs[0][i].shape
            p = conv(inputs[0][i]).view(bs, 3, 5 + len(NAMES), ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
            grid = torch.stack((gx, gy), -1).float()  # (ny, nx, 2) as (x, y)
            xy = (p[..., :2] * 2 - 0.5 + grid) * stride
            wh = (p[..., 2:4] * 2) ** 2 * anchors[i].view(1, 3, 1, 1, 2)
            z.append(torch.cat((xy, wh, p[..., 4:]), -1).reshape(bs, -1, 5 + len(NAMES)))
    return torch.cat(z, 1)


def metadata_of(fmt: str, f: Path) -> dict:
    if fmt == "onnx":
        return {p.key: p.value for p in onnx.load(str(f)).metadata_props}
    if fmt == "torchscript":
        with zipfile.ZipFile(f) as z:
            return json.loads(z.read(next(n for n in z.namelist() if n.endswith("extra/config.txt"))))
    return yaml.safe_load((f / "metadata.yaml").read_text())


def test_exports_have_yolov5_layout_and_values(exported):
    model, files = exported["model"], exported["files"]
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    ref = yolov5_reference(model, x)
    assert ref.shape == (1, N_ANCHORS, 5 + len(NAMES))
    runs = {"onnx": lambda: ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"]).run(
                None, {"images": x.numpy()})[0],
            "torchscript": lambda: torch.jit.load(str(files["torchscript"]))(x),
            "openvino": lambda: export_output(files["openvino"], x)}  # the IR at fp32
    for fmt, run in runs.items():
        with torch.no_grad():
            y = torch.as_tensor(run()).float()
        assert y.shape == (1, N_ANCHORS, 5 + len(NAMES)), fmt
        box = float((y - ref)[..., :4].abs().max())
        score = float((y - ref)[..., 4:].abs().max())
        scale = float(ref[..., :4].abs().max())
        print(f"{fmt}: max abs diff vs YOLOv5's decode: boxes {box:.2e} px (of {scale:.0f} px), obj/cls {score:.2e}")
        assert box <= 1e-4 * scale and score <= 1e-4, fmt
        assert metadata_of(fmt, files[fmt])["layout"] == "yolov5", fmt
        assert exported["out"][fmt]["max_abs_diff"] < 1e-3, fmt  # export.py's own check, on the raw output
    assert model.model[-1].export is False  # the in-memory model is given back in its own mode


def test_backend_converts_to_engine_layout(exported):
    """load_backend (val.py, detect.py, the hub) gives the engine (bs, 4 + nc, N), equal to the .pt's."""
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    ref = load_backend(exported["weights"])(x)[0]
    assert ref.shape == (1, 4 + len(NAMES), N_ANCHORS)
    for fmt, f in exported["files"].items():
        backend = load_backend(f)
        assert backend.layout == "yolov5" and backend.names == NAMES, fmt
        y = backend(x)
        tol = 1e-3 + (1e-2 * float(ref.abs().max()) if fmt == "openvino" else 0)  # bf16 CPUs run OpenVINO in bf16
        assert y.shape == ref.shape and float((y - ref).abs().max()) < tol, fmt


def older_and_original_exports(exported) -> dict[str, Path]:
    """An export in this project's older layout (Detect not in export mode, metadata without 'layout'), and the new
    ONNX with the original YOLOv5's metadata only (stride, names) and an OpenVINO folder as YOLOv5 writes it."""
    tmp, model = exported["tmp"], exported["model"]
    files = {}
    meta = build_metadata(model, exported["weights"], [IMGSZ, IMGSZ], 1, False, False, False)
    del meta["layout"]
    (tmp / "old").mkdir(exist_ok=True)
    old = export_onnx(DetectOutput(model).eval(), torch.zeros(1, 3, IMGSZ, IMGSZ), tmp / "old" / "tiny.pt", meta)
    files["older"] = old
    m = onnx.load(str(exported["files"]["onnx"]))
    del m.metadata_props[:]
    for k, v in {"stride": "32", "names": str(NAMES)}.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    (tmp / "v5").mkdir(exist_ok=True)
    onnx.save(m, str(tmp / "v5" / "tiny.onnx"))
    files["yolov5_onnx"] = tmp / "v5" / "tiny.onnx"
    ov = tmp / "v5" / "tiny_openvino_model"
    shutil.copytree(exported["files"]["openvino"], ov, dirs_exist_ok=True)
    (ov / "metadata.yaml").unlink()
    (ov / "tiny.yaml").write_text(yaml.safe_dump({"stride": 32, "names": NAMES}))
    files["yolov5_openvino"] = ov
    return files


def test_older_layout_and_original_yolov5_exports_are_read(exported):
    old = older_and_original_exports(exported)
    assert ort.InferenceSession(str(old["older"])).get_outputs()[0].shape == [1, 4 + len(NAMES), N_ANCHORS]
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(2))
    ref = load_backend(exported["weights"])(x)[0]
    for kind, f in old.items():
        backend = load_backend(f)
        assert backend.names == NAMES and backend.stride == 32, kind
        assert backend.layout == ("engine" if kind == "older" else None), kind  # None: decided from the shape
        y = backend(x)
        tol = 1e-3 + (1e-2 * float(ref.abs().max()) if "openvino" in kind else 0)
        assert y.shape == ref.shape and float((y - ref).abs().max()) < tol, kind


def detections(save_dir: Path) -> np.ndarray:
    return np.concatenate([np.loadtxt(f, ndmin=2) for f in sorted((save_dir / "labels").glob("*.txt"))])


def test_val_detect_and_hub_on_exports_match_pt(exported):
    tmp, old = exported["tmp"], older_and_original_exports(exported)
    weights = {"pt": exported["weights"], "onnx": exported["files"]["onnx"], "older": old["older"],
               "yolov5_onnx": old["yolov5_onnx"]}
    maps = {}
    for k, w in weights.items():  # scored the way fixed-shape exports are: batch 1, square letterboxed images
        s = validate(data=str(exported["data"]), weights=[str(w)], imgsz=IMGSZ, batch_size=1, rect=False, workers=0,
                     plots=False, project=tmp / "val", name=k)[0]
        maps[k] = (s["metrics/mAP50(B)"], s["metrics/mAP50-95(B)"])
    print("mAP50, mAP50-95:", maps)
    for k, v in maps.items():
        assert abs(v[0] - maps["pt"][0]) < 5e-4 and abs(v[1] - maps["pt"][1]) < 5e-4, k

    src = str(tmp / "shapes" / "images" / "val")
    dets = {k: detections(detect.run(weights=str(w), source=src, imgsz=[IMGSZ], project=tmp / "det", name=k,
                                     save_txt=True, save_conf=True, nosave=True, conf_thres=0.05))
            for k, w in weights.items()}
    a = dets["pt"]
    assert len(a) > 10
    for k, b in dets.items():  # near-ties under NMS may flip a few boxes of a random model; the rest are identical
        matched = (np.abs(b[:, None] - a[None]).max(-1) < 1e-3).any(1)
        assert abs(len(a) - len(b)) <= 0.05 * len(a) and matched.mean() > 0.95, k

    im = str(next(Path(src).glob("*.png")))
    hub = {k: hubconf.custom(path=str(w), _verbose=False) for k, w in weights.items()}
    preds = {k: m(im, size=IMGSZ).pred[0] for k, m in hub.items()}
    a = preds["pt"].numpy()
    assert len(a) > 10
    for k, p in preds.items():  # the same boxes, in an order that may differ among equal scores
        b = p.numpy()
        matched = (np.abs(b[:, None] - a[None]).max(-1) < 1e-3).any(1)
        assert abs(len(a) - len(b)) <= 0.05 * len(a) and matched.mean() > 0.95, k
