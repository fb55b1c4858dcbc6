"""detect.py: images, a video and a stream list; labels, crops, attention/feature maps; exports; bad input messages."""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import detect
from models.yolo import Model
from tests.helpers import varied_boxes_model

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "car", 1: "bus", 2: "person"}
FPS, FRAMES = 12.0, 8


def tiny_ema_model(cfg: dict | None = None) -> Model:
    """yolov5s-ema's topology (or ``cfg``'s) at yolov5n width (fast), 3 classes, with random weights that still give
    varied boxes.

    BatchNorm statistics are set from one batch (so features do not fade through the random layers) and the head is
    biased towards confident boxes.
    """
    cfg = cfg or yaml.safe_load((ROOT / "models" / "yolov5s-ema.yaml").read_text())
    cfg.update(nc=len(NAMES), width_multiple=0.25)
    return varied_boxes_model(cfg, NAMES, obj_bias=1.0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("detect")
    src = d / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a.png", (120, 160)), ("b.png", (96, 96))):
        im = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(im, (20, 20), (60, 70), (0, 0, 255), -1)
        cv2.imwrite(str(src / name), im)
    video = d / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (128, 96))
    for _ in range(FRAMES):
        writer.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    writer.release()
    model = tiny_ema_model()
    weights = d / "tiny-ema.pt"
    torch.save({"epoch": 0, "best_fitness": None, "model": None, "ema": deepcopy(model).half(), "optimizer": None,
                "train_args": {}, "date": "2026-11-01", "version": "8.4.190"}, weights)
    return {"dir": d, "src": src, "video": video, "weights": weights}


def frames_and_fps(path: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps


def test_images_and_video(assets, caplog):
    project = assets["dir"] / "runs"
    caplog.set_level(logging.INFO)
    sources = assets["dir"] / "sources.txt"  # a .txt list of sources: both images and the video
    sources.write_text(f"{assets['src'] / 'a.png'}\n{assets['src'] / 'b.png'}\n{assets['video']}\n")
    save_dir = detect.run(weights=str(assets["weights"]), source=str(sources), imgsz=[128], conf_thres=0.25,
                          max_det=10, save_txt=True, save_conf=True, save_crop=True, attention=True, project=project)
    assert save_dir == project / "exp"

    for name in ("a.png", "b.png"):  # annotated images, original size
        out = cv2.imread(str(save_dir / name))
        assert out is not None and out.shape == cv2.imread(str(assets["src"] / name)).shape
    assert frames_and_fps(save_dir / "clip.mp4") == (FRAMES, FPS)

    labels = sorted(p.name for p in (save_dir / "labels").glob("*.txt"))
    assert labels == ["a.txt", "b.txt"] + [f"clip_{i}.txt" for i in range(1, FRAMES + 1)]
    rows = [r.split() for r in (save_dir / "labels" / "a.txt").read_text().splitlines()]
    assert 1 <= len(rows) <= 10 and all(len(r) == 6 for r in rows)
    for c, *xywh, conf in rows:
        assert int(c) in NAMES and all(0 <= float(v) <= 1 for v in xywh) and 0.25 <= float(conf) <= 1

    crops = list((save_dir / "crops").rglob("*.jpg"))
    assert crops and {p.parent.name for p in crops} <= set(NAMES.values())

    for stem, shape in (("a", (120, 160, 3)), ("clip_8", (96, 128, 3))):
        for layer in ("layer7_EMA", "layer10_EMA"):
            heat = cv2.imread(str(save_dir / "attention" / f"{stem}_{layer}.jpg"))
            assert heat is not None and heat.shape == shape

    log = caplog.text
    assert "image 1/3 " in log and "96x128 " in log
    assert "video 3/3 (frame 8/8)" in log
    assert "Speed: " in log and "ms NMS per image at shape (1, 3, 128, 128)" in log
    assert f"Results saved to {save_dir}" in log
    assert any(n in log for n in (" cars,", " car,", " buss,", " bus,", " persons,", " person,"))


def test_increment_nosave_visualize_and_onnx_agree(assets):
    from utils.exporters import export_model

    project = assets["dir"] / "runs2"
    image = str(assets["src"] / "a.png")
    first = detect.run(weights=str(assets["weights"]), source=image, imgsz=[128], project=project, save_txt=True,
                       save_conf=True, visualize=True)
    assert first.name == "exp"
    feats = sorted(p.name for p in (first / "features" / "a").glob("*.png"))
    assert "stage0_Conv_features.png" in feats and "stage7_EMA_features.png" in feats and len(feats) == 26
    assert (first / "attention" / "a_layer7_EMA.jpg").exists()  # --visualize also writes the attention maps

    # the same model exported to ONNX gives the same detections (metadata carries names and stride)
    model = deepcopy(tiny_ema_model()).half().float()
    out = export_model(model, assets["dir"] / "tiny-ema.pt", include=["onnx"], imgsz=[96, 128], check=False)
    second = detect.run(weights=str(out["onnx"]["file"]), source=image, imgsz=[128], project=project, save_txt=True,
                        save_conf=True, nosave=True)  # a fixed-shape export: its own imgsz (96x128) is used
    assert second.name == "exp2" and not (second / "a.png").exists()
    a = np.loadtxt(first / "labels" / "a.txt", ndmin=2)
    b = np.loadtxt(second / "labels" / "a.txt", ndmin=2)
    # a random model scores hundreds of boxes almost equally, so NMS near-ties may flip a few; the rest are identical
    matched = (np.abs(b[:, None] - a[None]).max(-1) < 1e-3).any(1)
    assert len(a) > 10 and abs(len(a) - len(b)) <= 0.05 * len(a) and matched.mean() > 0.95


def test_stream_list_ends_cleanly(assets):
    streams = assets["dir"] / "cams.streams"  # a stream list whose only "camera" is a file that runs out
    streams.write_text(f"{assets['video']}\n")
    save_dir = detect.run(weights=str(assets["weights"]), source=str(streams), imgsz=[128],
                          project=assets["dir"] / "r3")
    videos = list(save_dir.glob("*.mp4"))
    assert len(videos) == 1 and frames_and_fps(videos[0])[0] >= 1


def test_bad_inputs_give_clear_messages(assets, cli_error, tmp_path):
    w = ["--weights", str(assets["weights"]), "--imgsz", "128", "--project", str(tmp_path / "runs")]
    assert "no such file or directory" in cli_error(detect.main, w + ["--source", str(tmp_path / "missing.jpg")])
    assert "matches no files" in cli_error(detect.main, w + ["--source", str(tmp_path / "*.jpg")])

    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"\x00not an image" * 50)
    assert "could be read" in cli_error(detect.main, w + ["--source", str(bad_image)])

    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(np.random.default_rng(1).bytes(2048))
    assert "Failed to open video" in cli_error(detect.main, w + ["--source", str(bad_video)])

    assert "Failed to open" in cli_error(detect.main, w + ["--source", "rtsp://127.0.0.1:1/none"])

    not_ckpt = tmp_path / "weights.pt"
    not_ckpt.write_text("definitely not a checkpoint")
    err = cli_error(detect.main,
                    ["--weights", str(not_ckpt), "--source", str(assets["src"]), "--project", str(tmp_path / "runs")])
    assert str(not_ckpt) in err and "checkpoint" in err
    assert not list((tmp_path / "runs").glob("exp*"))  # no run folder is left for runs that could not start


