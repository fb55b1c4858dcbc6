"""Classification datasets as image folders (``<root>/{train,val|test}/<class>/<image>``) from their official archives.

* ``resolve_cls_data("cifar100")`` returns the folder of a named dataset, preparing it on first use under
  ``../datasets/<name>`` (next to this repository, as YOLOv5 does): CIFAR-10/100 are downloaded as the official
  ``cifar-*-python.tar.gz`` and converted; ImageNet is converted from the official ILSVRC2012 archives, which the user
  places in ``../datasets/imagenet/`` (they cannot be downloaded without an account); ``shapes-cls`` is generated.
  A path to a folder with ``train/`` is used as it is.
* ``cifar_to_folders`` reads the pickled CIFAR batches with ``ArrayUnpickler``, which builds only plain containers and
  numpy arrays and refuses anything else, so a tampered archive cannot run code.
* ``imagenet_to_folders`` unpacks the per-class train tars and sorts the flat validation images into class folders
  with the devkit's ground truth (``meta.mat`` + ``ILSVRC2012_validation_ground_truth.txt``).
* ``make_shapes_cls_dataset`` renders a small 4-class dataset (one circle, rectangle, triangle or star per image),
  reproducible from a seed: ``python classify/train.py`` with no arguments trains on it in a few CPU minutes.

Every dataset is written to ``<root>.partial`` and renamed when complete, so an interrupted run never looks finished.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import pickle
import re
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from ultralytics.utils import LOGGER

from utils.dataprep import DownloadError, download

ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = ROOT.parent / "datasets"  # named datasets live next to the repository, as in YOLOv5
MANIFEST = "dataset.json"


class ClsDataError(ValueError):
    """A classification dataset or archive that cannot be used; the message names the file and what to do."""


# --------------------------------------------------------------------------------------------------
# Resolving --data
# --------------------------------------------------------------------------------------------------
def resolve_cls_data(data: str | Path, datasets_dir: str | Path | None = None) -> Path:
    """The image-folder root for ``--data``: an existing folder with ``train/``, or a named dataset prepared on first
    use in ``datasets_dir`` (default ``../datasets``). Raises ``FileNotFoundError`` naming what was looked for."""
    p = Path(data)
    if p.is_dir():
        if not (p / "train").is_dir():
            raise FileNotFoundError(f"--data {data}: the folder has no train/ subfolder; a classification dataset is "
                                    f"<root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg (or test/)")
        return p.resolve()
    name = str(data).lower()
    if name not in CLS_DATASETS:
        raise FileNotFoundError(f"--data {data}: no such folder, and not a known dataset name "
                                f"({', '.join(CLS_DATASETS)}); pass a folder with train/ and val/ class folders")
    root = Path(datasets_dir or DATASETS_DIR) / name
    if not is_complete(root):
        CLS_DATASETS[name](root)
    return root.resolve()


def is_complete(root: Path) -> bool:
    """Whether ``root`` is a dataset this module finished writing (its manifest exists)."""
    return (root / MANIFEST).is_file() and (root / "train").is_dir()


def _build(root: Path, write: Callable[[Path], dict], keep: tuple[str, ...] = ()) -> Path:
    """Run ``write(work)`` on ``<root>.partial`` and rename it to ``root`` with a manifest of what ``write`` returned.

    Files of ``root`` named in ``keep`` (source archives placed there) move into the new folder. Anything else in a
    ``root`` without the manifest is user data: the call fails before writing rather than delete it.
    """
    if root.exists() and not (root / MANIFEST).is_file() and any(p.name not in keep for p in root.iterdir()):
        raise ClsDataError(f"{root} exists but was not written by this tool; remove it or pass --data {root} if it "
                              f"already is a train/val image-folder dataset")
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.time()
    info = write(work)
    (work / MANIFEST).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if root.exists():
        for name in keep:
            if (root / name).exists():
                os.replace(root / name, work / name)
        shutil.rmtree(root)
    os.replace(work, root)
    LOGGER.info(f"{root.name}: {info.get('images', '?')} images in {info.get('classes', '?')} classes written to "
                f"{root} in {time.time() - t0:.1f}s")
    return root


def _class_folder(name: Any, where: str) -> str:
    """A class name (``str``, or ``bytes`` as pickles from Python 2 hold them) usable as a folder name."""
    name = name.decode("latin1") if isinstance(name, bytes) else str(name)
    if not name or name in (".", "..") or re.search(r"[/\\\x00]", name):
        raise ClsDataError(f"{where}: class name {name!r} cannot be a folder name")
    return name


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(png.tobytes())


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (cifar-*-python.tar.gz)
# --------------------------------------------------------------------------------------------------
class ArrayUnpickler(pickle.Unpickler):
    """Unpickler for data files: only plain containers, numbers, strings and numpy arrays can be built.

    ``find_class`` allows exactly what a pickled numpy array needs (its reconstructor, ``ndarray``, ``dtype``, and
    ``_codecs.encode`` for the byte strings of protocol-2 pickles written by Python 3); any other class or function
    raises ``UnpicklingError``, so nothing in the file can run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _multiarray()._reconstruct
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain containers and numpy arrays "
                                     f"are allowed in a data file")


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


