"""Data side: archive download/unpack, VisDrone conversion, the synthetic shapes dataset, data and hyp YAMLs.

Everything runs offline on fixtures built in ``tmp_path`` (local paths, ``file://`` URLs and a loopback HTTP server).
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from utils import dataprep
from utils.dataprep import (
    SHAPES_NAMES,
    DownloadError,
    download,
    make_shapes_dataset,
    render_shapes_image,
    sample_rng,
    visdrone2yolo,
)

# --------------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
SPLIT = "VisDrone2019-DET-val"
IMG_W, IMG_H = 100, 80

# (annotation text, expected YOLO label text) of the main fixture image
ANNOTATION = (
    "10,20,30,40,1,4,0,0\n"  # 1: car -> class 3
    "0,0,15,15,0,0,0,0\n"  # 2: ignored region -> skipped
    "5,5,10,10,1,11,0,0\n"  # 3: others -> skipped
    "90,70,20,20,1,1,0,0\n"  # 4: crosses the bottom-right border -> clipped
    "-5,-10,15,20,1,10,1,2,\n"  # 5: trailing comma, crosses the top-left border -> clipped, class 9
    "\n"  # 6: blank
    "abc,1,2,3,1,2,0,0\n"  # 7: malformed (non-numeric)
    "1,2,3\n"  # 8: malformed (too few values)
    "120,10,5,5,1,2,0,0\n"  # 9: entirely outside the image -> no area left, dropped
    "50,40,10,10,1,12,0,0\n"  # 10: malformed (unknown category)
    " 50, 40, 10, 10, 1, 2, 0, 0,,\n"  # 11: spaces and two trailing commas -> class 1
    "\n\n"
)
EXPECTED_LABELS = (
    "3 0.250000 0.500000 0.300000 0.500000\n"
    "0 0.950000 0.937500 0.100000 0.125000\n"
    "9 0.050000 0.062500 0.100000 0.125000\n"
    "1 0.550000 0.562500 0.100000 0.125000\n"
)


def _write_jpg(path: Path, w: int = IMG_W, h: int = IMG_H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))


def _visdrone_tree(base: Path) -> Path:
    """A VisDrone2019-DET split folder in the original format; returns ``base``."""
    split = base / SPLIT
    _write_jpg(split / "images" / "0000001_00000_d_0000001.jpg")
    _write_jpg(split / "images" / "0000002_00000_d_0000002.jpg", 64, 48)
    ann = split / "annotations"
    ann.mkdir(parents=True)
    (ann / "0000001_00000_d_0000001.txt").write_text(ANNOTATION)
    (ann / "0000002_00000_d_0000002.txt").write_text("0,0,64,48,0,0,0,0\r\n1,1,5,5,1,11,0,0\r\n")  # CRLF, nothing kept
    (ann / "0000003_00000_d_0000003.txt").write_text("1,1,5,5,1,1,0,0\n")  # no image
    return base


@pytest.fixture
def visdrone_zip(tmp_path: Path) -> Path:
    src = _visdrone_tree(tmp_path / "src")
    archive = tmp_path / "archives" / f"{SPLIT}.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((src / SPLIT).rglob("*")):
            zf.write(f, f.relative_to(src).as_posix())
    return archive


@pytest.fixture
def tgz(tmp_path: Path) -> Path:
    src = tmp_path / "tsrc" / "bundle"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    archive = tmp_path / "archives" / "bundle.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="bundle")
    return archive



def _tree_digest(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------
def test_download_file_url_and_local_path(tmp_path: Path, visdrone_zip: Path, tgz: Path) -> None:
    dest = tmp_path / "out"
    got = download([visdrone_zip.as_uri(), str(tgz)], dir=dest, threads=2)
    assert got == [visdrone_zip, tgz]  # local archives are unpacked in place, not copied
    assert (dest / SPLIT / "annotations" / "0000001_00000_d_0000001.txt").read_text() == ANNOTATION
    assert (dest / "bundle" / "a.txt").read_text() == "alpha\n"
    assert (dest / "bundle" / "sub" / "b.txt").read_text() == "beta\n"
    assert visdrone_zip.exists() and tgz.exists()  # local sources are never deleted
    assert not list(dest.glob("*.part"))


def test_download_local_without_unzip_copies(tmp_path: Path, tgz: Path) -> None:
    dest = tmp_path / "copy"
    (got,) = download(tgz, dir=dest, unzip=False)
    assert got == dest / "bundle.tar.gz" and got.read_bytes() == tgz.read_bytes()
    assert not (dest / "bundle").exists()


def test_download_http_atomic_and_delete(tmp_path: Path, http_dir, visdrone_zip: Path, tgz: Path) -> None:
    root, base = http_dir
    (root / visdrone_zip.name).write_bytes(visdrone_zip.read_bytes())
    (root / "plain.txt").write_text("hello\n")
    dest = tmp_path / "http"
    got = download([f"{base}/{visdrone_zip.name}", f"{base}/plain.txt?x=1"], dir=dest, delete=True)
    assert got == [dest / visdrone_zip.name, dest / "plain.txt"]
    assert not (dest / visdrone_zip.name).exists()  # deleted after unpacking
    assert (dest / "plain.txt").read_text() == "hello\n"
    assert (dest / SPLIT / "images" / "0000001_00000_d_0000001.jpg").is_file()
    assert not list(dest.rglob("*.part"))


def test_download_errors_name_the_url(tmp_path: Path, http_dir) -> None:
    root, base = http_dir
    missing = (tmp_path / "nope.zip").as_uri()
    with pytest.raises(DownloadError, match="nope.zip"):
        download(missing, dir=tmp_path / "d")
    url = f"{base}/absent.zip"
    with pytest.raises(DownloadError, match="absent.zip") as e:
        download(url, dir=tmp_path / "d", retries=2)
    assert url in str(e.value)
    assert not list((tmp_path / "d").glob("*.part"))  # nothing half-written left behind
    (root / "fake.zip").write_text("<html>not a zip</html>")
    with pytest.raises(DownloadError, match="fake.zip"):
        download(f"{base}/fake.zip", dir=tmp_path / "d")
    with pytest.raises(DownloadError, match="s3://bucket/x.zip"):
        download("s3://bucket/x.zip", dir=tmp_path / "d")


def test_extract_refuses_escaping_members(tmp_path: Path) -> None:
    bad = tmp_path / "evil.tar"
    payload = tmp_path / "payload.txt"
    payload.write_text("x")
    with tarfile.open(bad, "w") as tf:
        tf.add(payload, arcname="../escaped.txt")
    with pytest.raises(DownloadError, match="evil.tar"):
        download(bad, dir=tmp_path / "inside")
    assert not (tmp_path / "escaped.txt").exists()


# --------------------------------------------------------------------------------------------------
# VisDrone
# --------------------------------------------------------------------------------------------------
def test_visdrone2yolo_from_downloaded_zip(tmp_path: Path, visdrone_zip: Path, log_records) -> None:
    dest = tmp_path / "datasets" / "VisDrone"
    download([visdrone_zip.as_uri()], dir=dest)
    split = dest / SPLIT
    stats = visdrone2yolo(split)

    assert (split / "labels" / "0000001_00000_d_0000001.txt").read_text() == EXPECTED_LABELS
    assert (split / "labels" / "0000002_00000_d_0000002.txt").read_text() == ""  # only skipped rows
    assert not (split / "labels" / "0000003_00000_d_0000003.txt").exists()  # image missing
    assert stats == {
        "boxes": 4,
        "files": 2,
        "malformed": 3,
        "dropped_empty": 1,
        "skipped_ignored_region": 2,
        "skipped_others": 2,
        "missing_images": 1,
    }
    warnings = [m for level, m in log_records if level == "warning"]
    ann = split / "annotations" / "0000001_00000_d_0000001.txt"
    for line in (7, 8, 10):
        assert sum(f"{ann}:{line}:" in w for w in warnings) == 1, (line, warnings)
    assert any("0000003_00000_d_0000003.txt" in w and "no image" in w for w in warnings)
    assert len(warnings) == 4


def test_visdrone_labels_pass_engine_verification(tmp_path: Path, visdrone_zip: Path) -> None:
    from ultralytics.data.utils import verify_image_label

    dest = tmp_path / "VisDrone"
    download(visdrone_zip, dir=dest)
    visdrone2yolo(dest / SPLIT)
    img = dest / SPLIT / "images" / "0000001_00000_d_0000001.jpg"
    lbl = dest / SPLIT / "labels" / "0000001_00000_d_0000001.txt"
    result = verify_image_label((str(img), str(lbl), "", False, 10, 0, 0, False))
    assert result[0] == str(img) and result[8] == 0, result[-1]  # not corrupt
    assert result[1].shape == (4, 5)


def test_visdrone2yolo_needs_annotations(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="annotations"):
        visdrone2yolo(tmp_path)


# --------------------------------------------------------------------------------------------------
# shapes dataset
# --------------------------------------------------------------------------------------------------
def test_shapes_deterministic_and_seeded(tmp_path: Path) -> None:
    a = make_shapes_dataset(tmp_path / "a", n_train=12, n_val=4, imgsz=128, seed=0)
    b = make_shapes_dataset(tmp_path / "b", n_train=12, n_val=4, imgsz=128, seed=0)
    c = make_shapes_dataset(tmp_path / "c", n_train=12, n_val=4, imgsz=128, seed=1)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert len(da) == 2 * (12 + 4) + 1  # images, labels, manifest
    assert da == db
    assert all(da[k] != dc[k] for k in da if k.startswith("images/"))
    assert not (tmp_path / "a.partial").exists()


def test_shapes_layout_and_labels(tmp_path: Path) -> None:
    root = make_shapes_dataset(tmp_path / "shapes", n_train=20, n_val=5, imgsz=160, seed=3)
    for split, n in (("train", 20), ("val", 5)):
        images = sorted((root / "images" / split).glob("*.png"))
        labels = sorted((root / "labels" / split).glob("*.txt"))
        assert [p.stem for p in images] == [p.stem for p in labels] == [f"{i:06d}" for i in range(n)]
        for img_path, lbl_path in zip(images, labels):
            im = cv2.imread(str(img_path), cv2.IMREAD_UNCHANGED)
            assert im.shape == (160, 160, 3) and im.dtype == np.uint8
            rows = np.loadtxt(lbl_path, ndmin=2)
            assert 1 <= len(rows) <= 6
            assert np.all(rows[:, 0] == rows[:, 0].round()) and rows[:, 0].min() >= 0
            assert rows[:, 0].max() < len(SHAPES_NAMES)
            assert np.all((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)) and np.all(rows[:, 3:] > 0)
            xyxy = np.c_[rows[:, 1:3] - rows[:, 3:] / 2, rows[:, 1:3] + rows[:, 3:] / 2]
            assert xyxy.min() >= -1e-6 and xyxy.max() <= 1 + 1e-6  # whole box inside the image
    # the files hold exactly what the renderer produces for (seed, split, index)
    sample = render_shapes_image(sample_rng(3, "val", 2), 160)
    assert np.array_equal(cv2.imread(str(root / "images" / "val" / "000002.png")), sample.image)
    np.testing.assert_allclose(np.loadtxt(root / "labels" / "val" / "000002.txt", ndmin=2), sample.labels, atol=1e-6)


def test_shapes_boxes_match_drawn_objects() -> None:
    sizes, classes = [], set()
    for i in range(40):
        s = render_shapes_image(sample_rng(0, "train", i), 256)
        assert len(s.masks) == len(s.labels)
        for lab, mask in zip(s.labels, s.masks):
            ys, xs = np.nonzero(mask)
            drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 256
            c, xc, yc, w, h = lab
            box = np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2])
            np.testing.assert_allclose(box, drawn, atol=1.01 / 256)  # within a pixel of the drawn shape
            sizes.append(max(w, h) * 256)
            classes.add(int(c))
        # the objects stand out: a shape's visible pixels differ in colour from the background just around it
        img, anywhere = s.image.astype(np.float32), s.masks.any(0)
        for k, m in enumerate(s.masks):
            visible = m & ~s.masks[k + 1 :].any(0)  # not covered by shapes drawn later
            ring = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~anywhere
            if visible.sum() > 30 and ring.sum() > 10:
                assert np.abs(img[visible].mean(0) - img[ring].mean(0)).sum() > 60
    assert classes == set(range(len(SHAPES_NAMES)))
    assert min(sizes) < 16 and max(sizes) > 64  # small and large objects


def test_shapes_idempotent_and_regenerates(tmp_path: Path) -> None:
    root = make_shapes_dataset(tmp_path / "s", n_train=3, n_val=2, imgsz=64)
    marker = root / "labels" / "train.cache"
    marker.write_bytes(b"engine cache")  # a complete dataset is left untouched, caches included
    make_shapes_dataset(root, n_train=3, n_val=2, imgsz=64)
    assert marker.exists()
    (root / "images" / "val" / "000001.png").unlink()  # incomplete -> rebuilt
    make_shapes_dataset(root, n_train=3, n_val=2, imgsz=64)
    assert (root / "images" / "val" / "000001.png").is_file() and not marker.exists()
    make_shapes_dataset(root, n_train=2, n_val=2, imgsz=64)  # other parameters -> replaced
    assert len(list((root / "images" / "train").iterdir())) == 2


def test_shapes_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="mine"):
        make_shapes_dataset(tmp_path / "mine", n_train=1, n_val=1, imgsz=64)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"


def test_shapes_yaml_generates_and_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's dataset check (with ours in front) runs the YAML's 'shapes' step, which generates the data under
    its datasets dir."""
    import ultralytics.data.utils as data_utils

    import utils.engine  # noqa: F401 - puts utils.datayaml's check in front of the engine's

    datasets = tmp_path / "datasets"
    monkeypatch.setattr(data_utils, "DATASETS_DIR", datasets)
    monkeypatch.setattr(data_utils, "check_font", lambda *a, **k: None)  # no font download
    monkeypatch.chdir(tmp_path)  # '../datasets/shapes' must not find a dataset relative to the real cwd
    calls = []
    real = dataprep.make_shapes_dataset

    def small(root, **kwargs):  # same code path, fewer images
        calls.append((Path(root), kwargs))
        return real(root, n_train=6, n_val=3, imgsz=kwargs["imgsz"], seed=kwargs["seed"])

    monkeypatch.setattr(dataprep, "make_shapes_dataset", small)
    data = data_utils.check_det_dataset(str(REPO / "data" / "shapes.yaml"))

    root = (datasets / "shapes").resolve()
    assert calls == [(root, {"n_train": 400, "n_val": 100, "imgsz": 256, "seed": 0})]
    assert Path(data["path"]) == root
    assert data["train"] == str(root / "images" / "train") and data["val"] == str(root / "images" / "val")
    assert data["nc"] == len(SHAPES_NAMES) and data["names"] == dict(enumerate(SHAPES_NAMES))
    assert len(list((root / "images" / "val").glob("*.png"))) == 3

    calls.clear()  # second time: found, nothing generated
    data_utils.check_det_dataset(str(REPO / "data" / "shapes.yaml"))
    assert calls == []


