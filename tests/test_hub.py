"""PyTorch Hub (hubconf.py, utils/hub.py): entries, custom checkpoints and exports, AutoShape inputs and Detections.

The reference for AutoShape is computed here independently (letterbox by hand, torchvision NMS, boxes mapped back).
"""

from __future__ import annotations

import functools
import http.server
import inspect
import math
import threading
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from models.classify import ClassificationModel
from models.yolo import Model
from tests.helpers import varied_boxes_model
from tests.test_checkpoint import write_original_checkpoint
from utils.checkpoint import load_model
from utils.hub import AutoShape, Detections, entry_name

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "circle", 1: "square", 2: "star"}
CONF = 0.45  # with tiny_model's weights: a few dozen boxes of two classes per test image, all well above CONF
TABLE2 = ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x", "yolov5s_ema", "yolov5s_ca", "yolov5s_cbam",
          "yolov5s_sa", "yolov5s_eca", "yolov5x_p2", "yolov5x_p2_ema", "yolov5x_p2_ca", "yolov5x_p2_cbam")


def hub_load(*args, **kwargs):
    return torch.hub.load(str(ROOT), *args, source="local", trust_repo=True, **kwargs)


def tiny_model() -> Model:
    """yolov5n with 3 classes and random weights that give varied boxes (objectness bias 0)."""
    return varied_boxes_model(ROOT / "models" / "yolov5n.yaml", NAMES, obj_bias=0.0)


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """An RGB uint8 image with a few solid shapes on noise."""
    rng = np.random.default_rng(seed)
    im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(im, (w // 8, h // 6), (w // 2, h // 2), (250, 20, 20), -1)
    cv2.circle(im, (3 * w // 4, 2 * h // 3), min(h, w) // 5, (20, 200, 40), -1)
    return im


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("hub")
    model = tiny_model()
    ours = d / "best.pt"
    torch.save({"epoch": 0, "best_fitness": None, "model": None, "ema": deepcopy(model).half(), "optimizer": None,
                "train_args": {}}, ours)
    official = d / "official.pt"
    write_original_checkpoint(official, model, names=list(NAMES.values()))
    a, b = picture(100, 300, 0), picture(120, 240, 1)
    Image.fromarray(a).save(d / "a.png")
    Image.fromarray(b).save(d / "b.png")
    return {"dir": d, "ours": ours, "official": official, "a": a, "b": b}


@pytest.fixture(scope="module")
def hub_model(assets) -> AutoShape:
    m = hub_load("custom", path=str(assets["ours"]), _verbose=False, device="cpu")
    m.conf = CONF
    return m


def same(d1: Detections, d2: Detections) -> None:
    assert d1.n == d2.n
    for p, q in zip(d1.pred, d2.pred):
        assert p.shape == q.shape
        torch.testing.assert_close(p, q)


# ----------------------------------------------------------------------------------------------------
# Entries
# ----------------------------------------------------------------------------------------------------


def test_list_has_one_entry_per_yaml_and_nothing_else(monkeypatch):
    # torch.hub.list only reads GitHub repositories: point its cache look-up at this checkout
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *a, **k: str(ROOT))
    entries = torch.hub.list("someone/yolov5-attention", trust_repo=True, verbose=False)
    yamls = [*(ROOT / "models").glob("*.yaml"), *(ROOT / "models" / "hub").glob("*.yaml")]
    assert set(entries) == {"custom", *(entry_name(f.stem) for f in yamls)}  # no helper or import leaks in
    assert set(TABLE2) <= set(entries) and {"yolov5s6", "yolov3_spp", "yolov5_p2"} <= set(entries)
    import hubconf

    for name in TABLE2:
        params = inspect.signature(getattr(hubconf, name)).parameters
        assert {k: p.default for k, p in params.items()} == {"pretrained": True, "channels": 3, "classes": 80,
                                                             "autoshape": True, "_verbose": True, "device": None}
    assert list(inspect.signature(hubconf.custom).parameters) == ["path", "autoshape", "_verbose", "device"]
    assert "models/yolov5x-p2-ema.yaml" in hubconf.yolov5x_p2_ema.__doc__


def test_entry_builds_the_yaml_model():
    m = hub_load("yolov5n", pretrained=False, classes=4, _verbose=False, device="cpu")
    ref = Model(ROOT / "models" / "yolov5n.yaml", nc=4, verbose=False)
    assert isinstance(m, AutoShape) and isinstance(m.model, Model) and m.model.nc == 4 and len(m.names) == 4
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
    assert {k: v.shape for k, v in m.model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ema = hub_load("yolov5s_ema", pretrained=False, autoshape=False, _verbose=False, device="cpu")
    assert isinstance(ema, Model) and Path(ema.yaml_file).name == "yolov5s-ema.yaml"
    assert sum(p.numel() for p in ema.parameters()) == 7_238_685  # Table 2's yolov5s + EMA (README)
    grey = hub_load("yolov5n", pretrained=False, channels=1, autoshape=False, _verbose=False, device="cpu")
    assert grey.model[0].conv.in_channels == 1


def test_pretrained_without_local_file_is_one_clear_error(tmp_path, monkeypatch):
    import utils.weights

    monkeypatch.chdir(tmp_path)
    for name, file in (("yolov5x_p2_ema", "yolov5x-p2-ema.pt"),):
        if (ROOT / file).exists():
            pytest.skip(f"{ROOT / file} exists")
        with pytest.raises(FileNotFoundError) as e:
            hub_load(name, _verbose=False)
        msg = str(e.value)
        assert f"weights file {file} " in msg and str(tmp_path) in msg and str(ROOT) in msg
        assert "pretrained=False" in msg and "not downloaded" in msg
    if (ROOT / "yolov5s.pt").exists():
        pytest.skip(f"{ROOT / 'yolov5s.pt'} exists")
    monkeypatch.setattr(utils.weights, "RETRIES", 1)  # official weights are downloaded: here, with no network, fail
    msg = str(pytest.raises(FileNotFoundError, hub_load, "yolov5s").value)
    assert "could not download https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5s.pt" in msg
    assert str(tmp_path / "yolov5s.pt") in msg and not list(tmp_path.iterdir())


def test_pretrained_loads_the_local_file_whole_or_what_fits(assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolov5n.pt").write_bytes(assets["ours"].read_bytes())  # found by name in the current folder
    whole = hub_load("yolov5n", _verbose=False, device="cpu")  # 3 channels, 80 classes: the file as it is
    assert whole.names == NAMES and whole.model.nc == 3
    four = hub_load("yolov5n", classes=4, autoshape=False, _verbose=False, device="cpu")  # YAML model + what fits
    src = load_model(tmp_path / "yolov5n.pt", fuse=False)
    assert isinstance(four, Model) and four.nc == 4 and four.model[-1].m[0].weight.shape[0] == 3 * (5 + 4)
    assert torch.equal(four.model[8].cv1.conv.weight, src.model[8].cv1.conv.weight)  # the backbone came over
    assert four.names == {i: str(i) for i in range(4)}  # 3 names in the file do not fit 4 classes


# ----------------------------------------------------------------------------------------------------
# custom: checkpoints and exports
# ----------------------------------------------------------------------------------------------------


def test_custom_loads_ours_and_official_checkpoints_alike(assets, hub_model):
    official = hub_load("custom", path=str(assets["official"]), _verbose=False, device="cpu")
    official.conf = CONF
    assert isinstance(official, AutoShape) and official.names == NAMES == hub_model.names
    assert hub_model.model.is_fused()  # autoshape: Conv+BN fused, as YOLOv5's hub does
    r1, r2 = hub_model(assets["a"], size=320), official(assets["a"], size=320)
    assert len(r1.pred[0]) > 0
    same(r1, r2)
    bare = hub_load("custom", path=str(assets["ours"]).removesuffix(".pt"), autoshape=False, _verbose=False)
    assert isinstance(bare, Model) and not bare.is_fused()  # a name without suffix means <name>.pt, as in YOLOv5
    with pytest.raises(FileNotFoundError, match="custom: weights 'nothing.pt' not found"):
        hub_load("custom", path="nothing.pt")


def test_custom_classifier_is_returned_as_the_model(tmp_path):
    torch.manual_seed(0)
    cls = ClassificationModel(ROOT / "models" / "cls" / "yolov5n-cls.yaml", nc=4, verbose=False).eval()
    torch.save({"model": deepcopy(cls).half(), "ema": None, "epoch": 3}, tmp_path / "cls.pt")
    m = hub_load("custom", path=str(tmp_path / "cls.pt"), _verbose=False, device="cpu")
    assert isinstance(m, ClassificationModel)
    x = torch.rand(2, 3, 64, 64)
    probs, logits = m(x)  # this repository's classifiers give (probabilities, logits) in eval mode
    with torch.no_grad():
        expected = deepcopy(cls).half().float()(x)[1]
    assert probs.shape == (2, 4)
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=1e-3)


def test_custom_onnx_export_gives_the_same_detections(assets, hub_model, tmp_path):
    pytest.importorskip("onnxruntime")
    import export

    w = tmp_path / "best.pt"
    w.write_bytes(assets["ours"].read_bytes())
    export.run(weights=w, include=("onnx",), imgsz=(128, 320), check=False)
    m = hub_load("custom", path=str(tmp_path / "best.onnx"), _verbose=False, device="cpu")
    m.conf = CONF
    assert isinstance(m, AutoShape) and m.names == NAMES and not m.pt
    r, ref = m(assets["a"], size=320), hub_model(assets["a"], size=320)
    assert r.s == ref.s == (1, 3, 128, 320)  # 100x300 scaled to 106x320, rounded up to 32
    p, q = r.pred[0], ref.pred[0]
    assert len(q) and p.shape == q.shape and torch.equal(p[:, 5], q[:, 5])
    torch.testing.assert_close(p, q, atol=2e-3, rtol=1e-4)
    big = m(assets["a"], size=640)  # a fixed-shape export keeps the shape it was exported at
    assert big.s == (1, 3, 128, 320)


# ----------------------------------------------------------------------------------------------------
# AutoShape
# ----------------------------------------------------------------------------------------------------


def reference(model: Model, ims: list[np.ndarray], size: int, conf: float, iou: float) -> tuple[list, tuple]:
    """Detections computed without AutoShape: YOLOv5's letterbox by hand, torchvision NMS, boxes mapped back through
    the resize each axis really had (YOLOv5 divides both by one ratio, up to half a pixel off on the rounded side)."""
    scaled = [[int(d * size / max(im.shape[:2])) for d in im.shape[:2]] for im in ims]
    H, W = (math.ceil(max(s[k] for s in scaled) / 32) * 32 for k in (0, 1))
    batch, geometry = [], []
    for im in ims:
        h, w = im.shape[:2]
        r = min(H / h, W / w)
        nw, nh = round(w * r), round(h * r)
        top, left = round((H - nh) / 2 - 0.1), round((W - nw) / 2 - 0.1)
        canvas = np.full((H, W, 3), 114, np.uint8)
        canvas[top:top + nh, left:left + nw] = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
        batch.append(canvas)
        geometry.append((torch.tensor([nw / w, nh / h] * 2), left, top, w, h))  # the resize's own ratio per axis
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        y = model(x)[0]
    out = []
    for p, (r, left, top, w, h) in zip(y, geometry):
        p = p.T
        score, cls = p[:, 4:].max(1)
        keep = score > conf
        p, score, cls = p[keep], score[keep], cls[keep]
        boxes = torchvision.ops.box_convert(p[:, :4], "cxcywh", "xyxy")
        i = torchvision.ops.batched_nms(boxes, score, cls, iou)
        b = (boxes[i] - torch.tensor([left, top, left, top])) / r
        b[:, 0::2] = b[:, 0::2].clamp(0, w)
        b[:, 1::2] = b[:, 1::2].clamp(0, h)
        out.append(torch.cat((b, score[i, None], cls[i, None].float()), 1))
    return out, (len(ims), 3, H, W)


def test_boxes_match_an_independent_reference_on_the_original_images(assets, hub_model):
    a, b = assets["a"], assets["b"]
    r = hub_model([a, b], size=320)
    ref, shape = reference(hub_model.model, [a, b], 320, CONF, hub_model.iou)
    assert r.s == shape == (2, 3, 160, 320)  # the largest scaled image, rounded up to the stride
    for p, q, im in zip(r.pred, ref, (a, b)):
        assert len(q) >= 3 and p.shape == q.shape
        order_p, order_q = p[:, 4].argsort(descending=True), q[:, 4].argsort(descending=True)
        torch.testing.assert_close(p[order_p], q[order_q], atol=1e-3, rtol=1e-4)
        h, w = im.shape[:2]
        assert p[:, 2].max() <= w and p[:, 3].max() <= h and p[:, :4].min() >= 0
    h, w = a.shape[:2]
    torch.testing.assert_close(r.xyxyn[0][:, :4], r.xyxy[0][:, :4] / torch.tensor([w, h, w, h]))
    cx, cy = (r.xyxy[0][:, 0] + r.xyxy[0][:, 2]) / 2, (r.xyxy[0][:, 1] + r.xyxy[0][:, 3]) / 2
    torch.testing.assert_close(r.xywh[0][:, :2], torch.stack((cx, cy), 1))
    torch.testing.assert_close(r.xywhn[0][:, 2], (r.xyxy[0][:, 2] - r.xyxy[0][:, 0]) / w)
    assert r.xywh[0][:, 4:].equal(r.xyxy[0][:, 4:])


def test_every_input_kind_gives_the_same_detections(assets, hub_model):
    d, a = assets["dir"], assets["a"]
    ref = hub_model(a, size=320)  # numpy HWC, RGB
    assert len(ref.pred[0]) > 0 and ref.files == ["image0.jpg"]
    for im in (str(d / "a.png"), d / "a.png", Image.open(d / "a.png"), Image.fromarray(a).convert("RGBA"),
               np.ascontiguousarray(a.transpose(2, 0, 1))):  # path, Path, PIL, RGBA, CHW
        same(hub_model(im, size=320), ref)
    assert hub_model(d / "a.png", size=320).files == ["a.jpg"]
    bgr = hub_model(np.ascontiguousarray(a[..., ::-1]), size=320)  # arrays are RGB: a BGR one is another image
    assert not (bgr.pred[0].shape == ref.pred[0].shape and torch.allclose(bgr.pred[0], ref.pred[0]))
    batch = hub_model([str(d / "a.png"), a, Image.open(d / "a.png")], size=320)
    assert batch.n == len(batch) == 3 and batch.files == ["a.jpg", "image1.jpg", "a.jpg"]
    for p in batch.pred:
        torch.testing.assert_close(p, ref.pred[0], atol=1e-3, rtol=1e-4)  # batched convolutions round differently
    grey = np.asarray(Image.fromarray(a).convert("L"))
    same(hub_model(grey, size=320), hub_model(np.repeat(grey[..., None], 3, 2), size=320))


def test_url_input_is_fetched(assets, hub_model):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(assets["dir"]))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
        r = hub_model(url, size=320)
        same(r, hub_model(assets["a"], size=320))
        assert r.files == ["a.jpg"]
        with pytest.raises(ConnectionError, match="missing.png: could not be fetched"):
            hub_model(url.replace("a.png", "missing.png"))
    finally:
        server.shutdown()
        server.server_close()


def test_tensor_goes_to_the_model_unchanged_and_nms_settings_apply(assets, hub_model):
    x = torch.rand(1, 3, 96, 128)
    torch.testing.assert_close(hub_model(x)[0], hub_model.model(x)[0])
    m = deepcopy(hub_model)
    full = torch.cat(m([assets["a"], assets["b"]], size=320).pred)
    kinds, counts = full[:, 5].unique(return_counts=True)
    assert len(kinds) >= 2
    c = kinds[counts.argmin()]
    m.classes = [int(c)]
    only = torch.cat(m([assets["a"], assets["b"]], size=320).pred)
    torch.testing.assert_close(only, full[full[:, 5] == c])  # NMS is per class: the others' boxes are just gone
    m.classes, m.max_det = None, 2
    assert len(m(assets["a"], size=320).pred[0]) == 2
    m.max_det, m.conf = 1000, 0.99
    assert len(m(assets["a"], size=320).pred[0]) == 0
    with pytest.raises(TypeError, match="image 0: a int"):
        m(5)


# ----------------------------------------------------------------------------------------------------
# Detections
# ----------------------------------------------------------------------------------------------------


def test_pandas_columns_and_values_match_the_tensors(assets, hub_model):
    pytest.importorskip("pandas")
    r = hub_model([assets["a"], assets["b"]], size=320)
    p = r.pandas()
    assert list(p.xyxy[0].columns) == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    assert list(p.xywhn[1].columns) == ["xcenter", "ycenter", "width", "height", "confidence", "class", "name"]
    for k in ("xyxy", "xyxyn", "xywh", "xywhn"):
        for df, t in zip(getattr(p, k), getattr(r, k)):
            np.testing.assert_allclose(df.iloc[:, :5].to_numpy(), t[:, :5].numpy(), rtol=1e-6)
            assert df["class"].tolist() == t[:, 5].int().tolist()
            assert df["name"].tolist() == [NAMES[int(c)] for c in t[:, 5]]
    assert isinstance(r.xyxy[0], torch.Tensor)  # pandas() returns a copy


def test_print_str_len_and_tolist(assets, hub_model, log_records):
    r = hub_model([assets["a"], np.zeros((64, 64, 3), np.uint8)], size=320)
    s = str(r)
    counts = {NAMES[int(c)]: int((r.pred[0][:, 5] == c).sum()) for c in r.pred[0][:, 5].unique()}
    first = "image 1/2: 100x300 " + ", ".join(f"{n} {k}{'s' * (n > 1)}" for k, n in counts.items())
    assert s.splitlines()[0] == first
    assert s.splitlines()[1].startswith("image 2/2: 64x64 ") and s.splitlines()[-1].startswith("Speed: ")
    assert s.endswith("per image at shape (2, 3, 320, 320)")  # 64x64 scaled up to 320 sets the batch's shape
    assert len(r.t) == 3 and all(t >= 0 for t in r.t) and r.t[1] > 0
    r.print()
    assert any(m == s for _, m in log_records)
    parts = r.tolist()
    assert [len(x) for x in parts] == [1, 1] and parts[0].pred[0] is r.pred[0] and parts[1].files == ["image1.jpg"]
    assert len(parts[0].xyxyn[0]) == len(r.pred[0])
    strict = deepcopy(hub_model)
    strict.conf = 0.99
    assert str(strict(assets["a"], size=320)).splitlines()[0] == "image 1/1: 100x300 (no detections)"


def test_render_and_save_into_incrementing_folders(assets, hub_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = hub_model([str(assets["dir"] / "a.png"), assets["b"]], size=320)
    assert len(r.pred[0]) and len(r.pred[1])
    d1, d2 = r.save(), r.save()
    assert [d.resolve() for d in (d1, d2)] == [(tmp_path / "runs/detect" / n).resolve() for n in ("exp", "exp2")]
    for d in (d1, d2):
        assert sorted(f.name for f in d.iterdir()) == ["a.jpg", "image1.jpg"]
    saved = np.asarray(Image.open(d1 / "a.jpg"))
    assert saved.shape == assets["a"].shape
    assert r.save(save_dir=tmp_path / "mine", exist_ok=True) == r.save(save_dir=tmp_path / "mine", exist_ok=True)
    out = r.render()
    assert out is r.ims and [im.shape for im in out] == [assets["a"].shape, assets["b"].shape]
    assert not np.array_equal(out[0], assets["a"])  # boxes drawn
    diff = [np.abs(saved.astype(int) - im.astype(int)).mean() for im in (out[0], out[0][..., ::-1], assets["a"])]
    assert diff[0] < diff[1] and diff[0] < diff[2]  # the saved file is the rendered image (up to JPEG loss), RGB


def test_crop_sizes_and_contents(assets, hub_model, tmp_path):
    r = hub_model([assets["a"], assets["b"]], size=320)
    crops = r.crop(save=False)
    assert len(crops) == sum(len(p) for p in r.pred) > 0
    rows = [(i, row) for i, p in enumerate(r.pred) for row in reversed(p)]
    for c, (i, row) in zip(crops, rows):
        assert set(c) == {"box", "conf", "cls", "label", "im"}
        assert c["label"] == f"{NAMES[int(row[5])]} {float(row[4]):.2f}" and float(c["conf"]) == float(row[4])
        x1, y1, x2, y2 = row[:4]
        half = torch.stack((x2 - x1, y2 - y1)) * 1.02 + 10  # YOLOv5: the box widened by 2% plus 10 pixels
        half, centre = half / 2, torch.stack(((x1 + x2) / 2, (y1 + y2) / 2))
        H, W = r.ims[i].shape[:2]
        a = torch.cat((centre - half, centre + half)).long().tolist()
        a = [min(max(v, 0), lim) for v, lim in zip(a, (W, H, W, H))]
        assert c["im"].shape == (a[3] - a[1], a[2] - a[0], 3)
        np.testing.assert_array_equal(c["im"], r.ims[i][a[1]:a[3], a[0]:a[2], ::-1])  # BGR, as YOLOv5's crops
    saved = r.crop(save_dir=tmp_path / "exp")
    files = sorted((tmp_path / "exp" / "crops").rglob("*.jpg"))
    assert len(saved) == len(crops) and len(files) == len(crops)
    assert {f.parent.name for f in files} == {NAMES[int(c)] for p in r.pred for c in p[:, 5]}
