"""Dataset preparation: fetching archives, converting VisDrone labels, and the bundled "shapes" dataset.

* ``download`` fetches archives from http(s)/ftp URLs, ``file://`` URLs or plain local paths and unpacks
  zip and tar archives. Remote files are written to ``<name>.part`` and renamed when complete, so an
  interrupted download never looks finished. Local archives are unpacked where they lie (never copied,
  never deleted), which keeps the local and test case fully offline.
* ``visdrone2yolo`` turns VisDrone2019-DET ``annotations/*.txt`` into YOLO ``labels/*.txt``.
* ``make_shapes_dataset`` writes a small synthetic detection dataset (the project's default data, used
  by ``data/shapes.yaml``) that is reproducible bit for bit from a seed.

* ``PREPARERS``: the steps a data YAML may name (``download: {prepare: coco}``) to fetch and convert its dataset
  when its ``val`` images are missing (``utils/datayaml.py`` runs them); a data YAML holds no code of its own.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, NamedTuple
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, url2pathname, urlopen

import cv2
import numpy as np
from ultralytics.utils import LOGGER  # the engine's logger, so messages appear with the training output

from utils.images import IMAGE_SUFFIXES

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
REMOTE_SCHEMES = ("http", "https", "ftp")


class DownloadError(RuntimeError):
    """A URL or local archive could not be fetched or unpacked; the message names it."""


# --------------------------------------------------------------------------------------------------
# Small file helpers
# --------------------------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    _atomic_write_bytes(path, text.encode("utf-8"))


def is_archive(path: str | Path) -> bool:
    """True if the file name ends in one of the archive suffixes ``download`` unpacks."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


