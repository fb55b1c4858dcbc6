"""Classification datasets from their official archive formats (tiny fixtures written here in those formats), the
restricted unpickler, first-use preparation of named datasets, and the generated shapes-cls data."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils import clsdata
from utils.clsdata import (
    ClsDataError,
    cifar_to_folders,
    imagenet_to_folders,
    load_data_pickle,
    make_shapes_cls_dataset,
    resolve_cls_data,
)


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _batch(n: int, labels: list[int], label_key: str, offset: int) -> bytes:
    """A CIFAR batch as the official files hold it: uint8 rows of R, G, B planes; bytes keys (as Python 3 reads the
    Python 2 files with encoding='bytes'), pickled with protocol 2."""
    data = np.zeros((n, 3072), np.uint8)
    for i in range(n):
        data[i, :1024] = offset + i  # red plane = image number
        data[i, 1024 + 1] = 200  # green at row 0, column 1
    return pickle.dumps({b"batch_label": b"x", label_key.encode(): labels, b"data": data,
                         b"filenames": [f"img_{i}.png".encode() for i in range(n)]}, protocol=2)


def make_cifar100(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        meta = {"fine_label_names": ["apple", "bear", "cloud"], "coarse_label_names": ["fruit", "animal", "sky"]}
        _add(tf, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))  # str keys: also read
        _add(tf, "cifar-100-python/train", _batch(6, [0, 1, 2, 0, 1, 2], "fine_labels", 0))
        _add(tf, "cifar-100-python/test", _batch(3, [2, 2, 1], "fine_labels", 100))
        _add(tf, "cifar-100-python/file.txt~", b"editor backup")
    return path


def make_cifar10(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [b"cat", b"dog"]}, protocol=2))
        for i in range(1, 6):
            _add(tf, f"cifar-10-batches-py/data_batch_{i}", _batch(2, [0, 1], "labels", 10 * i))
        _add(tf, "cifar-10-batches-py/test_batch", _batch(2, [1, 1], "labels", 90))
    return path


def test_cifar100_archive_to_folders(tmp_path):
    out = cifar_to_folders(make_cifar100(tmp_path / "cifar-100-python.tar.gz"), tmp_path / "cifar100")
    counts = {f"{s}/{c}": len(list((out / s / c).glob("*.png"))) for s in ("train", "test") for c in
              ("apple", "bear", "cloud")}
    assert counts == {"train/apple": 2, "train/bear": 2, "train/cloud": 2, "test/apple": 0, "test/bear": 1,
                      "test/cloud": 2}
    im = cv2.imread(str(out / "train" / "bear" / "00004.png"))  # 5th train image, label 1
    assert im.shape == (32, 32, 3) and im[5, 5, 2] == 4 and im[0, 1, 1] == 200 and im[1, 0, 1] == 0  # BGR
    assert json.loads((out / "dataset.json").read_text())["images"] == 9
    assert not (tmp_path / "cifar100.partial").exists()


def test_cifar10_archive_to_folders(tmp_path):
    out = cifar_to_folders(make_cifar10(tmp_path / "c10.tar.gz"), tmp_path / "c10", kind="cifar10")
    assert sorted(p.name for p in (out / "train").iterdir()) == ["cat", "dog"]
    assert len(list((out / "train").rglob("*.png"))) == 10 and len(list((out / "test" / "dog").glob("*.png"))) == 2


def test_code_in_a_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    with pytest.raises(ClsDataError, match=r"batch.pkl: not a CIFAR batch file \(refusing to load .*system"):
        load_data_pickle(pickle.dumps({"data": Evil()}), "batch.pkl")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        _add(tf, "cifar-100-python/meta", pickle.dumps({"fine_label_names": ["a"]}, protocol=2))
        _add(tf, "cifar-100-python/train", pickle.dumps({"data": Evil()}, protocol=2))
        _add(tf, "cifar-100-python/test", pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(ClsDataError, match="evil.tar.gz:cifar-100-python/train"):
        cifar_to_folders(archive, tmp_path / "out")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def test_bad_cifar_archives_name_the_member(tmp_path):
    archive = tmp_path / "wrong.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        _add(tf, "cifar-100-python/meta", pickle.dumps({"fine_label_names": ["a", "b"]}, protocol=2))
        _add(tf, "cifar-100-python/train", _batch(2, [0, 5], "fine_labels", 0))
    with pytest.raises(ClsDataError, match=r"cifar-100-python/train: 'fine_labels' must hold 2 labels in 0..1"):
        cifar_to_folders(archive, tmp_path / "out")
    with pytest.raises(ClsDataError, match=r"no 'cifar-10-batches-py/batches.meta' inside"):
        cifar_to_folders(archive, tmp_path / "out", kind="cifar10")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ClsDataError, match="junk.tar.gz: cannot open as a tar archive"):
        cifar_to_folders(tmp_path / "junk.tar.gz", tmp_path / "out")


def test_named_dataset_is_fetched_and_converted_once(tmp_path, monkeypatch):
    src = make_cifar100(tmp_path / "cifar-100-python.tar.gz")
    monkeypatch.setitem(clsdata.CIFAR_URLS, "cifar100", src.as_uri())  # the real URL, served from a local file
    root = resolve_cls_data("cifar100", datasets_dir=tmp_path / "datasets")
    assert root == (tmp_path / "datasets" / "cifar100").resolve() and (root / "test" / "cloud").is_dir()
    stamp = (root / "dataset.json").stat().st_mtime_ns
    assert resolve_cls_data("CIFAR100", datasets_dir=tmp_path / "datasets") == root
    assert (root / "dataset.json").stat().st_mtime_ns == stamp  # not converted again
    assert resolve_cls_data(root) == root  # a folder is used as it is


def test_resolve_errors_say_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a known dataset name .*cifar10, cifar100, imagenet, shapes-cls"):
        resolve_cls_data("mnist2", datasets_dir=tmp_path)
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match="flat: the folder has no train/ subfolder"):
        resolve_cls_data(tmp_path / "flat")
    (tmp_path / "shapes-cls").mkdir()
    (tmp_path / "shapes-cls" / "mine.txt").write_text("user data")
    with pytest.raises(ClsDataError, match="not written by this tool"):
        resolve_cls_data("shapes-cls", datasets_dir=tmp_path)
    assert (tmp_path / "shapes-cls" / "mine.txt").read_text() == "user data"


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((8, 8, 3), value, np.uint8))[1].tobytes()


def make_imagenet(folder: Path) -> dict[str, str]:
    """The three official ILSVRC2012 archives, with 2 classes; returns {val image name: wnid}."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    wnids = ["n01440764", "n01443537"]
    synsets = np.zeros((3, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    for i, (sid, w, words, kids) in enumerate([(1, wnids[0], "tench", 0), (2, wnids[1], "goldfish", 0),
                                               (1001, "n00000001", "fish", 2)]):
        synsets[i, 0] = (sid, w, words, kids)
    mat = io.BytesIO()
    savemat(mat, {"synsets": synsets})
    with tarfile.open(folder / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tf:
        _add(tf, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        _add(tf, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", b"2\n1\n2\n")
    with tarfile.open(folder / "ILSVRC2012_img_train.tar", "w") as outer:
        for k, w in enumerate(wnids):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tf:
                for j in range(2):
                    _add(tf, f"{w}_{j}.JPEG", _jpeg(10 * k + j))
            _add(outer, f"{w}.tar", inner.getvalue())
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
    with tarfile.open(folder / "ILSVRC2012_img_val.tar", "w") as tf:
        for n in names:
            _add(tf, n, _jpeg(99))
    return dict(zip(names, [wnids[1], wnids[0], wnids[1]]))


def test_imagenet_archives_to_train_val_folders(tmp_path):
    truth = make_imagenet(tmp_path / "archives")
    out = imagenet_to_folders(tmp_path / "archives", tmp_path / "imagenet")
    assert sorted(p.name for p in (out / "train").iterdir()) == ["n01440764", "n01443537"]
    assert len(list((out / "train" / "n01443537").glob("*.JPEG"))) == 2
    for name, wnid in truth.items():
        assert (out / "val" / wnid / name).is_file()
    assert len(list((out / "val").rglob("*.JPEG"))) == 3


def test_imagenet_prepared_on_first_use_from_archives_in_its_folder(tmp_path):
    make_imagenet(tmp_path / "datasets" / "imagenet")
    root = resolve_cls_data("imagenet", datasets_dir=tmp_path / "datasets")
    assert (root / "val" / "n01440764" / "ILSVRC2012_val_00000002.JPEG").is_file()
    assert (root / "ILSVRC2012_img_val.tar").is_file()  # the user's archives are kept
    with pytest.raises(ClsDataError, match="ILSVRC2012_img_train.tar, .* not found .*image-net.org"):
        resolve_cls_data("imagenet", datasets_dir=tmp_path / "elsewhere")


def test_shapes_cls_is_reproducible_and_balanced(tmp_path):
    a = make_shapes_cls_dataset(tmp_path / "a", n_train=8, n_val=4, imgsz=32, seed=3)
    b = make_shapes_cls_dataset(tmp_path / "b", n_train=8, n_val=4, imgsz=32, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 12 and [len(list((a / "train" / c).iterdir())) for c in ("circle", "star")] == [2, 2]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    stamp = (a / "dataset.json").stat().st_mtime_ns
    make_shapes_cls_dataset(tmp_path / "a", n_train=8, n_val=4, imgsz=32, seed=3)  # complete: left alone
    assert (a / "dataset.json").stat().st_mtime_ns == stamp
    c = make_shapes_cls_dataset(tmp_path / "a", n_train=4, n_val=4, imgsz=32, seed=3)  # other spec: rebuilt
    assert len(list((c / "train").rglob("*.png"))) == 4
