"""Hostile and mistaken datasets: a data YAML's download runs no code unless allowed, labels are reported by label file
and line, a dataset without labels fails before any model is built.

Everything is built in ``tmp_path`` and runs offline (a loopback HTTP server stands in for the download hosts).
"""

from __future__ import annotations

import shutil
import zipfile
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import export
import train
import utils.engine  # noqa: F401 - installs our dataset checks in front of the engine's
import val
from models.yolo import Model
from tests.helpers import one_error
from utils import dataprep
from utils.datayaml import DataScriptError, DataYAMLError, prepare_data
from utils.engine import YOLOv5Trainer

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["circle", "rectangle", "triangle", "star"]


# --------------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg["nc"] = len(NAMES)
    torch.manual_seed(0)
    m = Model(cfg, verbose=False).eval()
    m.names = dict(enumerate(NAMES))
    path = tmp_path_factory.mktemp("w") / "w.pt"
    torch.save({"epoch": -1, "model": None, "ema": deepcopy(m).half(), "optimizer": None}, path)
    return path


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    return dataprep.make_shapes_dataset(root, n_train=4, n_val=2, imgsz=64, seed=0)


def data_yaml(path: Path, root: Path, **extra) -> Path:
    path.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": dict(enumerate(NAMES)), **extra}, sort_keys=False))
    return path