# --------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------
def _local_source(url: str) -> Path | None:
    """Return the local path a ``file://`` URL or plain path names, or None for a remote URL."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"'{url}': file:// URLs on another host are not supported")
        return Path(url2pathname(unquote(parsed.path)))
    if scheme in REMOTE_SCHEMES:
        return None
    if len(scheme) > 1:  # a one-letter "scheme" is a Windows drive letter
        raise DownloadError(f"'{url}': unsupported URL scheme '{scheme}' (use http(s), ftp, file:// or a path)")
    return Path(url)


def _url_filename(url: str) -> str:
    """File name a remote URL is saved under (last path component, query and fragment dropped)."""
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise DownloadError(f"'{url}': cannot tell a file name from this URL")
    return name


def _http_get(url: str, dest: Path, retries: int = 3, timeout: float = 60.0) -> None:
    """Stream ``url`` to ``dest`` via ``dest.part``; retry transient failures, raise DownloadError otherwise."""
    part = dest.with_name(dest.name + ".part")
    error: Exception | None = None
    retries = max(1, retries)
    for attempt in range(1, retries + 1):
        try:
            request = Request(url, headers={"User-Agent": "yolov5-attention"})
            with urlopen(request, timeout=timeout) as response, open(part, "wb") as fh:
                expected = int(response.headers.get("Content-Length") or 0)
                _copy_with_progress(response, fh, expected, dest.name)
            size = part.stat().st_size
            if expected and size != expected:
                raise OSError(f"incomplete transfer: {size} of {expected} bytes")
            os.replace(part, dest)
            return
        except HTTPError as e:
            error = e
            if 400 <= e.code < 500 and e.code not in (408, 429):  # a client error will not go away
                break
        except (URLError, OSError, TimeoutError) as e:
            error = e
        if attempt < retries:
            time.sleep(min(2**attempt, 10))
    part.unlink(missing_ok=True)
    raise DownloadError(f"could not download '{url}' ({attempt} attempt(s)): {error}")


def _copy_with_progress(src, dst, total: int, name: str, chunk: int = 1 << 20) -> None:
    """Copy a byte stream, showing a progress bar for large transfers."""
    bar = None
    if total > 8 << 20:
        from ultralytics.utils import TQDM  # scoped: only for big downloads

        bar = TQDM(total=total, desc=f"Downloading {name}", unit="B", unit_scale=True, unit_divisor=1024)
    try:
        while block := src.read(chunk):
            dst.write(block)
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a zip or tar archive into ``dest``, refusing members that would land outside it."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if not (root / name).resolve().is_relative_to(root):
                        raise DownloadError(f"'{archive}': member '{name}' would extract outside {root}")
                zf.extractall(root)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(root, filter="data")  # the 'data' filter rejects absolute/escaping/special members
        else:
            raise DownloadError(f"'{archive}' is not a valid zip or tar archive (corrupt or not an archive?)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DownloadError(f"could not unpack '{archive}': {e}") from e
    return dest


def _fetch_one(url: str | Path, dir: Path, unzip: bool, delete: bool, retries: int, timeout: float) -> Path:
    """Fetch (and maybe unpack) one URL or local path; see ``download``."""
    text = str(url)
    try:
        local = _local_source(text)
        if local is not None:
            if not local.is_file():
                raise DownloadError(f"'{text}': no such file '{local}'")
            if unzip and is_archive(local):
                LOGGER.info(f"Unpacking {local} to {dir} ...")
                extract(local, dir)
                return local
            target = dir / local.name
            if not target.exists() or not target.samefile(local):
                _copy_file(local, target)
            return target
        target = dir / _url_filename(text)
        if target.is_file():
            LOGGER.info(f"Found {target}, not downloading {text} again")
        else:
            LOGGER.info(f"Downloading {text} to {target} ...")
            _http_get(text, target, retries=retries, timeout=timeout)
        if unzip and is_archive(target):
            LOGGER.info(f"Unpacking {target} ...")
            extract(target, dir)
            if delete:
                target.unlink()
        return target
    except DownloadError as e:
        if text in str(e):
            raise
        raise DownloadError(f"'{text}': {e}") from e
    except Exception as e:
        raise DownloadError(f"'{text}': {type(e).__name__}: {e}") from e


def _copy_file(src: Path, dst: Path) -> None:
    """Copy a (large) file atomically via ``dst.part``."""
    part = dst.with_name(dst.name + ".part")
    try:
        shutil.copyfile(src, part)
        os.replace(part, dst)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def download(
    urls: str | Path | Iterable[str | Path],
    dir: str | Path = ".",
    unzip: bool = True,
    delete: bool = False,
    threads: int = 1,
    retries: int = 3,
    timeout: float = 60.0,
) -> list[Path]:
    """Fetch files and unpack archives into ``dir``.

    Args:
        urls: one or more http(s)/ftp URLs, ``file://`` URLs or local paths.
        dir: destination folder (created if needed). Remote files are saved as ``dir/<name>``.
        unzip: unpack ``.zip``/``.tar``/``.tar.gz``/``.tgz`` (and ``.tar.bz2``/``.tar.xz``) archives into ``dir``.
        delete: remove a downloaded archive after unpacking it (local source archives are never deleted).
        threads: number of parallel fetches.
        retries: attempts per remote URL (client errors such as 404 are not retried).
        timeout: socket timeout in seconds.

    Returns:
        For each input, the archive or file it produced: the downloaded file, a local file copied into ``dir``,
        or (for a local archive that was unpacked in place) the source path itself.

    Raises:
        DownloadError: naming the URL, when fetching or unpacking fails. An already-complete remote file in
        ``dir`` is reused rather than downloaded again.
    """
    dest = Path(dir)
    dest.mkdir(parents=True, exist_ok=True)
    items = [urls] if isinstance(urls, (str, Path)) else list(urls)
    job = partial(_fetch_one, dir=dest, unzip=unzip, delete=delete, retries=retries, timeout=timeout)
    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
            return list(pool.map(job, items))
    return [job(u) for u in items]


# --------------------------------------------------------------------------------------------------
# VisDrone2019-DET -> YOLO
# --------------------------------------------------------------------------------------------------
VISDRONE_NAMES = (
    "pedestrian",
    "people",
    "bicycle",
    "car",
    "van",
    "truck",
    "tricycle",
    "awning-tricycle",
    "bus",
    "motor",
)
_VISDRONE_SKIP = {0: "ignored region", 11: "others"}


class VisDroneBox(NamedTuple):
    """One parsed annotation row: top-left corner and size in pixels, and the VisDrone category."""

    x: float
    y: float
    w: float
    h: float
    category: int


def parse_visdrone_row(line: str) -> VisDroneBox:
    """Parse ``x,y,w,h,score,category,truncation,occlusion``; raise ValueError saying what is wrong.

    Trailing commas and surrounding spaces are tolerated; at least the first six fields must be present.
    """
    fields = [f.strip() for f in line.strip().split(",")]
    while fields and fields[-1] == "":
        fields.pop()
    if not 6 <= len(fields) <= 8:
        raise ValueError(f"expected 8 comma-separated values, found {len(fields)}")
    try:
        x, y, w, h = (float(v) for v in fields[:4])
        category = int(fields[5])
    except ValueError:
        raise ValueError("non-numeric box or category") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError("non-finite box value")
    if w < 0 or h < 0:
        raise ValueError(f"negative box size {w:g}x{h:g}")
    if not 0 <= category <= 11:
        raise ValueError(f"unknown category {category} (VisDrone uses 0-11)")
    return VisDroneBox(x, y, w, h, category)


def visdrone_box_to_yolo(box: VisDroneBox, width: int, height: int) -> str | None:
    """YOLO label line for a box of classes 1-10 clipped to the image, or None if it has no area left."""
    x1, y1 = max(box.x, 0.0), max(box.y, 0.0)
    x2, y2 = min(box.x + box.w, float(width)), min(box.y + box.h, float(height))
    if x2 <= x1 or y2 <= y1:
        return None
    xc, yc = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    bw, bh = (x2 - x1) / width, (y2 - y1) / height
    return f"{box.category - 1} {xc:.6f} {yc:.6f} {bw:.6f} {bh:.6f}"


def _find_image(images: Path, stem: str) -> Path | None:
    """The image named ``stem`` in ``images`` (any common suffix), or None."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images / f"{stem}{suffix}", images / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image read from its header."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _convert_visdrone_file(ann: Path, width: int, height: int, stats: Counter) -> list[str]:
    """YOLO label lines for one annotation file; malformed rows are logged (file:line) and skipped."""
    out = []
    text = ann.read_text(encoding="utf-8-sig", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            box = parse_visdrone_row(line)
        except ValueError as e:
            LOGGER.warning(f"{ann}:{lineno}: malformed VisDrone row {line.strip()!r} skipped: {e}")
            stats["malformed"] += 1
            continue
        if box.category in _VISDRONE_SKIP:
            stats[f"skipped_{_VISDRONE_SKIP[box.category].replace(' ', '_')}"] += 1
            continue
        label = visdrone_box_to_yolo(box, width, height)
        if label is None:
            stats["dropped_empty"] += 1
            continue
        out.append(label)
    stats["boxes"] += len(out)
    return out


def visdrone2yolo(dir: str | Path) -> dict[str, int]:
    """Convert one VisDrone2019-DET split folder (``images/`` + ``annotations/``) to YOLO ``labels/``.

    Categories 1-10 become classes 0-9; category 0 (ignored regions) and 11 (others) are skipped. Boxes are
    clipped to the image (its size is read from ``images/``); boxes left without area are dropped. Malformed
    rows are reported as warnings naming file and line, and skipped. Annotation files whose image is missing
    or unreadable are reported and skipped.

    Returns:
        Counts: ``files`` written, ``boxes`` written, ``malformed``, ``dropped_empty``, ``skipped_ignored_region``,
        ``skipped_others``, ``missing_images``.
    """
    root = Path(dir)
    ann_dir, img_dir, lbl_dir = root / "annotations", root / "images", root / "labels"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"VisDrone annotations folder not found: {ann_dir}")
    lbl_dir.mkdir(parents=True, exist_ok=True)
    stats: Counter = Counter()
    for ann in sorted(ann_dir.glob("*.txt")):
        image = _find_image(img_dir, ann.stem)
        if image is None:
            LOGGER.warning(f"{ann}: no image '{ann.stem}.*' in {img_dir}; annotation file skipped")
            stats["missing_images"] += 1
            continue
        try:
            width, height = _image_size(image)
        except Exception as e:
            LOGGER.warning(f"{ann}: cannot read image size of {image} ({e}); annotation file skipped")
            stats["missing_images"] += 1
            continue
        lines = _convert_visdrone_file(ann, width, height, stats)
        _atomic_write_text(lbl_dir / ann.name, "".join(f"{s}\n" for s in lines))
        stats["files"] += 1
    LOGGER.info(f"VisDrone {root.name}: {dict(stats)}")
    return dict(stats)