# --------------------------------------------------------------------------------------------------
# data and hyp YAMLs
# --------------------------------------------------------------------------------------------------
def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "data" / name).read_text())


def test_visdrone_and_coco_yaml() -> None:
    vd = _load("VisDrone.yaml")
    assert vd["names"] == dict(enumerate(dataprep.VISDRONE_NAMES))
    assert list(dataprep.VISDRONE_NAMES) == [
        "pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor"
    ]  # fmt: skip
    assert vd["train"] == "VisDrone2019-DET-train/images" and vd["val"] == "VisDrone2019-DET-val/images"
    assert vd["download"] == {"prepare": "VisDrone"}  # no code in the YAML: utils/dataprep.py prepare_visdrone
    assert dataprep.VISDRONE_SPLITS == tuple(f"VisDrone2019-DET-{s}" for s in ("train", "val", "test-dev"))

    coco = _load("coco.yaml")
    assert len(coco["names"]) == 80 and coco["names"][0] == "person" and coco["names"][79] == "toothbrush"
    assert (coco["train"], coco["val"], coco["test"]) == ("train2017.txt", "val2017.txt", "test-dev2017.txt")
    assert coco["path"].endswith("/coco")  # coco2017labels.zip unpacks a 'coco/' folder into path's parent
    assert coco["download"] == {"prepare": "coco"}  # utils/dataprep.py prepare_coco
    assert dataprep.COCO_LABELS_URL.endswith("/coco2017labels.zip")
    assert dataprep.COCO_IMAGE_ZIPS == ("train2017.zip", "val2017.zip", "test2017.zip")