def evil_yaml(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A data YAML whose val images are missing and whose ``download:`` would write ``marker`` (and, once run,
    generate a small dataset so that the run can go on); returns (yaml, marker)."""
    marker = tmp_path / "marker"
    root = tmp_path / "datasets" / "evil"
    if kind == "python":
        script = (f"open({str(marker)!r}, 'w').write('ran')\n"
                  "from utils.dataprep import make_shapes_dataset\n"
                  "make_shapes_dataset(yaml['path'], n_train=4, n_val=2, imgsz=64)\n")
    else:
        sh = tmp_path / "evil.sh"
        sh.write_text(f"#!/bin/sh\ntouch {marker}\nmkdir -p {root}\ncp -r {tmp_path / 'seed'}/. {root}/\n")
        dataprep.make_shapes_dataset(tmp_path / "seed", n_train=4, n_val=2, imgsz=64)
        script = f"bash {sh}"
    return data_yaml(tmp_path / "evil.yaml", root, download=script), marker


def _no_training(monkeypatch) -> None:
    monkeypatch.setattr(YOLOv5Trainer, "train", lambda self: None)



@pytest.fixture
def datasets_dir(tmp_path: Path, monkeypatch) -> Path:
    """The engine's datasets directory inside ``tmp_path`` (so ``path: ../datasets/x`` lands in tmp_path/datasets)."""
    import ultralytics.data.utils as data_utils

    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(data_utils, "DATASETS_DIR", repo)
    monkeypatch.setattr(data_utils, "check_font", lambda *a, **k: None)
    monkeypatch.chdir(repo)
    return tmp_path / "datasets"


def zip_tree(src: Path, archive: Path, top: str | None = None) -> Path:
    """Zip the files under ``src`` (inside a top-level folder ``top`` when given)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                rel = f.relative_to(src).as_posix()
                zf.write(f, f"{top}/{rel}" if top else rel)
    return archive


def write_jpg(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))


# --------------------------------------------------------------------------------------------------
# 1. A data YAML's download runs no code unless the user allows it
# --------------------------------------------------------------------------------------------------
ENTRIES = {
    "train.py": lambda y, w, t: (train.main, ["--data", str(y), "--imgsz", "64", "--epochs", "1", "--batch-size", "2",
                                              "--workers", "0", "--project", str(t / "train"), "--noplots"]),
    "val.py": lambda y, w, t: (val.main, ["--data", str(y), "--weights", str(w), "--imgsz", "64", "--batch-size", "2",
                                          "--workers", "0", "--project", str(t / "val"), "--noplots"]),
    "export.py --int8": lambda y, w, t: (export.main, ["--weights", str(w), "--include", "onnx", "--int8", "--data",
                                                       str(y), "--imgsz", "64", "--calib-images", "2"]),
}


@pytest.mark.parametrize("kind", ["python", "bash"])
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_data_script_is_refused(entry, kind, weights, tmp_path, capsys, monkeypatch):
    evil, marker = evil_yaml(tmp_path, kind)
    main, argv = ENTRIES[entry](evil, weights, tmp_path)
    err = one_error(main, argv, capsys)
    assert not marker.exists()
    assert str(evil) in err and "--allow-data-scripts" in err, err
    assert ("bash command" if kind == "bash" else "Python code") in err
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").iterdir())


@pytest.mark.parametrize("entry", ["train.py", "val.py"])
def test_data_script_runs_with_the_flag(entry, weights, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    evil, marker = evil_yaml(tmp_path, "python")
    main, argv = ENTRIES[entry](evil, weights, tmp_path)
    assert main([*argv, "--allow-data-scripts"]) == 0
    assert marker.read_text() == "ran"


def test_allowed_bash_script_runs(tmp_path):
    evil, marker = evil_yaml(tmp_path, "bash")
    prepare_data(evil, allow_scripts=True)
    assert marker.exists() and (tmp_path / "datasets" / "evil" / "images" / "val").is_dir()


def test_engine_never_runs_a_data_script(tmp_path):
    """Our wrapper sits wherever the engine calls check_det_dataset: a trainer built without train.py, the validator,
    the exporter, and the function in its home module."""
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.exporter as exporter
    import ultralytics.engine.trainer as trainer
    import ultralytics.engine.validator as validator

    for module in (trainer, validator, exporter):
        assert module.check_det_dataset is data_utils.check_det_dataset
    evil, marker = evil_yaml(tmp_path, "python")
    with pytest.raises(DataScriptError, match="--allow-data-scripts"):
        data_utils.check_det_dataset(str(evil))
    with pytest.raises(RuntimeError, match="allow-data-scripts"):
        YOLOv5Trainer(overrides={"data": str(evil), "model": str(ROOT / "models" / "yolov5n.yaml"), "imgsz": 64,
                                 "save_dir": str(tmp_path / "run"), "device": "cpu"})
    assert not marker.exists()


def test_script_is_not_needed_when_the_data_is_there(shapes_root, tmp_path):
    """A script never runs when the val images exist, so a YAML of the original YOLOv5 with its data in place works."""
    marker = tmp_path / "marker"
    f = data_yaml(tmp_path / "d.yaml", shapes_root, download=f"open({str(marker)!r}, 'w')")
    assert prepare_data(f) == str(f)
    import ultralytics.data.utils as data_utils

    assert data_utils.check_det_dataset(str(f))["nc"] == len(NAMES)
    assert not marker.exists()


@pytest.mark.parametrize(("download", "message"), [
    ({"prepare": "os.system"}, "names no preparer of this project; known: coco, VisDrone, shapes"),
    ({"prepare": "shapes", "command": "rm -rf"}, "preparer 'shapes' takes no option command"),
    ({"function": "utils.dataprep.download"}, "needs 'prepare:'"),
    (["https://example.com/a.zip", "import os"], "item 2 ('import os') is not a URL"),
    (42, "must be a URL, a list of URLs or {prepare: <name>}, not int"),
])
def test_malformed_download_step_names_file_and_key(download, message, shapes_root, tmp_path):
    f = data_yaml(tmp_path / "d.yaml", shapes_root, download=download)
    with pytest.raises(DataYAMLError) as e:
        prepare_data(f)
    assert str(f) in str(e.value) and message in str(e.value)


# --------------------------------------------------------------------------------------------------
# URLs and this project's preparers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["url", "list", "file"])
def test_url_download_fetches_and_unpacks(form, shapes_root, http_dir, datasets_dir, tmp_path):
    import ultralytics.data.utils as data_utils

    www, base = http_dir
    zip_tree(shapes_root, www / "shapes.zip", top="shapes")
    zip_tree(shapes_root / "labels", www / "extra.zip", top="extra")
    local = zip_tree(shapes_root, tmp_path / "local" / "shapes.zip", top="shapes")
    download = {"url": f"{base}/shapes.zip", "list": [f"{base}/shapes.zip", f"{base}/extra.zip"],
                "file": local.as_uri()}[form]
    f = data_yaml(tmp_path / "d.yaml", Path("../datasets/shapes"), download=download)
    data = data_utils.check_det_dataset(str(f))  # the engine's check, through our wrapper
    root = datasets_dir / "shapes"
    assert data["val"] == str(root / "images" / "val") and len(list((root / "images" / "val").glob("*.png"))) == 2
    assert not (datasets_dir / "shapes.zip").exists()  # a downloaded archive is removed once unpacked
    assert local.is_file()  # a local one never
    if form == "list":
        assert (datasets_dir / "extra" / "train").is_dir()


def test_url_download_failure_is_one_line(http_dir, datasets_dir, tmp_path, weights, capsys):
    _, base = http_dir
    f = data_yaml(tmp_path / "d.yaml", Path("../datasets/none"), download=f"{base}/missing.zip")
    err = one_error(val.main, ["--data", str(f), "--weights", str(weights), "--project", str(tmp_path / "v")], capsys)
    assert str(f) in err and f"{base}/missing.zip" in err and "404" in err


def test_coco_yaml_prepares_from_the_original_archives(http_dir, datasets_dir, monkeypatch, tmp_path):
    """coco.yaml's 'coco' step: the labels zip (a 'coco/' folder with labels and image lists) and the image zips."""
    www, base = http_dir
    src = tmp_path / "src"
    names = {"train2017": ["000000000009"], "val2017": ["000000000139"], "test2017": ["000000000001"]}
    for split, stems in names.items():
        for s in stems:
            write_jpg(src / "images" / split / f"{s}.jpg")
            if split != "test2017":
                (src / "labels" / split).mkdir(parents=True, exist_ok=True)
                (src / "labels" / split / f"{s}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        (src / "lists" / f"{split}.txt").parent.mkdir(parents=True, exist_ok=True)
        (src / "lists" / f"{split}.txt").write_text("".join(f"./images/{split}/{s}.jpg\n" for s in stems))
    labels = tmp_path / "lab"
    shutil.copytree(src / "labels", labels / "labels")
    for split in ("train2017", "val2017"):
        shutil.copy(src / "lists" / f"{split}.txt", labels / f"{split}.txt")
    shutil.copy(src / "lists" / "test2017.txt", labels / "test-dev2017.txt")
    zip_tree(labels, www / "coco2017labels.zip", top="coco")
    for split in names:
        zip_tree(src / "images" / split, www / f"{split}.zip", top=split)
    monkeypatch.setattr(dataprep, "COCO_LABELS_URL", f"{base}/coco2017labels.zip")
    monkeypatch.setattr(dataprep, "COCO_IMAGES_URL", base)

    f = prepare_data(str(ROOT / "data" / "coco.yaml"), labels=("train", "val"))
    import ultralytics.data.utils as data_utils

    data = data_utils.check_det_dataset(f)
    root = datasets_dir / "coco"
    assert data["val"] == str(root / "val2017.txt") and data["nc"] == 80
    assert (root / "images" / "val2017" / "000000000139.jpg").is_file()
    assert (root / "labels" / "val2017" / "000000000139.txt").is_file()
    assert not list(datasets_dir.glob("*.zip")) and not list((root / "images").glob("*.zip"))


def test_visdrone_yaml_prepares_and_converts(http_dir, datasets_dir, monkeypatch, tmp_path):
    www, base = http_dir
    for split in dataprep.VISDRONE_SPLITS:
        tree = tmp_path / "src" / split
        write_jpg(tree / "images" / "0000001_00000_d_0000001.jpg", 100, 80)
        (tree / "annotations").mkdir(parents=True)
        (tree / "annotations" / "0000001_00000_d_0000001.txt").write_text("10,20,30,40,1,4,0,0\n0,0,5,5,0,0,0,0\n")
        zip_tree(tree, www / f"{split}.zip", top=split)
    monkeypatch.setattr(dataprep, "ASSETS_URL", base)

    import ultralytics.data.utils as data_utils

    data = data_utils.check_det_dataset(str(ROOT / "data" / "VisDrone.yaml"))
    label = datasets_dir / "VisDrone" / "VisDrone2019-DET-val" / "labels" / "0000001_00000_d_0000001.txt"
    assert label.read_text() == "3 0.250000 0.500000 0.300000 0.500000\n"
    assert data["names"][3] == "car"


def test_project_yamls_hold_no_code():
    for name in ("coco.yaml", "VisDrone.yaml", "shapes.yaml"):
        step = yaml.safe_load((ROOT / "data" / name).read_text())["download"]
        assert isinstance(step, dict) and step["prepare"] in dataprep.PREPARERS, name


# --------------------------------------------------------------------------------------------------
# 2. Labels
# --------------------------------------------------------------------------------------------------
def test_images_without_labels_fail_before_the_model_is_built(shapes_root, tmp_path, weights, capsys, monkeypatch):
    root = tmp_path / "nolabels"
    shutil.copytree(shapes_root / "images", root / "images")
    f = data_yaml(tmp_path / "d.yaml", root)
    built = []
    monkeypatch.setattr(utils.engine, "build_model", lambda *a, **k: built.append(1))
    err = one_error(train.main, ["--data", str(f), "--imgsz", "64", "--project", str(tmp_path / "t")], capsys)
    assert err == (f"ERROR: {f}: the train images in {root / 'images' / 'train'} have no labels folder: expected one "
                   f"YOLO .txt per image in {root / 'labels' / 'train'} (the YOLOv5 layout: images/ -> labels/)")
    assert not built
    err = one_error(val.main, ["--data", str(f), "--weights", str(weights), "--project", str(tmp_path / "v")], capsys)
    assert f"the val images in {root / 'images' / 'val'} have no labels folder" in err
    (root / "labels" / "train").mkdir(parents=True)
    err = one_error(train.main, ["--data", str(f), "--imgsz", "64", "--project", str(tmp_path / "t")], capsys)
    assert "have no label files: expected one YOLO .txt per image in" in err


def _dataset(tmp_path: Path, label_text: str) -> tuple[Path, Path]:
    """One 64x64 image with the given label file; returns (images folder, label file)."""
    images = tmp_path / "ds" / "images" / "train"
    write_jpg(images / "a.jpg", 64, 64)
    label = tmp_path / "ds" / "labels" / "train" / "a.txt"
    label.parent.mkdir(parents=True)
    label.write_text(label_text)
    return images, label


def _engine_dataset(images: Path):
    from ultralytics.data.dataset import YOLODataset

    return YOLODataset(img_path=str(images), imgsz=64, augment=False, data={"names": dict(enumerate(NAMES))})


BAD_LINES = (
    "0 0.5 0.5 0.2 0.2\n"  # 1 good
    "1 nan 0.5 0.2 0.2\n"  # 2 NaN
    "1 0.5 0.5 0.2\n"  # 3 four values
    "7 0.5 0.5 0.2 0.2\n"  # 4 class out of range
    "2 1.5 0.5 0.2 0.2\n"  # 5 not normalised
    "\n"  # 6 blank
    "2 0.5 0.5 -0.2 0.2\n"  # 7 negative width
    "x 0.5 0.5 0.2 0.2\n"  # 8 class not a number
    "1.5 0.5 0.5 0.2 0.2\n"  # 9 class not an integer
    "3 0.25 0.25 0.1 inf\n"  # 10 infinite
    "3 0.25 0.25 0.1 0.1\n"  # 11 good
)


def test_bad_label_lines_name_file_and_line_and_keep_the_good_ones(tmp_path, log_records):
    images, label = _dataset(tmp_path, BAD_LINES)
    ds = _engine_dataset(images)
    assert len(ds.labels) == 1
    np.testing.assert_allclose(ds.labels[0]["cls"].ravel(), [0, 3])
    np.testing.assert_allclose(ds.labels[0]["bboxes"], [[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.1, 0.1]])
    text = "\n".join(m for _, m in log_records)
    expected = {2: "'nan' is not a number; line ignored",
                3: "4 values; a label line is 'class x_center y_center width height' (5 values) or a polygon",
                4: "class 7 but the data YAML has 4 classes (0-3); line ignored",
                5: "coordinate 1.5 is not normalised (0-1, relative to the image size); line ignored",
                7: "negative width or height -0.2; line ignored"}
    for line, problem in expected.items():
        assert f"{label}:{line}: {problem}" in text, (line, text)
    assert f"{label}: 3 more bad lines ignored" in text  # lines 8-10, past the first five
    assert "out of bounds" not in text and "ignoring corrupt image/label" not in text

    again = _engine_dataset(images)  # the engine's label cache, written and read back in its own format
    assert again.labels[0]["cls"].ravel().tolist() == [0, 3]


@pytest.mark.parametrize(("line", "problem"), [
    ("x 0.5 0.5 0.2 0.2", "'x' is not a number"),
    ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not a class index (0, 1, 2...)"),
    ("-1 0.5 0.5 0.2 0.2", "class -1 is not a class index"),
    ("3 0.25 0.25 0.1 inf", "'inf' is not a finite number"),
    ("0 -0.2 0.5 0.2 0.2", "negative coordinate -0.2"),
    ("0 0.1 0.1 0.5 0.1 0.5", "6 values"),
    ("0 0.1 0.1 0.5 0.1 1.5 0.5", "coordinate 1.5 is not normalised"),
])
def test_label_line_problems(line, problem):
    from utils.labels import parse_label_line

    values, found = parse_label_line(line.split(), num_cls=4)
    assert values is None and found.startswith(problem), found
    assert parse_label_line("7 0.5 0.5 0.2 0.2".split(), num_cls=4, single_cls=True)[1] is None


def test_cache_of_the_engines_own_check_is_scanned_again(tmp_path, monkeypatch):
    """A labels.cache the engine's verifier wrote (the whole image dropped for one bad line) is not reused."""
    import ultralytics.data.dataset as dataset

    from utils import labels

    images, label = _dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n1 nan 0.5 0.2 0.2\n")
    write_jpg(images / "b.jpg", 64, 64)
    (label.parent / "b.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    with monkeypatch.context() as m:
        m.setattr(dataset, "verify_image_label", labels._ENGINE_VERIFY[0])
        m.setattr(labels, "CACHE_TAG", "engine")
        assert len(_engine_dataset(images).labels) == 1  # the engine's check: a.jpg dropped, cache written
    assert (label.parent.parent / "train.cache").is_file()
    ds = _engine_dataset(images)
    assert [lb["cls"].ravel().tolist() for lb in ds.labels] == [[0.0], [1.0]]


def test_label_file_with_no_usable_line_drops_its_image(tmp_path, log_records):
    images, label = _dataset(tmp_path, "0 nan nan nan nan\n")
    write_jpg(images / "b.jpg", 64, 64)
    (label.parent / "b.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    ds = _engine_dataset(images)
    assert [Path(lb["im_file"]).name for lb in ds.labels] == ["b.jpg"]
    text = "\n".join(m for _, m in log_records)
    assert f"{label}:1: 'nan' is not a number; line ignored" in text
    assert f"{label}: no usable label line; image {images / 'a.jpg'} ignored" in text


def test_polygons_duplicates_and_corrupt_images(tmp_path, log_records):
    from utils.labels import verify_image_label

    images, label = _dataset(tmp_path, "0 0.1 0.1 0.5 0.1 0.5 0.5\n0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    im, lb, shape, segments, _, nm, nf, ne, nc, msg = verify_image_label(
        (str(images / "a.jpg"), str(label), "", False, 4, 0, 0, False))
    np.testing.assert_allclose(lb, [[0, 0.3, 0.3, 0.4, 0.4]], atol=1e-6)  # the polygon's box, duplicate removed
    assert len(segments) == 1 and (nm, nf, ne, nc) == (0, 1, 0, 0) and shape == (64, 64)
    assert msg == f"{label}: 1 duplicate labels removed"
    (images / "a.jpg").write_text("hello\n")
    out = verify_image_label((str(images / "a.jpg"), str(label), "", False, 4, 0, 0, False))
    assert out[0] is None and out[8] == 1
    assert out[9].startswith(f"{images / 'a.jpg'}: ignoring corrupt image: not an image (a text file")
