"""YOLO label files, checked line by line: a bad line is reported with its file and line number and skipped, and the
good lines of the same file are kept.

``verify_image_label`` takes the place of the engine's function of that name in its detection dataset (installed by
``utils/engine.py``): same arguments, same result tuple, so the engine's label cache keeps its format. Keypoint
(pose) labels still go to the engine's own function.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MAX_LINE_MESSAGES = 5  # per label file; the rest are counted
# Added to the engine's cache hash: a labels.cache written by the engine's own check (which dropped whole images for
# one bad line) is scanned again once. Bump when what this module keeps or drops changes.
CACHE_TAG = "yolov5a-labels-1"


def _number(token: str) -> tuple[float | None, str | None]:
    try:
        v = float(token)
    except ValueError:
        return None, f"{token!r} is not a number"
    if math.isnan(v):
        return None, f"{token!r} is not a number"
    if math.isinf(v):
        return None, f"{token!r} is not a finite number"
    return v, None


def parse_label_line(fields: list[str], num_cls: int, single_cls: bool = False, nkpt: int = 0,
                     ndim: int = 0) -> tuple[list[float] | None, str | None]:
    """``(values, None)`` for a usable line (``cls x y w h``, or a polygon ``cls x1 y1 x2 y2 ...``), or
    ``(None, problem)`` saying what is wrong with it."""
    if nkpt and len(fields) == 5 + nkpt * ndim:  # pose labels for a box task: keep the box
        fields = fields[:5]
    n = len(fields)
    if n != 5 and (n < 7 or n % 2 == 0):
        return None, (f"{n} values; a label line is 'class x_center y_center width height' (5 values) or a polygon "
                      f"'class x1 y1 x2 y2 ...' (an odd number, at least 7)")
    values = []
    for token in fields:
        v, problem = _number(token)
        if problem:
            return None, problem
        values.append(v)
    cls, coords = values[0], values[1:]
    if cls != int(cls) or cls < 0:
        return None, f"class {fields[0]} is not a class index (0, 1, 2...)"
    if not single_cls and cls >= num_cls:
        return None, f"class {int(cls)} but the data YAML has {num_cls} classes (0-{num_cls - 1})"
    high = [v for v in coords if v > 1.01]
    if high:
        return None, f"coordinate {high[0]:g} is not normalised (0-1, relative to the image size)"
    corners = coords[:2] if n == 5 else coords
    if min(corners) < -0.01:
        return None, f"negative coordinate {min(corners):g}"
    if n == 5 and min(coords[2:]) < 0:
        return None, f"negative width or height {min(coords[2:]):g}"
    return values, None


def read_label_file(lb_file: str, num_cls: int, single_cls: bool = False, nkpt: int = 0,
                    ndim: int = 0) -> tuple[list[list[float]], list[str], int]:
    """The usable lines of a label file, a message per bad line (``file:line: problem``) and the number of
    non-blank lines."""
    with open(lb_file, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    rows, messages, bad, total = [], [], 0, 0
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        total += 1
        values, problem = parse_label_line(fields, num_cls, single_cls, nkpt, ndim)
        if problem:
            bad += 1
            if bad <= MAX_LINE_MESSAGES:
                messages.append(f"{lb_file}:{lineno}: {problem}; line ignored")
            continue
        rows.append(values)
    if bad > MAX_LINE_MESSAGES:
        messages.append(f"{lb_file}: {bad - MAX_LINE_MESSAGES} more bad lines ignored")
    return rows, messages, total


def _boxes(rows: list[list[float]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(n, 5) ``cls xywh`` array and, when every row is a polygon, the polygons (engine: segments)."""
    from ultralytics.utils.ops import segments2boxes

    if not rows:
        return np.zeros((0, 5), dtype=np.float32), []
    polygons = [np.array(r[1:], dtype=np.float32).reshape(-1, 2) for r in rows if len(r) > 5]
    if not polygons:
        return np.array(rows, dtype=np.float32), []
    cls = np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 1)
    boxes = [np.array(r[1:], dtype=np.float32) if len(r) == 5 else None for r in rows]
    if len(polygons) == len(rows):
        return np.concatenate((cls, segments2boxes(polygons)), 1), polygons
    it = iter(segments2boxes(polygons))
    xywh = np.stack([b if b is not None else next(it) for b in boxes])
    return np.concatenate((cls, xywh), 1).astype(np.float32), []  # boxes and polygons mixed: boxes only


def verify_image_label(args: tuple) -> tuple | list:
    """The engine's per-image check (``ultralytics.data.utils.verify_image_label``'s arguments and result) with
    label problems reported by label file and line; see the module docstring."""
    import ultralytics.data.utils as data_utils

    im_file, lb_file, prefix, keypoint, num_cls, nkpt, ndim, single_cls = args
    if keypoint:
        return _ENGINE_VERIFY[0](args)
    nm = nf = ne = 0
    try:
        msg, shape = data_utils.check_image(im_file)  # ours through utils/engine.py: names what is wrong
    except Exception as e:
        return [None, None, None, None, None, 0, 0, 0, 1, f"{prefix}{im_file}: ignoring corrupt image: {e}"]
    messages = [f"{prefix}{msg}"] if msg else []
    segments: list[np.ndarray] = []
    if Path(lb_file).is_file():
        nf = 1
        try:
            rows, bad, total = read_label_file(lb_file, num_cls, single_cls, nkpt, ndim)
        except (OSError, UnicodeDecodeError) as e:
            return [None, None, None, None, None, 0, 1, 0, 1,
                    f"{prefix}{lb_file}: cannot be read as a text label file ({e}); image {im_file} ignored"]
        messages += [f"{prefix}{m}" for m in bad]
        if total and not rows:
            messages.append(f"{prefix}{lb_file}: no usable label line; image {im_file} ignored")
            return [None, None, None, None, None, 0, 1, 0, 1, "\n".join(messages)]
        lb, segments = _boxes(rows)
        if len(lb):
            _, keep = np.unique(lb, axis=0, return_index=True)
            if len(keep) < len(lb) and segments:  # distinct polygons may share a class and box
                keys = np.array([c.tobytes() + s.tobytes() for c, s in zip(lb[:, 0], segments)], dtype=object)
                _, keep = np.unique(keys, return_index=True)
            if len(keep) < len(lb):
                messages.append(f"{prefix}{lb_file}: {len(lb) - len(keep)} duplicate labels removed")
                keep = np.sort(keep)
                lb = lb[keep]
                segments = [segments[i] for i in keep] if segments else segments
        else:
            ne = 1
    else:
        nm = 1
        lb = np.zeros((0, 5), dtype=np.float32)
    return im_file, lb, shape, segments, None, nm, nf, ne, 0, "\n".join(messages)


_ENGINE_VERIFY: list = []  # the engine's own function, for keypoint labels (set when installed)


def install() -> None:
    """Make the engine's detection dataset verify labels with ``verify_image_label`` (idempotent)."""
    import ultralytics.data.dataset as dataset
    import ultralytics.data.utils as data_utils

    if _ENGINE_VERIFY:
        return
    _ENGINE_VERIFY.append(data_utils.verify_image_label)
    dataset.verify_image_label = verify_image_label
    engine_hash = dataset.YOLODataset.get_cache_hash

    def get_cache_hash(self) -> str:
        return f"{engine_hash(self)}:{CACHE_TAG}"

    dataset.YOLODataset.get_cache_hash = get_cache_hash