def load_data_pickle(data: bytes, where: str) -> dict[str, Any]:
    """A pickled dict (the CIFAR batch format) read with ``ArrayUnpickler``; byte-string keys become ``str``."""
    try:
        obj = ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ClsDataError(f"{where}: not a CIFAR batch file ({e})") from None
    if not isinstance(obj, dict):
        raise ClsDataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


CIFAR = {  # archive folder, train batches, test batch, meta file, label key, names key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}
CIFAR_URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


def cifar_to_folders(archive: str | Path, out: str | Path, kind: str = "cifar100") -> Path:
    """Convert an official ``cifar-10-python.tar.gz``/``cifar-100-python.tar.gz`` into ``out/{train,test}/<class>/``
    PNG folders (CIFAR-100: the 100 fine labels). Returns ``out``."""
    archive, out = Path(archive), Path(out)
    folder, train_batches, test_batch, meta_name, label_key, names_key = CIFAR[kind]

    def write(work: Path) -> dict:
        with _open_tar(archive) as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}

            def read(name: str) -> dict[str, Any]:
                key = f"{folder}/{name}"
                if key not in members:
                    raise ClsDataError(f"{archive}: no '{key}' inside; expected the official {kind} archive "
                                       f"({CIFAR_URLS[kind]})")
                return load_data_pickle(tf.extractfile(members[key]).read(), f"{archive}:{key}")

            meta = read(meta_name)
            names = meta.get(names_key)
            if not isinstance(names, list) or not names:
                raise ClsDataError(f"{archive}:{folder}/{meta_name}: no '{names_key}' list of class names")
            names = [_class_folder(n, f"{archive}:{folder}/{meta_name}") for n in names]
            n = 0
            for split, batches in (("train", train_batches), ("test", [test_batch])):
                for c in names:
                    (work / split / c).mkdir(parents=True, exist_ok=True)
                for batch_name in batches:
                    n = _write_cifar_batch(read(batch_name), work / split, names, label_key, n,
                                           f"{archive}:{folder}/{batch_name}")
        return {"dataset": kind, "source": archive.name, "images": n, "classes": len(names)}

    LOGGER.info(f"Converting {archive} to image folders in {out} ...")
    return _build(out, write)