HYP_SCRATCH_LOW = dict(
    lr0=0.01, lrf=0.01, momentum=0.937, weight_decay=0.0005, warmup_epochs=3.0, warmup_momentum=0.8,
    warmup_bias_lr=0.1, box=0.05, cls=0.5, cls_pw=1.0, obj=1.0, obj_pw=1.0, iou_t=0.20, anchor_t=4.0,
    fl_gamma=0.0, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
    perspective=0.0, flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.0, copy_paste=0.0,
)  # fmt: skip
HYP_VISDRONE = dict(
    lr0=0.0003, lrf=0.12, momentum=0.843, weight_decay=0.00036, warmup_epochs=2.0, warmup_momentum=0.5,
    warmup_bias_lr=0.05, box=0.07, cls=0.18, cls_pw=0.631, obj=0.15, obj_pw=0.911, iou_t=0.2, anchor_t=3,
    fl_gamma=0.0, hsv_h=0.4, hsv_s=0.3, hsv_v=0.5, degrees=0.2, translate=0.0, scale=0.4, shear=0.0,
    perspective=0.0, flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.2, copy_paste=0.1,
)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "expected"), [("hyp.scratch-low.yaml", HYP_SCRATCH_LOW), ("hyp.VisDrone.yaml", HYP_VISDRONE)]
)
def test_hyps_match_table2(name: str, expected: dict) -> None:
    hyp = _load(f"hyps/{name}")
    assert set(hyp) == set(expected)
    for k, v in expected.items():
        assert isinstance(hyp[k], (int, float)) and not isinstance(hyp[k], bool) and hyp[k] == v, k
