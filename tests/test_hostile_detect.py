"""Hostile input, round three: file names that are not valid UTF-8 (OpenCV crashes on them), source lists and folders
that name nothing readable, and training batches of one image for modules whose BatchNorm needs two."""

from __future__ import annotations

import os
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import detect
from tests.test_detect import tiny_ema_model
from utils.outputs import OutputNames, cv2_readable, cv2_writable, is_encodable, safe_name, shown, write_image

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.skipif(os.name == "nt", reason="file names of raw bytes are a POSIX thing")]
ROOT = Path(__file__).resolve().parents[1]
BAD = b"bad\xff"  # a byte that starts no UTF-8 sequence


def bad_path(folder: Path, name: bytes) -> Path:
    """The path Python gives a file in ``folder`` whose name is the raw bytes ``name`` (surrogate-escaped)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def real_names(folder: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(folder)))


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile_detect")
    src = d / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    im = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    cv2.rectangle(im, (20, 20), (60, 70), (0, 0, 255), -1)
    image = bad_path(src, BAD + b".jpg")
    image.write_bytes(cv2.imencode(".jpg", im)[1].tobytes())  # no OpenCV call on the name itself
    weights = d / "tiny-ema.pt"
    torch.save({"epoch": 0, "best_fitness": None, "model": None, "ema": deepcopy(tiny_ema_model()).half(),
                "optimizer": None, "train_args": {}, "date": "2026-11-01", "version": "8.4.190"}, weights)
    return {"dir": d, "src": src, "image": image, "weights": weights}


# ----------------------------------------------------------------------------------------------------
# 1. File names that are not valid UTF-8
# ----------------------------------------------------------------------------------------------------
def test_safe_name_keeps_good_names_and_makes_bad_ones_unique_and_encodable():
    for good in ("bus.jpg", "café 1.png", "日本.jpg", ".hidden"):
        assert safe_name(good) == good and is_encodable(good)
    a, b = os.fsdecode(b"bad\xff.jpg"), os.fsdecode(b"bad\xfe.jpg")
    assert not is_encodable(a)
    sa, sb = safe_name(a), safe_name(b)
    assert is_encodable(sa) and sa.startswith("bad_-") and sa.endswith(".jpg") and len(sa) == len("bad_-12345678.jpg")
    assert sa != sb and safe_name(a) == sa  # unique per original, the same on every call
    assert safe_name("x\ud800y") != "x\ud800y" and is_encodable(safe_name("x\ud800y"))  # a lone surrogate too
    assert shown(a) == "bad\\xff.jpg" and shown("café") == "café"


def test_writers_take_any_folder_and_name(tmp_path):
    folder = bad_path(tmp_path, b"d\xffir")
    folder.mkdir()
    im = np.full((16, 24, 3), 200, np.uint8)
    written = write_image(folder / os.fsdecode(b"im\xff.png"), im)
    assert written.parent == folder and is_encodable(written.name) and written.exists()
    assert np.array_equal(cv2.imdecode(np.fromfile(written, np.uint8), cv2.IMREAD_COLOR), im)  # PNG: lossless
    video = folder / os.fsdecode(b"v\xff.mp4")
    writer = cv2.VideoWriter(cv2_writable(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (24, 16))
    for _ in range(3):
        writer.write(im)
    writer.release()
    out = folder / safe_name(video.name)
    assert out.stat().st_size > 0
    os.rename(out, video)  # and reading one back through its unencodable name
    cap = cv2.VideoCapture(cv2_readable(video))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_output_names_log_the_original_once():
    lines = []
    names = OutputNames(lines.append)
    p = Path(os.fsdecode(b"/data/bad\xff.jpg"))
    assert names.stem(p) == names.stem(p) == Path(safe_name(p.name)).stem
    assert names.stem(Path("/data/ok.jpg")) == "ok"
    assert lines == [f"WARNING ⚠️ /data/bad\\xff.jpg: the file name is not valid UTF-8; its results are named "
                     f"{Path(safe_name(p.name)).stem}"]


def test_detect_in_process_writes_every_output_under_the_safe_name(assets, tmp_path, log_records):
    stem = Path(safe_name(assets["image"].name)).stem
    assert detect.main(["--weights", str(assets["weights"]), "--source", str(assets["src"]), "--imgsz", "64",
                        "--project", str(tmp_path), "--save-txt", "--save-crop", "--visualize"]) == 0
    out = tmp_path / "exp"
    assert (out / f"{stem}.jpg").is_file() and cv2.imread(str(out / f"{stem}.jpg")).shape == (120, 160, 3)
    assert (out / "labels" / f"{stem}.txt").read_text().strip()
    assert list((out / "crops").rglob(f"{stem}*.jpg")) and list((out / "features" / stem).glob("*.png"))
    attention = sorted(p.name for p in (out / "attention").iterdir())
    assert attention == [f"{stem}_layer10_EMA.jpg", f"{stem}_layer7_EMA.jpg"]
    assert all(is_encodable(name.decode()) for _, _, files in os.walk(os.fsencode(out)) for name in files)
    messages = [m for _, m in log_records]
    warned = [m for m in messages if "not valid UTF-8" in m]
    assert warned == [f"WARNING ⚠️ {shown(assets['image'])}: the file name is not valid UTF-8; its results are "
                      f"named {stem}"]
    assert all(is_encodable(m) for m in messages)  # log lines show the byte as \xff


def test_detect_subprocess_does_not_crash_on_a_bad_name(assets, tmp_path):
    """A segmentation fault would be return code -11; the run must finish and name the file."""
    stem = Path(safe_name(assets["image"].name)).stem
    video = bad_path(assets["src"].parent, b"clip\xff.mp4")  # and a video, read and written through OpenCV
    writer = cv2.VideoWriter(cv2_writable(video), cv2.VideoWriter_fourcc(*"mp4v"), 6, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    os.rename(cv2_writable(video), video)
    listing = tmp_path / "list.txt"
    listing.write_bytes(os.fsencode(assets["image"]) + b"\n" + os.fsencode(video) + b"\n")
    project = bad_path(tmp_path, b"runs\xff")  # an output folder that is not UTF-8 either
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "detect.py"), "--weights", str(assets["weights"]), "--source",
                        str(listing), "--imgsz", "64", "--project", str(project)],
                       capture_output=True, env=env, cwd=tmp_path, timeout=300)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, out[-2000:]
    assert "bad\\xff.jpg: the file name is not valid UTF-8" in out and "clip\\xff.mp4" in out
    assert real_names(project / "exp") == sorted([f"{stem}.jpg".encode(),
                                                  f"{Path(safe_name(video.name)).stem}.mp4".encode()])
    cap = cv2.VideoCapture(cv2_readable(project / "exp" / f"{Path(safe_name(video.name)).stem}.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4


def test_classify_predict_writes_a_safe_name(tmp_path):
    import classify.predict as cls_predict
    from models.classify import ClassificationModel

    torch.manual_seed(0)
    model = ClassificationModel(ROOT / "models/cls/cnn4-ema.yaml", nc=2, verbose=False).eval()
    model.names = {0: "a", 1: "b"}
    weights = tmp_path / "cls.pt"
    torch.save({"epoch": 0, "model": None, "ema": model.half(), "optimizer": None, "train_args": {"imgsz": 32}},
               weights)
    src = tmp_path / "src"
    src.mkdir()
    image = bad_path(src, BAD + b".png")
    image.write_bytes(cv2.imencode(".png", np.full((40, 40, 3), 90, np.uint8))[1].tobytes())
    video = bad_path(src, b"clip\xff.mp4")
    writer = cv2.VideoWriter(cv2_writable(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (40, 40))
    for i in range(3):
        writer.write(np.full((40, 40, 3), 60 * i, np.uint8))
    writer.release()
    os.rename(cv2_writable(video), video)
    results = cls_predict.run(weights=weights, source=src, project=tmp_path / "runs", save_txt=True)
    stem = Path(safe_name(image.name)).stem
    out = tmp_path / "runs" / "exp"
    assert len(results) == 4 and (out / f"{stem}.jpg").is_file() and (out / "labels" / f"{stem}.txt").is_file()
    assert (out / f"{Path(safe_name(video.name)).stem}.avi").stat().st_size > 0


# ----------------------------------------------------------------------------------------------------
# 2. Sources that name nothing readable: one line naming the list, the line and the path
# ----------------------------------------------------------------------------------------------------
def test_source_errors_read_as_one_sentence(assets, tmp_path, cli_error):
    w = ["--weights", str(assets["weights"]), "--imgsz", "64", "--project", str(tmp_path / "runs")]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("hello\n")
    (tmp_path / "empty").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("notes/a.md\n")
    takes = "; --source takes an image or video file (.jpg, .png, .mp4, ...), a folder or glob of them"
    cases = {
        str(listing): f"ERROR: --source {listing}, line 1: notes/a.md: not an image or video file{takes}",
        str(notes): f"ERROR: --source {notes}: the folder holds no image or video file, only 1 other file{takes}",
        str(tmp_path / "empty"): f"ERROR: --source {tmp_path / 'empty'}: the folder holds no image or video file"
                                 f"{takes}",
        str(notes / "*"): f"ERROR: --source {notes / '*'}: the pattern matches no image or video file, only 1 other "
                          f"file{takes}",
        str(notes / "a.md"): f"ERROR: --source {notes / 'a.md'}: not an image or video file{takes}",
        str(tmp_path / "nothing" / "*.jpg"): f"ERROR: --source {tmp_path / 'nothing' / '*.jpg'}: the pattern "
                                             f"matches no files\n",
        str(tmp_path / "missing.jpg"): f"ERROR: --source {tmp_path / 'missing.jpg'}: no such file or directory\n",
    }
    for source, expected in cases.items():
        err = cli_error(detect.main, w + ["--source", source])
        assert err.startswith(expected) and err.count("\n") == 1, err
    listing.write_text("\n\n./gone.jpg\n")
    err = cli_error(detect.main, w + ["--source", str(listing)])
    assert err == (f"ERROR: --source {listing}, line 3: ./gone.jpg: no such file or directory (paths in a list are "
                   f"absolute, or relative to the current folder or the list's folder)\n")
    listing.write_text("\n")
    assert cli_error(detect.main, w + ["--source", str(listing)]).startswith(f"ERROR: --source {listing}: the list "
                                                                              f"is empty{takes}")
    assert not (tmp_path / "runs").exists()


def test_list_with_some_unreadable_lines_warns_and_runs(assets, tmp_path, log_records):
    (tmp_path / "a.md").write_text("x\n")
    listing = tmp_path / "list.csv"
    listing.write_bytes(b"source\na.md," + os.fsencode(assets["image"]) + b"\n")
    assert detect.main(["--weights", str(assets["weights"]), "--source", str(listing), "--imgsz", "64",
                        "--project", str(tmp_path / "runs")]) == 0
    assert [m for _, m in log_records if "skipped" in m] == [
        f"WARNING ⚠️ --source {listing}, line 2: a.md: not an image or video file; skipped"]
    assert (tmp_path / "runs" / "exp" / f"{Path(safe_name(assets['image'].name)).stem}.jpg").is_file()


# ----------------------------------------------------------------------------------------------------
# 3. Batches of one image for modules with BatchNorm over pooled vectors
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["SK", "BAM", "CoT"])
def test_pooled_batchnorm_modules_need_two_images_in_training_only(name):
    from models.attention import ATTENTION

    cls = ATTENTION[name]
    assert cls.min_batch == 2
    torch.manual_seed(0)
    m = cls(32)
    x = torch.randn(2, 32, 8, 8)
    m.train()(x).sum().backward()  # two images: trains
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        m(x[:1])  # one: PyTorch refuses, which is why the trainer never makes such a batch
    m.eval()
    with torch.no_grad():  # inference is batch-independent: an image alone gives what it gives in a batch
        torch.testing.assert_close(m(x[:1]), m(x)[:1], rtol=1e-4, atol=1e-5)


def test_pairs_only_drops_a_lone_last_image_and_refuses_batches_of_one():
    from utils.batches import BatchSizeError, lone_last_batch, modules_needing_pairs, pairs_only

    calls = []

    def build(dataset, batch, *args, rank=-1, drop_last=False, **kwargs):
        calls.append((len(dataset), batch, rank, drop_last))

    needy = ["SK (layer 8)"]
    for n, batch, drop in ((5, 4, True), (6, 4, False), (8, 4, False), (9, 4, True), (3, 4, False)):
        pairs_only(build, needy)(list(range(n)), batch, 0)
        assert calls[-1] == (n, batch, -1, drop) and lone_last_batch(n, batch) == drop
    pairs_only(build, needy, world_size=2)(list(range(10)), 4, rank=0)  # 5 per process: 4 + 1
    assert calls[-1][-1] is True
    with pytest.raises(BatchSizeError, match=r"^--batch-size 1: SK \(layer 8\) normalise pooled vectors with "
                                             r"BatchNorm, which needs at least 2 images per training batch; use "
                                             r"--batch-size 2 or more, or a model without them$"):
        pairs_only(build, needy)(list(range(10)), 1, 0)
    with pytest.raises(BatchSizeError, match="^the training set has 1 image: "):
        pairs_only(build, needy)([0], 4, 0)
    from tests.helpers import build as build_model

    model = build_model(str(ROOT / "models/yolov5n.yaml"))
    assert modules_needing_pairs(model) == []


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from tests.helpers import shapes_data

    return shapes_data(tmp_path_factory.mktemp("data5"), n_train=5, n_val=2, imgsz=64)


def tiny_cfg(folder: Path) -> Path:
    """A small detector with SK, BAM and CoT in a row (32 channels at stride 8), so one training covers all three."""
    cfg = {"nc": 4, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30, 33, 23]],
           "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]],
                        [-1, 1, "SK", []], [-1, 1, "BAM", []], [-1, 1, "CoT", []]],
           "head": [[[5], 1, "Detect", ["nc", "anchors"]]]}
    f = folder / "tiny-sk-bam-cot.yaml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return f


def test_training_with_a_last_batch_of_one_image(tiny_data, tmp_path, log_records):
    import train

    trainer = train.run(data=str(tiny_data), cfg=str(tiny_cfg(tmp_path)), imgsz=64, batch_size=4, epochs=1,
                        workers=0, device="cpu", project=str(tmp_path / "runs"), noplots=True, noautoanchor=True,
                        hyp="data/hyps/hyp.shapes.yaml")
    assert (Path(trainer.save_dir) / "weights" / "last.pt").is_file()
    assert len(trainer.train_loader) == 1 and trainer.train_loader.drop_last  # 5 images: 4, and the fifth left out
    assert [m for _, m in log_records if "left out" in m] == [
        "SK (layer 3), BAM (layer 4), CoT (layer 5): need 2+ images per training batch, so the last batch of each "
        "epoch, which would hold 1 of 5 images, is left out (a different image each epoch)"]


def test_batch_size_one_is_one_error(tiny_data, tmp_path, cli_error):
    import train

    err = cli_error(train.main, ["--data", str(tiny_data), "--cfg", str(tiny_cfg(tmp_path)), "--imgsz", "64",
                                 "--batch-size", "1", "--epochs", "1", "--workers", "0", "--device", "cpu",
                                 "--project", str(tmp_path / "runs"), "--noplots"])
    assert err == ("ERROR: --batch-size 1: SK (layer 3), BAM (layer 4), CoT (layer 5) normalise pooled vectors with "
                   "BatchNorm, which needs at least 2 images per training batch; use --batch-size 2 or more, or a "
                   "model without them\n")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))