def _write_cifar_batch(batch: dict, split_dir: Path, names: list[str], label_key: str, start: int, where: str) -> int:
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ClsDataError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), found "
                           f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or (labels.size and not 0 <= labels.min() <= labels.max() < len(names)):
        raise ClsDataError(f"{where}: '{label_key}' must hold {len(data)} labels in 0..{len(names) - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R, G, B planes of 32x32
    for i, (im, c) in enumerate(zip(images, labels), start):
        _write_png(split_dir / names[c] / f"{i:05d}.png", im)
    return start + len(data)


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise ClsDataError(f"{path}: cannot open as a tar archive ({e})") from None


def _prepare_cifar(kind: str) -> Callable[[Path], Path]:
    def prepare(root: Path) -> Path:
        try:
            archive = download(CIFAR_URLS[kind], dir=root.parent, unzip=False)[0]
        except DownloadError as e:
            raise ClsDataError(f"{kind}: {e}; place {Path(CIFAR_URLS[kind]).name} in {root.parent} to convert it "
                               f"offline") from None
        return cifar_to_folders(archive, root, kind)

    return prepare


# --------------------------------------------------------------------------------------------------
# ImageNet-1k (ILSVRC2012 archives)
# --------------------------------------------------------------------------------------------------
IMAGENET_FILES = {"train": "ILSVRC2012_img_train.tar", "val": "ILSVRC2012_img_val.tar",
                  "devkit": "ILSVRC2012_devkit_t12.tar.gz"}
_WNID = re.compile(r"n\d{8}")
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


def parse_imagenet_devkit(devkit: str | Path) -> tuple[dict[int, str], list[int]]:
    """``({ILSVRC2012_ID: WNID} for the 1000 classes, [class ID of validation image 1, 2, ...])`` from the devkit."""
    from scipy.io import loadmat

    devkit = Path(devkit)
    with _open_tar(devkit) as tf:
        files = {Path(m.name).name: m for m in tf.getmembers() if m.isfile()}
        for need in ("meta.mat", "ILSVRC2012_validation_ground_truth.txt"):
            if need not in files:
                raise ClsDataError(f"{devkit}: no data/{need} inside; expected the official {IMAGENET_FILES['devkit']}")
        try:
            synsets = loadmat(io.BytesIO(tf.extractfile(files["meta.mat"]).read()), squeeze_me=True)["synsets"]
            ids = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ClsDataError(f"{devkit}: data/meta.mat has no readable 'synsets' table ({e})") from None
        text = tf.extractfile(files["ILSVRC2012_validation_ground_truth.txt"]).read().decode()
    try:
        truth = [int(x) for x in text.split()]
    except ValueError:
        raise ClsDataError(f"{devkit}: the validation ground truth must be one class ID per line") from None
    if bad := sorted({t for t in truth if t not in ids})[:5]:
        raise ClsDataError(f"{devkit}: validation ground truth names class IDs {bad} that meta.mat does not list")
    if bad := [w for w in ids.values() if not _WNID.fullmatch(w)][:5]:
        raise ClsDataError(f"{devkit}: meta.mat lists WNIDs {bad}, not of the form n01234567")
    return ids, truth


def _tar_files(tf: tarfile.TarFile) -> Iterator[tuple[str, bytes]]:
    """(base name, bytes) of each regular file of a tar, read in archive order without extracting anything."""
    for m in tf:
        if m.isfile():
            yield Path(m.name).name, tf.extractfile(m).read()


def imagenet_to_folders(src: str | Path, out: str | Path) -> Path:
    """Convert the official ILSVRC2012 archives in ``src`` into ``out/train/<wnid>/`` and ``out/val/<wnid>/``.

    Train: ``ILSVRC2012_img_train.tar`` holds one ``<wnid>.tar`` per class. Val: ``ILSVRC2012_img_val.tar`` holds
    50,000 flat ``ILSVRC2012_val_<8 digits>.JPEG`` files whose classes come from the devkit. Only base names are
    written, into folders named by validated WNIDs, so no archive member can land elsewhere.
    """
    src, out = Path(src), Path(out)
    missing = [f for f in IMAGENET_FILES.values() if not (src / f).is_file()]
    if missing:
        raise ClsDataError(f"ImageNet: {', '.join(missing)} not found in {src}; download them (after registering) from "
                           f"https://image-net.org/download-images and place them in {out}")
    ids, truth = parse_imagenet_devkit(src / IMAGENET_FILES["devkit"])

    def write(work: Path) -> dict:
        n = 0
        with _open_tar(src / IMAGENET_FILES["train"]) as outer:
            for m in outer:
                wnid = Path(m.name).name.removesuffix(".tar")
                if not (m.isfile() and m.name.endswith(".tar") and _WNID.fullmatch(wnid)):
                    continue
                (work / "train" / wnid).mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                    for name, data in _tar_files(inner):
                        (work / "train" / wnid / name).write_bytes(data)
                        n += 1
        with _open_tar(src / IMAGENET_FILES["val"]) as tf:
            for name, data in _tar_files(tf):
                match = _VAL_NAME.fullmatch(name)
                if not match or not 1 <= int(match[1]) <= len(truth):
                    raise ClsDataError(f"{src / IMAGENET_FILES['val']}: unexpected member {name!r} (the devkit lists "
                                       f"{len(truth)} validation images)")
                d = work / "val" / ids[truth[int(match[1]) - 1]]
                d.mkdir(parents=True, exist_ok=True)
                (d / name).write_bytes(data)
                n += 1
        classes = len(list((work / "train").iterdir())) if (work / "train").is_dir() else 0
        return {"dataset": "imagenet", "images": n, "classes": classes}

    LOGGER.info(f"Converting ImageNet archives in {src} to image folders in {out} ...")
    return _build(out, write, keep=tuple(IMAGENET_FILES.values()) if src.resolve() == out.resolve() else ())


def _prepare_imagenet(root: Path) -> Path:
    """Convert the archives placed in ``root`` (they stay there) or in its parent folder into ``root``."""
    return imagenet_to_folders(root if (root / IMAGENET_FILES["train"]).is_file() else root.parent, root)


# --------------------------------------------------------------------------------------------------
# Bundled synthetic data: shapes-cls
# --------------------------------------------------------------------------------------------------
SHAPES_CLS_VERSION = 1  # bump when the rendering changes


def render_shape_image(rng: np.random.Generator, cls: int, imgsz: int = 64) -> np.ndarray:
    """One BGR image with a single shape of class ``cls`` (``SHAPES_NAMES`` order) on a textured background."""
    from utils.dataprep import _background, _contrasting_colour, _draw, _extent, _shape_geometry

    s = imgsz
    img = _background(rng, s)
    img = img.mean((0, 1)) + rng.uniform(0.3, 0.6) * (img - img.mean((0, 1)))  # calmer than detection's backgrounds
    geom = _shape_geometry(rng, cls, rng.uniform(0.5, 0.9) * s)
    x1, y1, x2, y2 = _extent(cls, geom)
    ox, oy = int(rng.integers(-x1, max(s - x2, -x1) + 1)), int(rng.integers(-y1, max(s - y2, -y1) + 1))
    region = img[max(y1 + oy, 0): y2 + oy, max(x1 + ox, 0): x2 + ox]
    _draw(img, cls, geom, (ox, oy), _contrasting_colour(rng, region if region.size else img))
    img = img + rng.normal(0.0, rng.uniform(1, 6), img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_shapes_cls_dataset(root: str | Path, n_train: int = 800, n_val: int = 200, imgsz: int = 64,
                            seed: int = 0, classes: int | None = None) -> Path:
    """Write the ``shapes-cls`` dataset: ``root/{train,val}/{circle,rectangle,triangle,star}/NNNNNN.png``, classes
    balanced (image ``i`` has class ``i % classes``), image ``i`` of a split depending only on
    ``(seed, split, i, classes)``; ``classes`` (2-4, default all 4) keeps the first ones of that list."""
    from utils.dataprep import SHAPES_NAMES

    names = SHAPES_NAMES[:classes or len(SHAPES_NAMES)]
    if not 2 <= len(names) == (classes or len(SHAPES_NAMES)):
        raise ValueError(f"classes={classes}: shapes-cls has 2 to {len(SHAPES_NAMES)} classes "
                         f"({', '.join(SHAPES_NAMES)})")
    root = Path(root)
    spec = {"dataset": "shapes-cls", "version": SHAPES_CLS_VERSION, "n_train": n_train, "n_val": n_val,
            "imgsz": imgsz, "seed": seed, "images": n_train + n_val, "classes": len(names)}
    with_manifest = root / MANIFEST
    if with_manifest.is_file() and json.loads(with_manifest.read_text(encoding="utf-8")) == spec:
        return root

    def write(work: Path) -> dict:
        for split, n in (("train", n_train), ("val", n_val)):
            for name in names:
                (work / split / name).mkdir(parents=True)
            for i in range(n):
                cls = i % len(names)
                rng = np.random.default_rng([seed, ("train", "val").index(split), i, len(names)])
                ok, png = cv2.imencode(".png", render_shape_image(rng, cls, imgsz))
                (work / split / names[cls] / f"{i:06d}.png").write_bytes(png.tobytes())
        return spec

    return _build(root, write)


CLS_DATASETS: dict[str, Callable[[Path], Path]] = {
    "cifar10": _prepare_cifar("cifar10"),
    "cifar100": _prepare_cifar("cifar100"),
    "imagenet": _prepare_imagenet,
    "shapes-cls": make_shapes_cls_dataset,
}