# --------------------------------------------------------------------------------------------------
# Synthetic "shapes" dataset
# --------------------------------------------------------------------------------------------------
SHAPES_NAMES = ("circle", "rectangle", "triangle", "star")
SHAPES_SPLITS = ("train", "val")
_SHAPES_VERSION = 1  # bump when the rendering changes, so existing datasets are regenerated
_MANIFEST = "shapes.json"


class ShapesSample(NamedTuple):
    """One rendered image (BGR uint8), its YOLO labels ``(n, 5)`` = cls, xc, yc, w, h (normalised) and,
    per object, the boolean mask of the pixels its shape covers (before later objects were drawn on top)."""

    image: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of ``split``: independent of how many images are made."""
    return np.random.default_rng([seed, SHAPES_SPLITS.index(split), index])


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Textured float32 background: a smooth random colour field, a random grating and a few clutter lines."""
    g = int(rng.integers(2, 7))
    field = cv2.resize(rng.uniform(20, 235, (g, g, 3)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    grey = field.mean(2, keepdims=True)
    field = grey + rng.uniform(0.2, 0.9) * (field - grey)  # tone the colours down by a random amount
    theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4), rng.uniform(0, 2 * np.pi)
    coords = np.arange(s, dtype=np.float32)
    wave = np.sin(freq * (coords[None, :] * np.cos(theta) + coords[:, None] * np.sin(theta)) + phase)
    img = field + rng.uniform(0, 25) * wave[..., None]
    for _ in range(int(rng.integers(0, 4))):  # unlabelled clutter: thin random lines
        p1, p2 = rng.integers(0, s, 2), rng.integers(0, s, 2)
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.line(img, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), colour, int(rng.integers(1, 3)))
    return img