def test_heat_maps_for_gating_modules_only(assets):
    """New modules: a map for each module that gates its input (SimAM, LSKA), none for self-attention (MHSA)."""
    from models.insert import insert_attention

    cfg = yaml.safe_load((ROOT / "models" / "yolov5s.yaml").read_text())
    cfg = insert_attention(insert_attention(insert_attention(cfg, "SimAM", [4]), "MHSA", [7]), "LSKA", [10])
    weights = assets["dir"] / "tiny-catalogue.pt"
    torch.save({"epoch": 0, "model": None, "ema": deepcopy(tiny_ema_model(cfg)).half()}, weights)
    save_dir = detect.run(weights=str(weights), source=str(assets["src"] / "a.png"), imgsz=[128], attention=True,
                          project=assets["dir"] / "runs-catalogue")
    maps = sorted(p.name for p in (save_dir / "attention").glob("*.jpg"))
    assert maps == ["a_layer11_LSKA.jpg", "a_layer5_SimAM.jpg"]
    assert cv2.imread(str(save_dir / "attention" / maps[0])).shape == (120, 160, 3)


def test_attention_recorder_maps_every_gating_module():
    """Every registered gate gives its effective gate sum|out| / sum|in| per pixel; other modules are not hooked."""
    from models.attention import ATTENTION, build_attention
    from utils.visualize import AttentionRecorder

    x = torch.randn(2, 128, 9, 11)
    for name, cls in {cls.__name__: cls for cls in ATTENTION.values()}.items():
        m = torch.nn.Sequential(build_attention(name, 128)).eval()
        rec = AttentionRecorder(m)
        with torch.no_grad():
            y = m(x)
        if not cls.gate:
            assert not rec.handles and not rec.records, name
            continue
        (label, gate), = rec.records.items()
        assert label == f"0_{name}" and gate.shape == (2, 9, 11), name
        assert torch.allclose(gate, y.abs().sum(1) / x.abs().sum(1), rtol=1e-4), name
        rec.remove()