def _shape_geometry(rng: np.random.Generator, cls: int, size: float) -> np.ndarray:
    """Integer polygon vertices (k, 2) of a shape of class ``cls`` around the origin; circles give (1, 2)=radius."""
    if cls == 0:  # circle: encoded as a single row (radius, radius)
        r = max(int(round(size / 2)), 3)
        return np.array([[r, r]], dtype=np.int32)
    if cls == 1:  # axis-aligned rectangle of random aspect
        w, h = size, size * rng.uniform(0.35, 1.0)
        if rng.random() < 0.5:
            w, h = h, w
        hw, hh = max(int(round(w / 2)), 2), max(int(round(h / 2)), 2)
        return np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]], dtype=np.int32)
    start = rng.uniform(0, 2 * np.pi)
    if cls == 2:  # triangle: jittered equilateral
        angles = start + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
        radii = np.full(3, size / 2)
    else:  # five-pointed star
        angles = start + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, size / 2, size / 2 * rng.uniform(0.4, 0.55))
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    return np.round(pts).astype(np.int32)


def _extent(cls: int, geom: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel-edge box (x1, y1, x2, y2) of a shape placed at the origin."""
    if cls == 0:
        r = int(geom[0, 0])
        return -r, -r, r + 1, r + 1
    (x1, y1), (x2, y2) = geom.min(0), geom.max(0)
    return int(x1), int(y1), int(x2) + 1, int(y2) + 1


def _draw(canvas: np.ndarray, cls: int, geom: np.ndarray, offset: tuple[int, int], colour) -> None:
    """Fill a shape on ``canvas`` (aliased drawing, so the covered pixels match the box exactly)."""
    ox, oy = offset
    if cls == 0:
        cv2.circle(canvas, (ox, oy), int(geom[0, 0]), colour, -1, cv2.LINE_8)
    else:
        cv2.fillPoly(canvas, [geom + np.array([ox, oy], dtype=np.int32)], colour, cv2.LINE_8)


def _overlap_ok(box: np.ndarray, placed: list[np.ndarray], limit: float = 0.4) -> bool:
    """True if ``box`` covers less than ``limit`` of every placed box and vice versa (partial overlap only)."""
    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if inter >= limit * smaller:
                return False
    return True


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[float, float, float]:
    """A random colour clearly different from the mean ``background`` colour."""
    mean = background.reshape(-1, 3).mean(0)
    colour = rng.uniform(0, 255, 3)
    for _ in range(8):
        if np.abs(colour - mean).sum() >= 150:
            break
        colour = rng.uniform(0, 255, 3)
    else:
        colour = np.where(mean > 127, 20.0, 235.0) + rng.uniform(-15, 15, 3)
    return tuple(float(c) for c in colour)


def render_shapes_image(rng: np.random.Generator, imgsz: int = 256, max_objects: int = 6) -> ShapesSample:
    """Render one synthetic image with 1..``max_objects`` shapes of random class, size, colour and position.

    Sizes are log-uniform between 10 px and 40% of the image, so small objects are common; objects may overlap
    partly (never more than 40% of the smaller box). Everything is derived from ``rng``.
    """
    s = imgsz
    img = _background(rng, s)
    n = int(rng.integers(1, max_objects + 1))
    boxes, classes, masks = [], [], []
    for _ in range(n):
        for _attempt in range(25):
            cls = int(rng.integers(len(SHAPES_NAMES)))
            size = float(np.exp(rng.uniform(np.log(10), np.log(0.4 * s))))
            geom = _shape_geometry(rng, cls, size)
            ex1, ey1, ex2, ey2 = _extent(cls, geom)
            ox, oy = int(rng.integers(-ex1, s - ex2 + 1)), int(rng.integers(-ey1, s - ey2 + 1))
            box = np.array([ex1 + ox, ey1 + oy, ex2 + ox, ey2 + oy])
            if _overlap_ok(box, boxes):
                break
        else:
            continue  # no room for another object
        colour = _contrasting_colour(rng, img[box[1] : box[3], box[0] : box[2]])
        _draw(img, cls, geom, (ox, oy), colour)
        mask = np.zeros((s, s), np.uint8)
        _draw(mask, cls, geom, (ox, oy), 1)
        boxes.append(box)
        classes.append(cls)
        masks.append(mask.astype(bool))
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 0.9))
    grain = rng.normal(0.0, rng.uniform(1, 6), (s // 2, s // 2, 3)).astype(np.float32)  # blotchy, compresses well
    img = img + cv2.resize(grain, (s, s), interpolation=cv2.INTER_LINEAR)
    img = img + rng.normal(0.0, rng.uniform(0.5, 3), img.shape).astype(np.float32)  # fine sensor-like noise
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    xywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1) / s
    labels = np.concatenate([np.array(classes, dtype=np.float64).reshape(-1, 1), xywh], 1)
    return ShapesSample(image, labels, np.array(masks, dtype=bool).reshape(-1, s, s))


def format_yolo_labels(labels: np.ndarray) -> str:
    """YOLO label file text for ``(n, 5)`` rows ``cls xc yc w h``."""
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)


def _shapes_spec(n_train: int, n_val: int, imgsz: int, seed: int) -> dict:
    """The parameters a generated shapes dataset is identified by (stored in its manifest)."""
    return {
        "version": _SHAPES_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "imgsz": imgsz,
        "seed": seed,
        "names": list(SHAPES_NAMES),
    }


def _shapes_files(root: Path, spec: dict) -> list[Path]:
    """Every image and label file a complete dataset with ``spec`` has."""
    files = []
    for split in SHAPES_SPLITS:
        for i in range(spec[f"n_{split}"]):
            files += [root / "images" / split / f"{i:06d}.png", root / "labels" / split / f"{i:06d}.txt"]
    return files


def shapes_dataset_complete(
    root: str | Path, n_train: int = 400, n_val: int = 100, imgsz: int = 256, seed: int = 0
) -> bool:
    """True if ``root`` holds a finished shapes dataset made with exactly these parameters."""
    root = Path(root)
    spec = _shapes_spec(n_train, n_val, imgsz, seed)
    try:
        manifest = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest == spec and all(f.is_file() for f in _shapes_files(root, spec))


def make_shapes_dataset(
    root: str | Path, n_train: int = 400, n_val: int = 100, imgsz: int = 256, seed: int = 0
) -> Path:
    """Write the synthetic shapes detection dataset to ``root`` (nothing to do if it is already complete).

    Layout: ``images/{train,val}/NNNNNN.png`` and ``labels/{train,val}/NNNNNN.txt`` (YOLO format, classes
    ``SHAPES_NAMES``) plus a ``shapes.json`` manifest. Image ``i`` of a split depends only on ``(seed, split, i)``.
    PNG output makes the files bit-identical across runs (for a given OpenCV build).

    The dataset is built in a sibling ``<root>.partial`` folder and renamed into place when finished, so an
    interrupted run never leaves a half-made dataset behind. An existing ``root`` made with other parameters
    is replaced; a non-empty ``root`` without the manifest is left alone (error), to never delete user data.
    """
    root = Path(root)
    if shapes_dataset_complete(root, n_train, n_val, imgsz, seed):
        LOGGER.info(f"Shapes dataset found complete at {root}")
        return root
    if root.exists() and not (root / _MANIFEST).is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not a shapes dataset; remove it or choose another path")
    spec = _shapes_spec(n_train, n_val, imgsz, seed)
    t0 = time.time()
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    for split in SHAPES_SPLITS:
        (work / "images" / split).mkdir(parents=True)
        (work / "labels" / split).mkdir(parents=True)
        for i in range(spec[f"n_{split}"]):
            sample = render_shapes_image(sample_rng(seed, split, i), imgsz)
            ok, png = cv2.imencode(".png", sample.image)
            if not ok:
                raise RuntimeError(f"PNG encoding failed for {split} image {i}")
            (work / "images" / split / f"{i:06d}.png").write_bytes(png.tobytes())
            (work / "labels" / split / f"{i:06d}.txt").write_text(format_yolo_labels(sample.labels), encoding="utf-8")
    (work / _MANIFEST).write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    if root.exists():
        shutil.rmtree(root)
    os.replace(work, root)
    dt = time.time() - t0
    LOGGER.info(f"Shapes dataset: {n_train} train + {n_val} val images ({imgsz}px) written to {root} in {dt:.1f}s")
    return root


# --------------------------------------------------------------------------------------------------
# Preparers: the dataset steps a data YAML may name (download: {prepare: <name>, <option>: <value>...})
# --------------------------------------------------------------------------------------------------
ASSETS_URL = "https://github.com/ultralytics/assets/releases/download/v0.0.0"
COCO_LABELS_URL = f"{ASSETS_URL}/coco2017labels.zip"  # YOLO labels, image lists, instances_val2017.json in 'coco/'
COCO_IMAGES_URL = "http://images.cocodataset.org/zips"
COCO_IMAGE_ZIPS = ("train2017.zip", "val2017.zip", "test2017.zip")  # 19 GB, 1 GB, 7 GB
VISDRONE_SPLITS = ("VisDrone2019-DET-train", "VisDrone2019-DET-val", "VisDrone2019-DET-test-dev")


def prepare_coco(root: Path) -> None:
    """COCO 2017 into ``root`` (``.../datasets/coco``): the YOLO labels zip (a top-level ``coco/`` folder, unpacked into
    ``root``'s parent), then the image zips into ``root/images``; each zip is removed once unpacked."""
    root = Path(root)
    download(COCO_LABELS_URL, dir=root.parent, delete=True)
    download([f"{COCO_IMAGES_URL}/{z}" for z in COCO_IMAGE_ZIPS], dir=root / "images", delete=True, threads=3)


def prepare_visdrone(root: Path) -> None:
    """VisDrone2019-DET into ``root``: one zip per split (each holds a folder of that name), then ``visdrone2yolo`` on
    each split (``annotations/*.txt`` -> ``labels/*.txt``)."""
    root = Path(root)
    download([f"{ASSETS_URL}/{s}.zip" for s in VISDRONE_SPLITS], dir=root, delete=True, threads=3)
    for s in VISDRONE_SPLITS:
        visdrone2yolo(root / s)


def prepare_shapes(root: Path, n_train: int = 400, n_val: int = 100, imgsz: int = 256, seed: int = 0) -> None:
    """The synthetic shapes dataset (``make_shapes_dataset``) generated into ``root``."""
    make_shapes_dataset(root, n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed)


# name -> function(root, **options); ``root`` is the YAML's resolved ``path``. Only these can be named by a YAML.
PREPARERS: dict[str, Callable[..., None]] = {
    "coco": prepare_coco,
    "VisDrone": prepare_visdrone,
    "shapes": prepare_shapes,
}
